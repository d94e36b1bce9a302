"""MolmoThink's state machine: frames in, scenes out, the policy's depth grids committed.

    think = MolmoThink(ThinkConfig())
    scene = think.on_frame(stamp_ns, rgb)       # -> Scene: cached codes + changed flags
    think.on_depth_tokens(stamp_ns, codes)      # the policy's grid for that frame

The detector (core/change_detector.py) compares each cell of the frame with the cell's reference
in the cache (core/depth_cache.py). Full refreshes (every cell flagged) happen on start and after
`reset()` (no valid references), when the changed fraction reaches `full_refresh_fraction`, and
after every `refresh_every` committed grids; a forced refresh lasts until a grid answering a
fully flagged frame has been committed. No middleware; the think node is a thin shell on this.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from vla_runtime.core.change_detector import (
    CELLS,
    GRID,
    ChangeDetector,
    ChangeDetectorConfig,
    cell_similarity,
    frame_cells,
)
from vla_runtime.core.depth_cache import DEFAULT_HISTORY, DepthCache, DepthCacheError


@dataclass(frozen=True)
class ThinkConfig:
    """Detector rules plus the frame ring's length (see ChangeDetectorConfig for the rules)."""

    detector: ChangeDetectorConfig = field(default_factory=ChangeDetectorConfig)
    history: int = DEFAULT_HISTORY


@dataclass(frozen=True)
class Scene:
    """One published scene.

    Attributes:
        stamp_ns: capture stamp of the frame it was computed on.
        codes: (10, 10) uint8 cached codes (0 where none was predicted yet).
        changed: (10, 10) bool, True = re-predict.
        similarity: (10, 10) float32 cosine similarity to each cell's reference (1 = none).
        detect_ms: time spent cutting and comparing the frame.
        full_refresh: every cell flagged (start, reset, a refresh rule, or all changed).
    """

    stamp_ns: int
    codes: npt.NDArray[np.uint8]
    changed: npt.NDArray[np.bool_]
    similarity: npt.NDArray[np.float32]
    detect_ms: float
    full_refresh: bool

    def as_grid(self) -> npt.NDArray[np.uint8]:
        """(10, 10, 2) uint8 for /think/scene: channel 0 code, channel 1 changed flag."""
        return np.stack([self.codes, self.changed.astype(np.uint8)], axis=-1)

    @property
    def changed_fraction(self) -> float:
        return float(self.changed.mean())


@dataclass
class ThinkStats:
    """Counters since start (diagnostics).

    Attributes:
        frames: scenes published.
        commits: depth grids committed.
        rejected: frames or grids refused (bad shape/encoding/codes, unknown stamp).
        full_refreshes: scenes with every cell flagged.
        cells_flagged: sum of flagged cells over all scenes.
        cells_updated: sum of cells re-predicted over all commits.
        stale_cells: flagged cells a commit skipped because a newer reference was in the cache.
        resets: `reset()` calls.
        last_error: message of the latest rejection ("" = none).
        last_changed_fraction: of the latest scene.
        detect_ms_max: slowest detection.
    """

    frames: int = 0
    commits: int = 0
    rejected: int = 0
    full_refreshes: int = 0
    cells_flagged: int = 0
    cells_updated: int = 0
    stale_cells: int = 0
    resets: int = 0
    last_error: str = ""
    last_changed_fraction: float = math.nan
    detect_ms_max: float = 0.0


class MolmoThink:
    """Change detection against the depth cache, and the cache's commits (one owner thread)."""

    def __init__(
        self,
        config: ThinkConfig | None = None,
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.config = config or ThinkConfig()
        self.detector = ChangeDetector(self.config.detector)
        self.cache = DepthCache(self.config.history)
        self.stats = ThinkStats()
        self._clock = clock
        self._commits_since_refresh = 0
        self._refresh_pending = False

    def on_frame(self, stamp_ns: int, image: npt.NDArray[np.uint8]) -> Scene:
        """Classify a primary-camera frame (HxWx3 uint8 RGB, any size) and buffer it.

        Raises:
            FrameError: the frame is not HxWx3 uint8 (counted; nothing changes).
        """
        start = self._clock()
        try:
            cells = frame_cells(image)
        except ValueError as exc:
            self.reject(str(exc))
            raise
        similarity = cell_similarity(cells, self.cache.reference)
        similarity[~self.cache.valid] = 1.0
        changed = self.detector.classify(similarity, self.cache.valid)  # no reference: changed
        if self._refresh_pending:
            changed = np.ones(CELLS, np.bool_)
        full = bool(changed.all())
        self.cache.remember(stamp_ns, cells, changed)
        detect_ms = (self._clock() - start) * 1e3
        stats = self.stats
        stats.frames += 1
        stats.full_refreshes += int(full)
        stats.cells_flagged += int(np.count_nonzero(changed))
        stats.last_changed_fraction = float(changed.mean())
        stats.detect_ms_max = max(stats.detect_ms_max, detect_ms)
        return Scene(
            stamp_ns=stamp_ns,
            codes=self.cache.grid(),
            changed=changed.reshape(GRID, GRID),
            similarity=similarity.reshape(GRID, GRID),
            detect_ms=detect_ms,
            full_refresh=full,
        )

    def on_depth_tokens(self, stamp_ns: int, codes: npt.ArrayLike) -> int:
        """Commit the policy's grid for the frame of `stamp_ns`; return the cells updated.

        Raises:
            DepthCacheError: wrong shape or codes, or no buffered frame with that stamp
                (counted; the cache is unchanged).
        """
        try:
            result = self.cache.commit(stamp_ns, codes)
        except DepthCacheError as exc:
            self.reject(str(exc))
            raise
        self.detector.release(result.updated)
        self.stats.commits += 1
        self.stats.cells_updated += int(np.count_nonzero(result.updated))
        self.stats.stale_cells += result.stale
        if result.updated.all():
            self._refresh_pending = False
            self._commits_since_refresh = 0
        else:
            self._commits_since_refresh += 1
            every = self.config.detector.refresh_every
            if every and self._commits_since_refresh >= every:
                self._refresh_pending = True
        return int(np.count_nonzero(result.updated))

    def reset(self) -> None:
        """Drop the cache: the next scene flags every cell."""
        self.cache.reset()
        self.detector.reset()
        self._refresh_pending = False
        self._commits_since_refresh = 0
        self.stats.resets += 1

    def reject(self, problem: str) -> str:
        """Count an input that could not be used (e.g. an undecodable message); return it."""
        self.stats.rejected += 1
        self.stats.last_error = problem
        return problem

    def diagnostics(self, now_ns: int) -> dict[str, str]:
        """Key-values for the think node's DiagnosticStatus."""
        stats = self.stats
        age_s = self.cache.age_s(now_ns)
        known = age_s[~np.isnan(age_s)]
        mean_flagged = stats.cells_flagged / stats.frames / CELLS if stats.frames else math.nan
        return {
            "frames": str(stats.frames),
            "commits": str(stats.commits),
            "changed_fraction": _fmt(stats.last_changed_fraction),
            "changed_fraction_mean": _fmt(mean_flagged),
            "full_refreshes": str(stats.full_refreshes),
            "cells_updated": str(stats.cells_updated),
            "stale_cells": str(stats.stale_cells),
            "rejected": str(stats.rejected),
            "resets": str(stats.resets),
            "detect_ms_max": _fmt(stats.detect_ms_max),
            "cells_without_code": str(CELLS - int(np.count_nonzero(self.cache.valid))),
            "cache_age_s_max": _fmt(float(known.max()) if known.size else math.nan),
            "cache_age_s_mean": _fmt(float(known.mean()) if known.size else math.nan),
            # Row-major 10x10, seconds since each cell's reference frame ('-' = no code yet).
            "cache_age_s": " ".join("-" if math.isnan(a) else f"{a:.1f}" for a in age_s),
            "last_error": stats.last_error,
        }


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.3f}"
