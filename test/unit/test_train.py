"""Training on the simulated SO100 task: codebook, scripted expert, one BC step, model dir, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("vla_runtime.sim.world", reason="needs mujoco")
torch = pytest.importorskip("torch")

from vla_runtime.cli.main import main  # noqa: E402
from vla_runtime.policy.interface import Observation  # noqa: E402
from vla_runtime.policy.model.config import preset  # noqa: E402
from vla_runtime.policy.model.weights import init_model  # noqa: E402
from vla_runtime.policy.registry import PolicySpec, create_policy  # noqa: E402
from vla_runtime.policy.transforms import (  # noqa: E402
    EmbodimentTransform,
    load_transform_config,
)
from vla_runtime.train.codebook import (  # noqa: E402
    decode,
    fit_codebook,
    load_codebook,
    quantize,
)
from vla_runtime.train.dagger import DaggerConfig, record_on_policy  # noqa: E402
from vla_runtime.train.demos import DemoConfig, DemoData, record  # noqa: E402
from vla_runtime.train.evaluate import (  # noqa: E402
    DepthCache,
    EpisodeOutcome,
    EvalConfig,
    Variant,
    VariantResult,
    results_table,
    run_episode,
)
from vla_runtime.train.trainer import (  # noqa: E402
    BatchBuilder,
    TrainConfig,
    Trainer,
    TrainingReport,
    compute_losses,
    sample_iterations,
)


@pytest.fixture(scope="module")
def demos() -> DemoData:
    # Small renders keep this quick; the expert does not look at the images.
    data, results = record(DemoConfig(episodes=2, seed=7, width=160, height=120))
    assert [r.success for r in results] == [True, True]
    return data


def test_codebook_round_trip_recovers_well_separated_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = rng.uniform(0.0, 3.0, (16, 64)).astype(np.float32)
    labels = rng.integers(0, 16, 2000)
    cells = centres[labels] + rng.normal(0.0, 0.01, (2000, 64)).astype(np.float32)
    codebook = fit_codebook(cells, 16, seed=1)
    codes = quantize(cells, codebook)
    assert codes.dtype == np.uint8 and codes.shape == (2000,)
    np.testing.assert_allclose(decode(codes, codebook), cells, atol=0.05)
    # the codebook's own entries quantise to themselves
    np.testing.assert_array_equal(quantize(codebook, codebook), np.arange(16))


def test_scripted_expert_records_consistent_samples(demos: DemoData) -> None:
    n = len(demos)
    assert n >= 6
    assert demos.images.shape == (n, 2, 378, 378, 3)
    assert demos.actions.shape == (n, 30, 6) and demos.joint_positions.shape == (n, 6)
    assert demos.depth_cells.shape == (n, 100, 64)
    assert np.all(np.isfinite(demos.actions))
    # a chunk starts at the measured arm joints
    np.testing.assert_allclose(demos.actions[:, 0, :4], demos.joint_positions[:, :4], atol=0.05)


def test_concatenated_demos_keep_episodes_apart(demos: DemoData) -> None:
    both = DemoData.concatenate([demos, demos])
    assert len(both) == 2 * len(demos)
    first, second = both.episode[: len(demos)], both.episode[len(demos) :]
    np.testing.assert_array_equal(first, demos.episode)
    assert set(first.tolist()).isdisjoint(second.tolist())
    assert len(np.unique(both.episode)) == 2 * len(np.unique(demos.episode))
    np.testing.assert_array_equal(both.actions[len(demos) :], demos.actions)


def test_saved_demos_load_memory_mapped_and_concatenate_without_copying(
    demos: DemoData, tmp_path: Path
) -> None:
    demos.save(tmp_path / "a")
    loaded = DemoData.load(tmp_path / "a")
    assert isinstance(loaded.images, np.memmap)
    np.testing.assert_array_equal(loaded.images, demos.images)
    np.testing.assert_array_equal(loaded.actions, demos.actions)
    both = DemoData.concatenate([loaded, DemoData.load(tmp_path / "a")])
    n = len(demos)
    rows = np.array([0, n - 1, n, 2 * n - 1])
    np.testing.assert_array_equal(both.images[rows], demos.images[[0, n - 1, 0, n - 1]])
    assert both.images.shape == (2 * n, *demos.images.shape[1:])
    with pytest.raises(FileNotFoundError, match="record demonstrations first"):
        DemoData.load(tmp_path / "missing")


def test_on_policy_rollout_labels_every_visited_state_with_the_expert() -> None:
    # The shipped policy drives; every 5 rows the state it reached is recorded with the
    # expert's chunk from there (starting at the measured arm joints).
    config = DaggerConfig(
        model="models/tiny_so100", episodes=1, time_limit_s=0.7, width=160, height=120
    )
    data, results = record_on_policy(config)
    assert len(results) == 1 and results[0].expert_queries == 0
    n = len(data)
    assert n == results[0].samples and n >= 4  # 0.7 s at one sample per 1/6 s
    assert data.images.shape == (n, 2, 378, 378, 3)
    assert data.depth_cells.shape == (n, 100, 64)
    np.testing.assert_array_equal(data.episode, 0)
    np.testing.assert_allclose(data.actions[:, 0, :4], data.joint_positions[:, :4], atol=0.05)
    # the policy moved the arm: the recorded states are not all the start pose
    assert np.ptp(data.joint_positions[:, :4], axis=0).max() > 0.01


def test_on_policy_rollout_with_beta_one_is_the_expert_and_touches() -> None:
    config = DaggerConfig(
        model="models/tiny_so100", episodes=1, beta=1.0, time_limit_s=4.0, width=160, height=120
    )
    _, results = record_on_policy(config)
    assert results[0].success
    assert results[0].expert_queries >= 1


def test_dagger_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="beta"):
        DaggerConfig(model="models/tiny_so100", beta=1.5)
    with pytest.raises(ValueError, match="multiple"):
        DaggerConfig(model="models/tiny_so100", replan_rows=10, record_rows=3)


def test_iteration_sampler_stays_in_range_around_its_mean() -> None:
    rng = np.random.default_rng(0)
    draws = [sample_iterations(rng, 8.0, 32) for _ in range(2000)]
    assert min(draws) >= 1 and max(draws) <= 32
    assert 7.0 < float(np.mean(draws)) < 11.0
    floored = [sample_iterations(rng, 8.0, 32, minimum=4) for _ in range(500)]
    assert min(floored) == 4 and max(floored) <= 32
    with pytest.raises(ValueError, match="min_recurrence"):
        TrainConfig(min_recurrence=40, max_recurrence=32)


def test_one_training_step_lowers_the_loss(demos: DemoData) -> None:
    torch.manual_seed(0)
    model = init_model(preset("tiny"), seed=0).train()
    transform = EmbodimentTransform(load_transform_config("so100"))
    codes = np.random.default_rng(0).integers(0, 128, (len(demos), 100)).astype(np.uint8)
    batch = BatchBuilder(model.config, transform).build(
        demos.images[:2], demos.joint_positions[:2], demos.actions[:2], codes[:2]
    )
    mask = torch.from_numpy(transform.action_mask())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def loss() -> torch.Tensor:
        losses = compute_losses(
            model,
            batch,
            mask,
            iterations=3,
            backprop_depth=2,
            generator=torch.Generator().manual_seed(0),
        )
        assert set(losses) == {"depth", "flow", "recurrent"}
        return sum(losses.values())  # type: ignore[return-value]

    before = loss()
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = loss()
    assert float(after) < float(before.detach())


def test_saved_model_dir_loads_through_create_policy(demos: DemoData, tmp_path: Path) -> None:
    model = init_model(preset("tiny"), seed=0)
    transform = EmbodimentTransform(load_transform_config("so100"))
    codebook = fit_codebook(demos.depth_cells, 128, iterations=2)
    codes = quantize(demos.depth_cells, codebook)
    trainer = Trainer(model, transform, demos, codes, codebook, TrainConfig(steps=1, batch_size=2))
    trainer.save(tmp_path, TrainingReport("tiny", len(demos), 2, 0, 0, 0.0, {}))
    assert {p.name for p in tmp_path.iterdir()} >= {
        "config.json", "model.safetensors", "depth_codebook.npy", "training_report.json"
    }  # fmt: skip
    np.testing.assert_array_equal(load_codebook(tmp_path), codebook)
    observation = Observation(
        {name: np.full((120, 160, 3), 90, np.uint8) for name in transform.config.cameras},
        demos.joint_positions[0].astype(np.float64),
        transform.config.joint_names,
    )
    for head in ("flow", "recurrent"):
        policy = create_policy(PolicySpec(model=str(tmp_path), head=head, depth=True))
        output = policy.infer(observation)
        assert output.actions.shape == (30, 6) and np.all(np.isfinite(output.actions))
        assert output.depth_codes is not None and output.depth_codes.shape == (10, 10)


def test_closed_loop_episode_runs_with_the_depth_cache() -> None:
    from vla_runtime.sim.world import WorldConfig, build_world

    world = build_world(WorldConfig("so100", width=160, height=120))
    try:
        policy = create_policy(PolicySpec(model="tiny", head="recurrent", depth=True))
        cache = DepthCache()
        config = EvalConfig(episodes=1, time_limit_s=0.5)
        outcome = run_episode(world, policy, 100_000, config, cache)
    finally:
        world.close()
    assert outcome.queries >= 2
    assert cache.valid.all()  # the first query decoded every cell
    assert outcome.changed_cells < 100  # later ones only the changed cells


def test_variant_summary_counts_success_by_time_and_tabulates_it() -> None:
    def outcome(success: bool, time_s: float) -> EpisodeOutcome:
        return EpisodeOutcome(0, success, time_s, 4, 2.0, 100.0, 50.0, 0.0 if success else 0.05)

    result = VariantResult(
        Variant.fixed(1, False),
        [outcome(True, 1.2), outcome(True, 1.8), outcome(True, 3.0), outcome(False, 6.0)],
    )
    summary = result.summary()
    assert summary["success_rate"] == 0.75
    assert summary["success_by_1.5s"] == 0.25 and summary["success_by_2s"] == 0.5
    assert summary["failed_median_distance_m"] == 0.05
    table = results_table([result]).splitlines()
    assert "by 1.5 s" in table[0] and table[2].startswith(
        "| recurrent fixed 1 | no | 75 % (4) | 25 % | 50 % |"
    )
    assert len({line.count("|") for line in table}) == 1  # header, rule and rows line up


def test_train_cli_help_lists_the_verbs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for verb in ("demos", "fit", "dagger", "eval"):
        assert verb in text
