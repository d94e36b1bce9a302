"""Policy measurements shared by `vla-runtime policy bench|describe` and `benchmarks/policy.py`.

- `measure`: build a policy from a `PolicySpec`, feed it one synthetic observation (640x480 RGB
  frames per camera, the joint state at zero, optionally a depth scene with a chosen fraction
  of changed cells), run warm-up + measured inferences and summarise the traces: per-stage
  latency percentiles, recurrent iterations, stop reasons, depth forwards, peak memory.
- `describe_config`: parameter counts of a model config, built on torch's `meta` device (no
  memory is allocated, so the 5 B MolmoAct2 shapes are counted in a second), next to the
  papers' numbers.

A timing claim is a benchmark, not a test: nothing here asserts a latency.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from vla_runtime.policy.interface import (
    DEPTH_GRID,
    DepthScene,
    Observation,
    Policy,
    PolicyTrace,
)
from vla_runtime.policy.model.config import ModelConfig, preset
from vla_runtime.policy.registry import PolicySpec, create_policy

if TYPE_CHECKING:
    from vla_runtime.policy.model.model import ReferenceModel

FRAME_SHAPE = (480, 640, 3)
"""A VGA RGB camera frame (height, width, channels): what the cameras publish."""
STAGES = ("vision_ms", "prefill_ms", "depth_ms", "action_ms", "total_ms")
PERCENTILES = (50, 90, 99)
PARTS = ("vision", "connector", "vlm", "flow_head", "recurrent_head", "total")


# -- synthetic inputs ---------------------------------------------------------------------------


def changed_mask(fraction: float, seed: int = 0) -> npt.NDArray[np.bool_]:
    """A 10x10 mask with round(fraction x 100) changed cells at seeded random positions.

    Scattered cells are the expensive case for the depth schedule: each changed cell that
    follows an unchanged run costs a forward of its own.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"changed fraction must be in [0, 1], got {fraction}")
    cells = DEPTH_GRID * DEPTH_GRID
    mask = np.zeros(cells, np.bool_)
    count = round(fraction * cells)
    mask[np.random.default_rng(seed).choice(cells, size=count, replace=False)] = True
    return mask.reshape(DEPTH_GRID, DEPTH_GRID)


def synthetic_observation(
    policy: Policy, *, changed_fraction: float | None = None, seed: int = 0
) -> Observation:
    """One observation for `policy`: noise frames for each of its cameras, joints at 0 (the
    transform saturates values outside an embodiment's range), a depth scene when
    `changed_fraction` is given (cached codes from a seeded stream)."""
    rng = np.random.default_rng(seed)
    images = {
        name: rng.integers(0, 256, FRAME_SHAPE, dtype=np.uint8) for name in policy.camera_names
    }
    scene = None
    if changed_fraction is not None:
        codes = rng.integers(0, 128, (DEPTH_GRID, DEPTH_GRID), dtype=np.uint8)
        scene = DepthScene(codes=codes, changed=changed_mask(changed_fraction, seed))
    joints = policy.joint_names
    return Observation(
        images=images,
        joint_positions=np.zeros(len(joints), np.float64),
        joint_names=joints,
        stamp_ns=time.monotonic_ns(),
        scene=scene,
    )


def fixed_iterations(spec: PolicySpec, iterations: int) -> PolicySpec:
    """`spec` with a recurrent head that runs exactly `iterations` iterations (threshold 0
    never converges; min = max = K)."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    return dataclasses.replace(
        spec, threshold=0.0, min_iterations=iterations, max_iterations=iterations
    )


# -- memory ------------------------------------------------------------------------------------


class MemoryProbe(Protocol):
    kind: str

    def reset(self) -> int:
        """Start a new peak window; the current usage [bytes]."""

    def peak(self) -> int:
        """Peak usage since `reset` [bytes]."""


class PeakRss:
    """Peak resident set size of this process (Linux VmHWM).

    Writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS (Linux >= 4.0), so the
    peak covers the measured runs only. Without it (another OS, a restricted /proc) the peak is
    the process's lifetime high-water mark and `kind` says so.
    """

    def __init__(self) -> None:
        self.kind = "peak_rss"

    def reset(self) -> int:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.kind = "lifetime_peak_rss"
        return self._status("VmRSS")

    def peak(self) -> int:
        return self._status("VmHWM")

    @staticmethod
    def _status(field: str) -> int:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # reported in kB
        except OSError:
            pass
        import resource  # no /proc: ru_maxrss is the lifetime peak (kB on Linux)

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class CudaPeakAllocated:
    """Peak bytes allocated by torch's CUDA caching allocator on one device."""

    def __init__(self, device: str) -> None:
        import torch

        self.kind = "cuda_max_allocated"
        self._torch = torch
        self._device = torch.device(device)

    def reset(self) -> int:
        self._torch.cuda.synchronize(self._device)
        self._torch.cuda.reset_peak_memory_stats(self._device)
        return int(self._torch.cuda.memory_allocated(self._device))

    def peak(self) -> int:
        self._torch.cuda.synchronize(self._device)
        return int(self._torch.cuda.max_memory_allocated(self._device))


def memory_probe(device: str) -> MemoryProbe:
    return CudaPeakAllocated(device) if device.startswith("cuda") else PeakRss()


# -- measured runs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StageStats:
    """Percentiles of one stage over the measured runs [ms]."""

    p50: float
    p90: float
    p99: float
    mean: float

    @classmethod
    def of(cls, values: list[float]) -> StageStats:
        p50, p90, p99 = (float(v) for v in np.percentile(values, PERCENTILES))
        return cls(p50=p50, p90=p90, p99=p99, mean=float(np.mean(values)))


@dataclass(frozen=True)
class BenchResult:
    """What `measure` saw over the measured runs (warm-up excluded).

    Attributes:
        spec: the policy that ran.
        changed_fraction: depth scene's changed cells (None = no depth reasoning).
        runs, warmup: measured and discarded inferences.
        stages: STAGES -> percentiles [ms].
        iterations_mean, iterations_min, iterations_max: flow steps or recurrent iterations.
        stop_reasons: reason -> count.
        depth_forwards_mean, changed_cells: the depth schedule's VLM forwards per query, and
            the changed cells of the scene.
        memory_kind: 'peak_rss' (CPU), 'cuda_max_allocated' (CUDA) or 'lifetime_peak_rss'.
        memory_baseline_bytes: usage when the measured runs started.
        memory_peak_bytes: peak during the measured runs.
        setup_s: building the policy (weights, export, sessions) [s].
    """

    spec: PolicySpec
    changed_fraction: float | None
    runs: int
    warmup: int
    stages: dict[str, StageStats]
    iterations_mean: float
    iterations_min: int
    iterations_max: int
    stop_reasons: dict[str, int]
    depth_forwards_mean: float
    changed_cells: int
    memory_kind: str
    memory_baseline_bytes: int
    memory_peak_bytes: int
    setup_s: float

    @property
    def memory_growth_bytes(self) -> int:
        return max(0, self.memory_peak_bytes - self.memory_baseline_bytes)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready; the `policy bench --json` schema."""
        spec = self.spec
        return {
            "backend": spec.backend,
            "model": spec.model,
            "embodiment": spec.embodiment,
            "head": spec.head,
            "device": spec.device,
            "dtype": spec.dtype,
            "threads": spec.threads,
            "fixed_iterations": (
                spec.max_iterations
                if spec.head == "recurrent"
                and spec.threshold == 0.0
                and spec.min_iterations == spec.max_iterations
                else None
            ),
            "stop_rule": {
                "threshold": spec.threshold,
                "min_iterations": spec.min_iterations,
                "max_iterations": spec.max_iterations,
            },
            "per_iteration_context": spec.per_iteration_context,
            "changed_fraction": self.changed_fraction,
            "runs": self.runs,
            "warmup": self.warmup,
            "stages": {name: dataclasses.asdict(stats) for name, stats in self.stages.items()},
            "iterations": {
                "mean": self.iterations_mean,
                "min": self.iterations_min,
                "max": self.iterations_max,
            },
            "stop_reasons": dict(self.stop_reasons),
            "depth_forwards_mean": self.depth_forwards_mean,
            "changed_cells": self.changed_cells,
            "memory": {
                "kind": self.memory_kind,
                "baseline_bytes": self.memory_baseline_bytes,
                "peak_bytes": self.memory_peak_bytes,
                "growth_bytes": self.memory_growth_bytes,
            },
            "setup_s": self.setup_s,
        }


Progress = Callable[[int, int], None]
"""Called after each measured run with (done, runs)."""


def run_policy(
    policy: Policy,
    observation: Observation,
    *,
    runs: int,
    warmup: int,
    probe: MemoryProbe,
    progress: Progress | None = None,
) -> tuple[list[PolicyTrace], int, int]:
    """Warm-up, then `runs` measured inferences: (traces, memory baseline, memory peak)."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got {runs} and {warmup}")
    policy.reset()
    for _ in range(warmup):
        policy.infer(observation)
    gc.collect()
    baseline = probe.reset()
    traces = []
    for done in range(1, runs + 1):
        traces.append(policy.infer(observation).trace)
        if progress is not None:
            progress(done, runs)
    return traces, baseline, probe.peak()


def summarize(
    spec: PolicySpec,
    changed_fraction: float | None,
    traces: list[PolicyTrace],
    *,
    warmup: int,
    memory: tuple[str, int, int],
    setup_s: float,
) -> BenchResult:
    iterations = [trace.iterations for trace in traces]
    kind, baseline, peak = memory
    return BenchResult(
        spec=spec,
        changed_fraction=changed_fraction,
        runs=len(traces),
        warmup=warmup,
        stages={
            stage: StageStats.of([float(getattr(trace, stage)) for trace in traces])
            for stage in STAGES
        },
        iterations_mean=float(np.mean(iterations)),
        iterations_min=min(iterations),
        iterations_max=max(iterations),
        stop_reasons=dict(Counter(trace.stop_reason for trace in traces)),
        depth_forwards_mean=float(np.mean([trace.depth_forwards for trace in traces])),
        changed_cells=max(trace.changed_cells for trace in traces),
        memory_kind=kind,
        memory_baseline_bytes=baseline,
        memory_peak_bytes=peak,
        setup_s=setup_s,
    )


def measure(
    spec: PolicySpec,
    *,
    changed_fraction: float | None = None,
    runs: int = 50,
    warmup: int = 5,
    progress: Progress | None = None,
) -> BenchResult:
    """Build the policy of `spec` and measure it on a synthetic observation.

    Args:
        spec: the policy; its `depth` is set from `changed_fraction`.
        changed_fraction: run depth reasoning with this fraction of the 100 cells changed
            (0 = every code from the cache, 1 = every cell decoded); None = no depth.
        runs, warmup: measured and discarded inferences.
        progress: called after each measured run.

    Raises:
        PolicyConfigError, ModelConfigError, WeightsError, TransformConfigError: a spec that
            names something that does not exist; PolicyError: the model does not fit the spec.
    """
    spec = dataclasses.replace(spec, depth=changed_fraction is not None)
    if changed_fraction is not None:
        changed_mask(changed_fraction)  # validate before loading weights
    started = time.monotonic()
    policy = create_policy(spec)
    setup_s = time.monotonic() - started
    observation = synthetic_observation(policy, changed_fraction=changed_fraction, seed=spec.seed)
    probe = memory_probe(spec.device)
    traces, baseline, peak = run_policy(
        policy, observation, runs=runs, warmup=warmup, probe=probe, progress=progress
    )
    return summarize(
        spec,
        changed_fraction,
        traces,
        warmup=warmup,
        memory=(probe.kind, baseline, peak),
        setup_s=setup_s,
    )


# -- models: random weights, ONNX export -------------------------------------------------------


def model_from_argument(model: str, seed: int = 0) -> ReferenceModel:
    """A model directory's weights, or random weights of a named config ('tiny').

    Raises:
        WeightsError: a directory without matching config.json + model.safetensors.
        ModelConfigError: neither a directory nor a known config name.
    """
    from vla_runtime.policy.model.weights import init_model, load_model

    path = Path(model).expanduser()
    if path.is_dir():
        return load_model(path)
    if path.suffix or len(path.parts) > 1:
        from vla_runtime.policy.model.weights import WeightsError

        raise WeightsError(f"model directory {path} not found")
    return init_model(preset(model), seed=seed)


def export_model(model: ReferenceModel, out_dir: Path) -> list[Path]:
    """`vla_runtime.policy.export.export_onnx` (imported here: it pulls in the exporter)."""
    from vla_runtime.policy.export import export_onnx

    out_dir.mkdir(parents=True, exist_ok=True)
    return export_onnx(model, out_dir)


# -- parameter counts against the papers -------------------------------------------------------


@dataclass(frozen=True)
class PaperValue:
    """A parameter count reported for the real model, with where it comes from."""

    parameters: float
    source: str


PAPER_PARAMETERS: dict[str, dict[str, PaperValue]] = {
    "molmoact2": {
        "vision": PaperValue(380e6, "SigLIP2 so400m/14, molmoact2.md §1.1"),
        "connector": PaperValue(57e6, "molmoact2.md §1.1"),
        "vlm": PaperValue(4.0e9, "Qwen3-4B-shaped LLM, paper Table 15, molmoact2.md §1.1"),
        "flow_head": PaperValue(621e6, "action expert, paper App. A.2, molmoact2.md §1.2"),
        "total": PaperValue(5.06e9, "molmoact2.md §1.1"),
    },
    "rdvla": {
        "vlm": PaperValue(0.5e9, "Qwen2.5-0.5B (nominal size), rd-vla.md §1.1"),
        "recurrent_head": PaperValue(72e6, "4 layers + adapter, rd-vla.md §1.6"),
    },
}
"""Reference sizes per preset. RD-VLA's vision tower (DINOv2 + SigLIP at 224 px) is not what
the `rdvla` preset builds (MolmoAct2's SigLIP2), so its vision and connector have no value."""


@dataclass(frozen=True)
class PartCount:
    part: str
    parameters: int
    paper: PaperValue | None = None

    @property
    def difference_pct(self) -> float | None:
        """(ours - paper) / paper x 100; None without a paper value."""
        if self.paper is None:
            return None
        return (self.parameters - self.paper.parameters) / self.paper.parameters * 100.0


@dataclass(frozen=True)
class ModelDescription:
    config: ModelConfig
    parts: tuple[PartCount, ...]

    def count(self, part: str) -> int:
        return next(p.parameters for p in self.parts if p.part == part)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready; the `policy describe --json` schema."""
        return {
            "config": self.config.name,
            "heads": list(self.config.heads),
            "parameters": {p.part: p.parameters for p in self.parts},
            "paper": {
                p.part: {
                    "parameters": p.paper.parameters,
                    "source": p.paper.source,
                    "difference_pct": p.difference_pct,
                }
                for p in self.parts
                if p.paper is not None
            },
        }


def describe_config(config: ModelConfig) -> ModelDescription:
    """Parameter counts per part of `config`, with the paper values where there are some."""
    import torch

    from vla_runtime.policy.model.model import ReferenceModel, parameter_counts

    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = ReferenceModel(config)
    counts = parameter_counts(model)
    papers = PAPER_PARAMETERS.get(config.name, {})
    return ModelDescription(
        config=config,
        parts=tuple(PartCount(part, counts[part], papers.get(part)) for part in PARTS),
    )


def human_count(value: float) -> str:
    """12345678 -> '12.35 M'."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {suffix}"
    return f"{value:.0f}" if math.isfinite(value) else "nan"
