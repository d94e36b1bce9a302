"""`vla-runtime policy init|describe|bench`: parameter counts against the papers, the weights
round trip, the bench report's schema, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from vla_runtime.cli.main import main
from vla_runtime.policy.model.config import preset
from vla_runtime.policy.model.weights import CONFIG_FILE, WEIGHTS_FILE, init_model, load_model

# The papers' sizes [molmoact2.md §1.1-1.2, rd-vla.md §1.6]; the presets must match within 5 %.
PAPER = {
    "molmoact2": {"vlm": 4.0e9, "vision": 0.38e9, "connector": 57e6, "flow_head": 0.621e9},
    "rdvla": {"recurrent_head": 72e6},
}
PARTS = {"vision", "connector", "vlm", "flow_head", "recurrent_head", "total"}
STAGES = {"vision_ms", "prefill_ms", "depth_ms", "action_ms", "total_ms"}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["policy", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, err = run_cli(capsys, *argv, "--json")
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


# -- describe -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PAPER))
def test_describe_full_size_presets_match_the_papers(
    capsys: pytest.CaptureFixture[str], name: str
) -> None:
    described = run_json(capsys, "describe", "--config", name)
    counts = described["parameters"]
    assert set(counts) == PARTS
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
    for part, paper in PAPER[name].items():
        assert abs(counts[part] - paper) / paper < 0.05, (part, counts[part], paper)
        reported = described["paper"][part]
        assert reported["parameters"] == pytest.approx(paper)
        assert reported["difference_pct"] == pytest.approx((counts[part] - paper) / paper * 100)


def test_describe_tiny_has_both_heads_and_no_paper_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    described = run_json(capsys, "describe", "--config", "tiny")
    assert described["heads"] == ["flow", "recurrent"]
    assert described["paper"] == {}
    model = init_model(preset("tiny"))
    assert described["parameters"]["total"] == sum(p.numel() for p in model.parameters())


def test_describe_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "describe", "--config", "rdvla")
    assert code == 0
    assert "recurrent_head" in out and "rd-vla.md §1.6" in out


# -- init -----------------------------------------------------------------------------------------


def test_init_writes_weights_that_load_back(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "tiny"
    code, stdout, err = run_cli(
        capsys, "init", "--config", "tiny", "--out", str(out), "--seed", "3"
    )
    assert code == 0, err
    assert (out / CONFIG_FILE).is_file() and (out / WEIGHTS_FILE).is_file()
    assert "model.safetensors" in stdout and "MiB" in stdout
    loaded = load_model(out).state_dict()
    expected = init_model(preset("tiny"), seed=3).state_dict()
    assert loaded.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(loaded[name], tensor), name

    code, _, err = run_cli(capsys, "init", "--config", "tiny", "--out", str(out))
    assert code == 2 and "--force" in err
    code, _, err = run_cli(capsys, "init", "--config", "tiny", "--out", str(out), "--force")
    assert code == 0, err

    report = run_json(capsys, "bench", "--model", str(out), "--runs", "1", "--warmup", "0",
                      "--threads", "0")  # fmt: skip
    assert report["model"] == str(out) and report["runs"] == 1


# -- bench ----------------------------------------------------------------------------------------


def finite_numbers(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [n for v in value.values() for n in finite_numbers(v)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    return []


@pytest.mark.parametrize("head", ["flow", "recurrent"])
def test_bench_json_report(capsys: pytest.CaptureFixture[str], head: str) -> None:
    report = run_json(
        capsys, "bench", "--config", "tiny", "--head", head, "--runs", "2", "--warmup", "1",
        "--threads", "0",
    )  # fmt: skip
    assert report["backend"] == "torch" and report["head"] == head and report["runs"] == 2
    assert set(report["stages"]) == STAGES
    for stats in report["stages"].values():
        assert set(stats) == {"p50", "p90", "p99", "mean"}
        assert stats["p50"] <= stats["p90"] <= stats["p99"]
    for stage in ("vision_ms", "prefill_ms", "action_ms", "total_ms"):
        assert report["stages"][stage]["p50"] > 0
    assert report["stages"]["depth_ms"]["p99"] == 0  # no --changed-fraction: no depth stage
    assert all(math.isfinite(n) for n in finite_numbers(report))
    iterations = report["iterations"]
    assert 1 <= iterations["min"] <= iterations["mean"] <= iterations["max"]
    assert sum(report["stop_reasons"].values()) == 2
    if head == "flow":
        assert report["stop_reasons"] == {"steps": 2} and iterations["mean"] == 10
    else:
        assert set(report["stop_reasons"]) <= {"converged", "max_iterations"}
    memory = report["memory"]
    assert memory["kind"] in ("peak_rss", "lifetime_peak_rss")
    assert memory["peak_bytes"] > 0 and memory["growth_bytes"] >= 0


def test_bench_fixed_iterations_and_depth(capsys: pytest.CaptureFixture[str]) -> None:
    report = run_json(
        capsys, "bench", "--head", "recurrent", "--iterations", "3", "--changed-fraction", "0.1",
        "--per-iteration-context", "--runs", "2", "--warmup", "0", "--threads", "0",
    )  # fmt: skip
    assert report["fixed_iterations"] == 3 and report["per_iteration_context"] is True
    assert report["iterations"] == {"mean": 3.0, "min": 3, "max": 3}
    assert report["stop_reasons"] == {"max_iterations": 2}
    # 10 scattered changed cells: one forward before each (the cache holds the rest) + 1.
    assert report["changed_cells"] == 10
    assert 2 <= report["depth_forwards_mean"] <= 11
    assert report["stages"]["depth_ms"]["p50"] > 0


def test_bench_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "bench", "--runs", "1", "--warmup", "0", "--threads", "0")
    assert code == 0, err
    assert "total" in out and "p99" in out and "stop reasons: steps 1" in out
    assert "peak" in out


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["describe", "--config", "huge"], "unknown model config 'huge'"),
        (["init", "--config", "huge", "--out", "{tmp}/x"], "unknown model config 'huge'"),
        (["bench", "--config", "huge"], "unknown model config 'huge'"),
        (["bench", "--model", "{tmp}/missing"], "not found"),
        (["export-onnx", "--model", "{tmp}/missing", "--out", "{tmp}/o"], "not found"),
        (["bench", "--config", "rdvla", "--head", "flow"], "no flow head"),
        (["bench", "--iterations", "4"], "--head recurrent"),
        (["bench", "--changed-fraction", "1.5"], "[0, 1]"),
        (["bench", "--embodiment", "nonesuch", "--runs", "1"], "unknown embodiment"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str
) -> None:
    code, _, err = run_cli(capsys, *(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_console_entry_point_exit_code() -> None:
    process = subprocess.run(
        [sys.executable, "-m", "vla_runtime.cli", "policy", "describe", "--config", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode == 2
    assert process.stderr.startswith("vla-runtime policy describe: unknown model config 'nope'")
