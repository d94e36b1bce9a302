"""The reference model and the shared inference engine (tiny config, torch, CPU)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vla_runtime.policy.backends.torch_backend import PerIterationContextRunner, TorchRunner
from vla_runtime.policy.engine import ModelPolicy, PolicyOptions, depth_schedule, truncated_normal
from vla_runtime.policy.interface import DepthScene, Observation, PolicyError
from vla_runtime.policy.model.config import ModelConfig, ModelConfigError, preset
from vla_runtime.policy.model.model import ReferenceModel, parameter_counts
from vla_runtime.policy.model.weights import WeightsError, init_model, load_model, save_model
from vla_runtime.policy.stopping import StopRule
from vla_runtime.policy.transforms import EmbodimentTransform, load_transform_config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model() -> ReferenceModel:
    return init_model(preset("tiny"), seed=0)


@pytest.fixture(scope="module")
def transform() -> EmbodimentTransform:
    return EmbodimentTransform(load_transform_config("so100"))


def observation(transform: EmbodimentTransform, seed: int = 0, **kwargs: object) -> Observation:
    rng = np.random.default_rng(seed)
    images = {
        name: rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        for name in transform.config.cameras
    }
    return Observation(
        images=images,
        joint_positions=np.zeros(len(transform.config.joint_names)),
        joint_names=transform.config.joint_names,
        prompt="pick up the cube",
        stamp_ns=123,
        **kwargs,  # type: ignore[arg-type]
    )


def policy(
    model: ReferenceModel,
    transform: EmbodimentTransform,
    runner: type[TorchRunner] = TorchRunner,
    **options: object,
) -> ModelPolicy:
    head = model.recurrent_head
    std = head.initial_state_std() if head is not None else 0.0
    return ModelPolicy(runner(model), transform, PolicyOptions(**options), initial_state_std=std)  # type: ignore[arg-type]


# --- shapes ---------------------------------------------------------------------------------


def test_vision_gives_196_tokens_per_378_image(model: ReferenceModel) -> None:
    cfg = model.config
    assert cfg.vision.image_size == 378 and cfg.vision.grid == 27
    assert cfg.vision.tokens_per_image == 196
    with torch.inference_mode():
        visual = model.encode_images(torch.zeros(2, 3, 378, 378))
    assert visual.shape == (2, 196, cfg.vlm.width)


def test_prefill_cache_shapes(model: ReferenceModel) -> None:
    cfg = model.config
    tokens = torch.arange(40)[None] % 200
    with torch.inference_mode():
        logits, kv, hidden = model.prefill(tokens, torch.zeros(1, 196, cfg.vlm.width))
    assert logits.shape == (1, cfg.vlm.vocab_size)
    assert kv.shape == (cfg.vlm.layers, 2, 1, cfg.vlm.kv_heads, 40, cfg.vlm.head_dim)
    assert hidden.shape == (cfg.vlm.layers, 1, 40, cfg.vlm.width)


def test_extend_over_the_cache_equals_one_prefill(model: ReferenceModel) -> None:
    """KV cache + masks: prefill 30 tokens then extend by 10 (oversized buffer) = prefill 40."""
    cfg = model.config
    tokens = (torch.arange(40)[None] * 7) % 250
    visual = torch.zeros(1, 196, cfg.vlm.width)
    with torch.inference_mode():
        full_logits, full_kv, _ = model.prefill(tokens, visual)
        _, kv, _ = model.prefill(tokens[:, :30], visual)
        buffer = torch.zeros(*kv.shape[:4], 64, kv.shape[5])
        buffer[..., :30, :] = kv
        buffer[..., 30:, :] = 1e3  # garbage beyond past_len must be masked out
        logits, new_kv, _ = model.extend(tokens[:, 30:], buffer, torch.tensor(30))
    torch.testing.assert_close(logits, full_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(new_kv, full_kv[..., 30:, :], atol=1e-4, rtol=1e-4)


def test_image_patches_are_replaced_by_visual_tokens(model: ReferenceModel) -> None:
    patch = model.tokenizer.patch_id
    tokens = torch.tensor([[1, 2] + [patch] * 196 + [3]])
    with torch.inference_mode():
        a = model.prefill(tokens, torch.zeros(1, 196, model.config.vlm.width))[0]
        b = model.prefill(tokens, torch.ones(1, 196, model.config.vlm.width))[0]
    assert not torch.allclose(a, b)


# --- parameter counts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "part", "paper"),
    [
        ("molmoact2", "vlm", 4.0e9),
        ("molmoact2", "vision", 0.38e9),
        ("molmoact2", "connector", 57e6),
        ("molmoact2", "flow_head", 0.621e9),
        ("rdvla", "recurrent_head", 72e6),
    ],
)
def test_full_size_parameter_counts_match_the_papers(name: str, part: str, paper: float) -> None:
    with torch.device("meta"):
        counts = parameter_counts(ReferenceModel(preset(name)))
    assert abs(counts[part] - paper) / paper < 0.05, counts


def test_tiny_is_a_few_megabytes(model: ReferenceModel) -> None:
    assert parameter_counts(model)["total"] * 4 < 8e6


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ModelConfigError, match="known"):
        preset("huge")
    with pytest.raises(ModelConfigError, match="unknown model config keys"):
        ModelConfig.from_dict({"bogus": 1})
    with pytest.raises(ModelConfigError, match="at least one action head"):
        ModelConfig(flow_head=None, recurrent_head=None)


# --- weights -------------------------------------------------------------------------------


def test_safetensors_round_trip(model: ReferenceModel, tmp_path: Path) -> None:
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


def test_loading_mismatched_weights_says_what_differs(
    model: ReferenceModel, tmp_path: Path
) -> None:
    save_model(model, tmp_path)
    other = preset("tiny")
    bigger = ModelConfig.from_dict({**other.to_dict(), "action_width": 16})
    bigger.to_json(tmp_path / "config.json")
    with pytest.raises(WeightsError, match=r"wrong shape.*action"):
        load_model(tmp_path)
    with pytest.raises(WeightsError, match=r"not found.*policy init"):
        load_model(tmp_path / "nowhere")


# --- engine: flow head ---------------------------------------------------------------------


def test_flow_chunk_shape_padding_and_seeded_noise(
    model: ReferenceModel, transform: EmbodimentTransform
) -> None:
    flow = policy(model, transform, head="flow", seed=3)
    obs = observation(transform)
    first = flow.infer(obs)
    assert first.actions.shape == (30, 6)
    assert first.joint_names == transform.config.joint_names
    assert first.chunk_rate_hz == 30.0 and first.stamp_ns == 123
    assert first.trace.iterations == 10 and first.depth_codes is None
    assert first.trace.vision_ms > 0 and first.trace.prefill_ms > 0 and first.trace.action_ms > 0
    flow.reset()
    again = flow.infer(obs)
    np.testing.assert_array_equal(first.actions, again.actions)
    different = flow.infer(obs)
    assert not np.array_equal(first.actions, different.actions)


def test_flow_padded_dims_stay_zero(model: ReferenceModel, transform: EmbodimentTransform) -> None:
    runner = TorchRunner(model)
    flow = policy(model, transform, head="flow")
    flow.infer(observation(transform))
    prepared = runner.flow_prepare() if runner.length else None
    assert prepared is None  # a fresh runner has no cache: the policy's runner holds it
    x = flow.runner.to_device(np.ones((1, 30, 32), np.float32))
    out = flow.runner.to_numpy(flow.runner.flow_step(flow.runner.flow_prepare(), x, 0.0, 0.1))
    assert np.all(out[..., 6:] == 0.0) and np.any(out[..., :6] != 0.0)


# --- engine: recurrent head and its stopping rules -----------------------------------------


def test_stop_rule_order() -> None:
    rule = StopRule(threshold=1e-3, min_iterations=2, max_iterations=5)
    assert rule.decide(1, math.nan, 0.0, None, 0.0) is None
    assert rule.decide(1, 1e-9, 0.0, None, 0.0) is None  # below min: keep going
    assert rule.decide(2, 1e-4, 0.0, None, 0.0) == "converged"
    assert rule.decide(3, 1e-2, 0.0, None, 0.0) is None
    assert rule.decide(5, 1e-2, 0.0, None, 0.0) == "max_iterations"
    assert rule.decide(3, 1e-2, 0.009, 0.010, 0.002) == "deadline"
    assert rule.decide(3, 1e-2, 0.007, 0.010, 0.002) is None
    with pytest.raises(ValueError, match="min_iterations"):
        StopRule(min_iterations=0)


def test_recurrent_converges_between_min_and_max(
    model: ReferenceModel, transform: EmbodimentTransform
) -> None:
    head = policy(model, transform, head="recurrent")
    out = head.infer(observation(transform))
    trace = out.trace
    assert out.actions.shape == (30, 6)
    assert trace.stop_reason == "converged"
    assert 2 <= trace.iterations < 32 and trace.residual < 1e-3


@pytest.mark.parametrize("iterations", [1, 4, 9])
def test_recurrent_fixed_iterations(
    model: ReferenceModel, transform: EmbodimentTransform, iterations: int
) -> None:
    rule = StopRule(threshold=0.0, min_iterations=iterations, max_iterations=iterations)
    out = policy(model, transform, head="recurrent", stop=rule).infer(observation(transform))
    assert out.trace.iterations == iterations and out.trace.stop_reason == "max_iterations"


class SteppingClock:
    """Scripted time: every reading is `step_s` later than the one before."""

    def __init__(self, step_s: float) -> None:
        self.now_s = 0.0
        self.step_s = step_s

    def __call__(self) -> float:
        self.now_s += self.step_s
        return self.now_s


def test_recurrent_deadline_stops_before_an_iteration_that_would_not_fit(
    model: ReferenceModel, transform: EmbodimentTransform
) -> None:
    """With scripted time (1 ms per clock reading) the deadline stop is exact."""
    never = StopRule(threshold=0.0, min_iterations=32, max_iterations=32)
    head = model.recurrent_head
    assert head is not None
    clock = SteppingClock(1e-3)
    deadline = ModelPolicy(
        TorchRunner(model), transform, PolicyOptions(head="recurrent", stop=never),
        initial_state_std=head.initial_state_std(), clock=clock,
    )  # fmt: skip
    obs = observation(transform)
    assert deadline.infer(obs).trace.iterations == 32  # no budget: runs to max
    # infer() reads the clock 4 times before the head (start, vision, prefill laps), each
    # iteration twice (1 ms of cost, 2 ms of elapsed time), so after k iterations 3 + 2k ms
    # have passed; the next iteration is estimated at mean + 2 x deviation -> 1 ms (+0.03).
    cut = deadline.infer(obs, time_budget_s=0.030)
    assert cut.trace.stop_reason == "deadline"
    # k = 13: 29 ms + ~1.03 ms would pass 30 ms; k = 12 (27 + 1.05) still fits
    assert cut.trace.iterations == 13
    # the head ended at 29 ms, inside the budget; two more readings close the trace
    assert cut.trace.total_ms == pytest.approx(29.0 + 2.0)
    assert math.isfinite(cut.trace.residual)
    # a budget already spent still yields one iteration's chunk
    late = deadline.infer(obs, time_budget_s=1e-6)
    assert late.trace.iterations == 1 and late.trace.stop_reason == "deadline"
    assert np.all(np.isfinite(late.actions))


def test_recurrent_deadline_on_the_real_clock(
    model: ReferenceModel, transform: EmbodimentTransform
) -> None:
    never = StopRule(threshold=0.0, min_iterations=32, max_iterations=32)
    head = policy(model, transform, head="recurrent", stop=never)
    cut = head.infer(observation(transform), time_budget_s=1e-6)
    assert cut.trace.iterations == 1 and cut.trace.stop_reason == "deadline"


def test_context_projection_once_equals_per_iteration(
    model: ReferenceModel, transform: EmbodimentTransform
) -> None:
    rule = StopRule(threshold=0.0, min_iterations=6, max_iterations=6)
    obs = observation(transform)
    cached = policy(model, transform, head="recurrent", stop=rule, seed=5).infer(obs)
    uncached = policy(
        model, transform, PerIterationContextRunner, head="recurrent", stop=rule, seed=5
    ).infer(obs)
    np.testing.assert_allclose(cached.actions, uncached.actions, atol=1e-5)


def test_iterations_reuse_the_projected_context(
    model: ReferenceModel, transform: EmbodimentTransform
) -> None:
    """The core/coda context projections run once per query, not per iteration."""
    head = model.recurrent_head
    assert head is not None
    calls = {"n": 0}
    layer = head.core[0]
    original = layer.project

    def counting(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        calls["n"] += 1
        return original(*args)

    rule = StopRule(threshold=0.0, min_iterations=10, max_iterations=10)
    layer.project = counting  # type: ignore[method-assign]
    try:
        policy(model, transform, head="recurrent", stop=rule).infer(observation(transform))
        assert calls["n"] == 1
        calls["n"] = 0
        policy(model, transform, PerIterationContextRunner, head="recurrent", stop=rule).infer(
            observation(transform)
        )
        assert calls["n"] == 10
    finally:
        del layer.project


def test_truncated_normal_is_cut_at_three_sigma() -> None:
    values = truncated_normal(np.random.default_rng(0), (200_000,), 0.5)
    assert np.abs(values).max() <= 1.5 + 1e-6
    assert 0.4 < values.std() < 0.5


# --- depth reasoning -----------------------------------------------------------------------


def test_depth_schedule_runs() -> None:
    mask = np.zeros(100, bool)
    mask[[3, 4, 10, 99]] = True
    runs = depth_schedule(mask)
    assert runs == [
        (0, 3, False),
        (3, 5, True),
        (5, 10, False),
        (10, 11, True),
        (11, 99, False),
        (99, 100, True),
    ]
    assert depth_schedule(np.zeros(100, bool)) == [(0, 100, False)]


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 1.0])
def test_depth_decodes_only_changed_cells(
    model: ReferenceModel, transform: EmbodimentTransform, fraction: float
) -> None:
    rng = np.random.default_rng(1)
    changed = np.zeros(100, bool)
    changed[rng.choice(100, int(fraction * 100), replace=False)] = True
    codes = rng.integers(0, 128, 100).astype(np.uint8)
    scene = DepthScene(codes=codes.reshape(10, 10), changed=changed.reshape(10, 10))
    think = policy(model, transform, head="flow", depth=True)
    out = think.infer(observation(transform, scene=scene))
    assert out.depth_codes is not None and out.depth_codes.shape == (10, 10)
    flat = out.depth_codes.reshape(-1)
    np.testing.assert_array_equal(flat[~changed], codes[~changed])
    assert out.trace.changed_cells == changed.sum()
    # one forward per decoded cell that follows fed tokens, plus the final feed
    assert out.trace.depth_forwards <= changed.sum() + 1
    assert out.trace.depth_forwards >= max(1, changed.sum())


def test_feeding_an_unchanged_run_at_once_equals_token_by_token(
    model: ReferenceModel,
) -> None:
    runner = TorchRunner(model)
    tok = model.tokenizer
    prompt = np.asarray([1, 2, 3, tok.marker["<depth_start>"]], np.int64)
    codes = np.asarray([tok.depth_token(c) for c in (5, 9, 77, 3)], np.int64)
    visual = runner.encode_images(np.zeros((1, 3, 378, 378), np.float32))
    runner.prefill(prompt, visual)
    at_once = runner.extend(codes)
    runner.prefill(prompt, visual)
    for token in codes:
        one_by_one = runner.extend(np.asarray([token], np.int64))
    np.testing.assert_allclose(at_once, one_by_one, atol=1e-4)


def test_no_scene_means_full_refresh(
    model: ReferenceModel, transform: EmbodimentTransform
) -> None:
    out = policy(model, transform, depth=True).infer(observation(transform))
    assert out.trace.changed_cells == 100 and out.trace.depth_forwards == 100


# --- bad input and bad output -------------------------------------------------------------


def test_bad_observations_raise_policy_errors(
    model: ReferenceModel, transform: EmbodimentTransform
) -> None:
    flow = policy(model, transform)
    good = observation(transform)
    missing = Observation(
        images={k: v for k, v in list(good.images.items())[:1]},
        joint_positions=good.joint_positions,
        joint_names=good.joint_names,
    )
    with pytest.raises(PolicyError, match="camera"):
        flow.infer(missing)
    nan = Observation(
        images=good.images, joint_positions=np.full(6, np.nan), joint_names=good.joint_names
    )
    with pytest.raises(PolicyError):
        flow.infer(nan)


def test_non_finite_model_output_is_an_error(transform: EmbodimentTransform) -> None:
    broken = init_model(preset("tiny"), seed=1)
    assert broken.flow_head is not None
    with torch.no_grad():
        broken.flow_head.action_out.bias.fill_(float("nan"))
    with pytest.raises(PolicyError, match="non-finite"):
        policy(broken, transform).infer(observation(transform))


def test_head_the_model_lacks_is_refused(transform: EmbodimentTransform) -> None:
    cfg = ModelConfig.from_dict({**preset("tiny").to_dict(), "recurrent_head": None})
    with pytest.raises(PolicyError, match="no recurrent head"):
        policy(init_model(cfg), transform, head="recurrent")
