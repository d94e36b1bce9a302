"""Closed-loop evaluation of a policy in the simulated world, in process (no middleware).

Per episode: the cubes are placed for the episode's seed (`demos.reset_episode`, the same
sampler as the demonstrations; evaluation seeds start at 100 000, far from the training ones),
then until the time limit: render the embodiment's cameras, infer, execute the first
`replan_rows` rows of the chunk at the embodiment's chunk rate (`demos.execute_rows`, rows
linearly interpolated at the physics rate). Simulated time stands still while the policy
infers. Success is the world's task predicate (the red cube touched), checked every row.

With `depth_cache` the MolmoThink cache of DESIGN §6 runs in the loop: per cell the code and
the primary camera's pixels when it was predicted; `core.change_detector` flags the cells whose
pixels moved away from that reference (cosine < 0.996), and only those are re-decoded. Without
it every query decodes all 100 cells.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import numpy.typing as npt

from vla_runtime.core.change_detector import (
    CELL_VALUES,
    CELLS,
    GRID,
    ChangeDetector,
    cell_similarity,
    frame_cells,
)
from vla_runtime.policy.interface import DepthScene, Observation, Policy
from vla_runtime.policy.registry import PolicySpec, create_policy
from vla_runtime.sim.world import World, WorldConfig, build_world
from vla_runtime.train.demos import CubeRegion, execute_rows, reset_episode


@dataclass(frozen=True)
class Variant:
    """One row of the table: a head and its stopping rule, with or without the depth cache."""

    name: str
    head: str
    min_iterations: int = 2
    max_iterations: int = 32
    threshold: float = 1.0e-3
    depth_cache: bool = False

    @classmethod
    def fixed(cls, iterations: int, depth_cache: bool) -> Variant:
        # threshold 0 never converges: exactly `iterations` iterations.
        return cls(f"recurrent fixed {iterations}", "recurrent", iterations, iterations, 0.0,
                   depth_cache)  # fmt: skip

    def spec(self, model: str, threads: int) -> PolicySpec:
        return PolicySpec(
            model=model,
            head=self.head,
            threshold=self.threshold,
            min_iterations=self.min_iterations,
            max_iterations=self.max_iterations,
            depth=True,
            threads=threads,
        )


def standard_variants(depth_cache: bool) -> list[Variant]:
    """The issue's table: recurrent fixed 1/2/4/8/12, adaptive, flow."""
    variants = [Variant.fixed(k, depth_cache) for k in (1, 2, 4, 8, 12)]
    variants.append(Variant("recurrent adaptive", "recurrent", depth_cache=depth_cache))
    variants.append(Variant("flow (10 steps)", "flow", depth_cache=depth_cache))
    return variants


@dataclass(frozen=True)
class EvalConfig:
    """How episodes run.

    Attributes:
        episodes: episodes per variant (seeds `seed`, `seed + 1`, ...).
        seed: first episode seed.
        time_limit_s: simulated time to touch the cube.
        replan_rows: chunk rows executed per query (1/3 s at 30 Hz).
        width, height: render size, as `vla-runtime sim` publishes.
        threads: torch threads of the policy.
    """

    embodiment: str = "so100"
    episodes: int = 50
    seed: int = 100_000
    time_limit_s: float = 6.0
    replan_rows: int = 10
    width: int = 640
    height: int = 480
    threads: int = 1
    region: CubeRegion = field(default_factory=CubeRegion)


class DepthCache:
    """Codes and reference pixels per cell of the primary camera (DESIGN §6)."""

    def __init__(self) -> None:
        self.detector = ChangeDetector()
        self.codes = np.zeros(CELLS, np.uint8)
        self.reference = np.zeros((CELLS, CELL_VALUES), np.uint8)
        self.valid = np.zeros(CELLS, np.bool_)
        self._cells = self.reference

    def reset(self) -> None:
        self.detector.reset()
        self.valid[:] = False

    def scene(self, frame: npt.NDArray[np.uint8], stamp_ns: int) -> DepthScene:
        self._cells = frame_cells(frame)
        similarity = cell_similarity(self._cells, self.reference)
        changed = self.detector.classify(similarity, self.valid)
        return DepthScene(
            self.codes.reshape(GRID, GRID).copy(), changed.reshape(GRID, GRID), stamp_ns
        )

    def commit(self, codes: npt.NDArray[np.uint8], changed: npt.NDArray[np.bool_]) -> None:
        flags = changed.reshape(-1)
        self.codes[flags] = codes.reshape(-1)[flags]
        self.reference[flags] = self._cells[flags]
        self.valid |= flags
        self.detector.release(flags)


@dataclass
class EpisodeOutcome:
    seed: int
    success: bool
    time_s: float
    queries: int
    iterations: float
    changed_cells: float
    infer_ms: float
    final_distance_m: float


EARLY_S = (1.5, 2.0)
"""Besides success within the time limit, the table reports success by these times [s]:
within 6 s a slower policy still gets there, the difference shows in how fast."""


@dataclass
class VariantResult:
    variant: Variant
    episodes: list[EpisodeOutcome]

    @property
    def success_rate(self) -> float:
        return float(np.mean([e.success for e in self.episodes]))

    def summary(self) -> dict[str, float | int | str | bool]:
        eps = self.episodes
        queries = sum(e.queries for e in eps)

        def per_query(values: list[float]) -> float:
            weights = [e.queries for e in eps]
            return float(np.average(values, weights=weights)) if queries else float("nan")

        done = [e.time_s for e in eps if e.success]
        missed = [e.final_distance_m for e in eps if not e.success]
        early = {
            f"success_by_{t:g}s": float(np.mean([e.success and e.time_s <= t for e in eps]))
            for t in EARLY_S
        }
        return {
            "variant": self.variant.name,
            "depth_cache": self.variant.depth_cache,
            "episodes": len(eps),
            "success_rate": self.success_rate,
            **early,
            "mean_iterations": per_query([e.iterations for e in eps]),
            "mean_queries": queries / max(len(eps), 1),
            "mean_time_to_success_s": float(np.mean(done)) if done else float("nan"),
            "mean_changed_cells": per_query([e.changed_cells for e in eps]),
            "mean_infer_ms": per_query([e.infer_ms for e in eps]),
            "failed_median_distance_m": float(np.median(missed)) if missed else float("nan"),
        }


def run_episode(
    world: World,
    policy: Policy,
    seed: int,
    config: EvalConfig,
    cache: DepthCache | None,
    prompt: str = "",
) -> EpisodeOutcome:
    reset_episode(world, seed, config.region)
    policy.reset()
    if cache is not None:
        cache.reset()
    primary = policy.camera_names[0]
    iterations: list[int] = []
    changed: list[int] = []
    infer_ms: list[float] = []
    success = False
    while world.time_s < config.time_limit_s and not success:
        images = {camera: world.render(camera) for camera in policy.camera_names}
        stamp_ns = round(world.time_s * 1e9)
        scene = cache.scene(images[primary], stamp_ns) if cache is not None else None
        began = time.monotonic()
        output = policy.infer(
            Observation(
                images,
                world.joint_positions(),
                world.joint_names,
                prompt=prompt,
                stamp_ns=stamp_ns,
                scene=scene,
            )
        )
        infer_ms.append((time.monotonic() - began) * 1e3)
        if cache is not None and scene is not None and output.depth_codes is not None:
            cache.commit(output.depth_codes, scene.changed)
        iterations.append(output.trace.iterations)
        changed.append(output.trace.changed_cells)
        success = execute_rows(world, output.actions, config.replan_rows, policy.chunk_rate_hz)
    return EpisodeOutcome(
        seed=seed,
        success=success,
        time_s=world.time_s,
        queries=len(iterations),
        iterations=float(np.mean(iterations)) if iterations else 0.0,
        changed_cells=float(np.mean(changed)) if changed else 0.0,
        infer_ms=float(np.mean(infer_ms)) if infer_ms else 0.0,
        final_distance_m=world.task_state().target_distance_m,
    )


def evaluate(
    model: str,
    variants: list[Variant],
    config: EvalConfig,
    *,
    progress: Callable[[Variant, EpisodeOutcome], None] | None = None,
) -> list[VariantResult]:
    """Every variant over the same `config.episodes` seeds, in one world."""
    world = build_world(WorldConfig(config.embodiment, width=config.width, height=config.height))
    results = []
    try:
        for variant in variants:
            policy = create_policy(variant.spec(model, config.threads))
            cache = DepthCache() if variant.depth_cache else None
            outcomes = []
            for index in range(config.episodes):
                outcome = run_episode(world, policy, config.seed + index, config, cache)
                outcomes.append(outcome)
                if progress is not None:
                    progress(variant, outcome)
            results.append(VariantResult(variant, outcomes))
    finally:
        world.close()
    return results


def results_table(results: list[VariantResult]) -> str:
    """Markdown table of `VariantResult.summary()` rows."""
    early = " | ".join(f"by {t:g} s" for t in EARLY_S)
    lines = [
        f"| variant | depth cache | success | {early} | mean iterations | queries / episode | "
        "time to touch [s] | re-decoded cells / query | infer [ms] | failures: median miss [cm] |",
        "|---|---|---|" + "---|" * len(EARLY_S) + "---|---|---|---|---|---|",
    ]
    for result in results:
        s = result.summary()
        by = " | ".join(f"{100 * float(s[f'success_by_{t:g}s']):.0f} %" for t in EARLY_S)
        lines.append(
            f"| {s['variant']} | {'yes' if s['depth_cache'] else 'no'} | "
            f"{100 * float(s['success_rate']):.0f} % ({int(s['episodes'])}) | {by} | "
            f"{float(s['mean_iterations']):.2f} | {float(s['mean_queries']):.1f} | "
            f"{float(s['mean_time_to_success_s']):.2f} | {float(s['mean_changed_cells']):.1f} | "
            f"{float(s['mean_infer_ms']):.0f} | "
            f"{100 * float(s['failed_median_distance_m']):.1f} |"
        )
    return "\n".join(lines)


def result_records(results: list[VariantResult]) -> list[dict[str, object]]:
    """JSON-ready: each variant's summary and its episodes."""
    return [
        {
            **r.summary(),
            "spec": asdict(r.variant),
            "outcomes": [asdict(e) for e in r.episodes],
        }
        for r in results
    ]
