"""MolmoThink's depth-token cache: per cell a code and the pixels it was predicted from.

DESIGN §6. For each of the 100 cells the cache keeps the depth code (0..127), the **reference
pixels** (the cell of the frame the code was predicted from) and that frame's stamp. Recent
frames wait in a ring buffer, keyed by capture stamp, with the mask that was published for them:

    cache.remember(stamp_ns, cells, flagged)   # every published scene
    cache.commit(stamp_ns, codes)              # the policy's grid for that frame

A commit takes the frame of its stamp from the ring and updates **only the cells that were
flagged for that frame**: those are the ones the policy re-predicted from it. The other cells'
codes in the grid are the cached ones fed back (or, when the policy decoded everything, codes
from a frame that is not their reference): keeping their old code and old reference keeps every
(code, reference) pair true to the frame it came from. A commit never moves a cell's reference
back in time, and commits from before a `reset()` are refused (epochs).

So late, lost or foreign depth tokens can leave cells flagged longer, never marked unchanged
against a reference they were not predicted from. Invalid grids and stamps that match no
buffered frame raise `DepthCacheError` and change nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vla_runtime.core.change_detector import CELL_VALUES, CELLS, GRID, CellArray

DEPTH_CODES = 128
"""Codebook size: codes are 0..127."""
DEFAULT_HISTORY = 32
"""Frames kept for commits: ~1 s at 30 Hz, longer than any policy step we run."""


class DepthCacheError(ValueError):
    """A commit the cache refused (the message says why); the cache is unchanged."""


@dataclass(frozen=True)
class _Remembered:
    cells: CellArray
    flagged: npt.NDArray[np.bool_]
    epoch: int


@dataclass(frozen=True)
class CommitResult:
    """What a commit changed.

    Attributes:
        updated: (100,) bool, the cells whose code and reference were replaced.
        stale: flagged cells not updated because the cache already holds a newer reference.
    """

    updated: npt.NDArray[np.bool_]
    stale: int


class DepthCache:
    """Codes, reference cells and the ring of recent frames (not thread-safe: one owner)."""

    def __init__(self, history: int = DEFAULT_HISTORY) -> None:
        if history < 1:
            raise ValueError(f"history must be >= 1 frame, got {history}")
        self.history = history
        self.codes = np.zeros(CELLS, np.uint8)
        self.reference = np.zeros((CELLS, CELL_VALUES), np.uint8)
        self.reference_stamp_ns = np.zeros(CELLS, np.int64)
        self.valid = np.zeros(CELLS, np.bool_)
        self.epoch = 0
        self._frames: OrderedDict[int, _Remembered] = OrderedDict()

    def reset(self) -> None:
        """Forget every code, reference and buffered frame: the next scene is a full refresh."""
        self.valid[:] = False
        self.codes[:] = 0
        self.reference_stamp_ns[:] = 0
        self._frames.clear()
        self.epoch += 1

    def remember(self, stamp_ns: int, cells: CellArray, flagged: npt.NDArray[np.bool_]) -> None:
        """Buffer a frame's cells and the mask published for it (the oldest falls out)."""
        self._frames[stamp_ns] = _Remembered(cells, flagged.copy(), self.epoch)
        self._frames.move_to_end(stamp_ns)
        while len(self._frames) > self.history:
            self._frames.popitem(last=False)

    def buffered_stamps(self) -> tuple[int, ...]:
        return tuple(self._frames)

    def commit(self, stamp_ns: int, codes: npt.ArrayLike) -> CommitResult:
        """Take the policy's (10, 10) code grid for the frame of `stamp_ns`.

        Raises:
            DepthCacheError: a grid of another shape or type, codes >= 128, or a stamp that
                matches no buffered frame (too old, from before a reset, or never seen).
        """
        grid = np.asarray(codes)
        if grid.shape != (GRID, GRID):
            raise DepthCacheError(f"depth grid must be {GRID}x{GRID}, got shape {grid.shape}")
        if grid.dtype != np.uint8:
            raise DepthCacheError(f"depth grid must be uint8 codes, got {grid.dtype}")
        if int(grid.max()) >= DEPTH_CODES:
            raise DepthCacheError(
                f"depth codes must be 0..{DEPTH_CODES - 1}, got {int(grid.max())}"
            )
        frame = self._frames.get(stamp_ns)
        if frame is None or frame.epoch != self.epoch:
            raise DepthCacheError(self._no_frame(stamp_ns))
        newer = self.valid & (self.reference_stamp_ns > stamp_ns)
        updated = frame.flagged & ~newer
        flat = grid.reshape(CELLS)
        self.codes[updated] = flat[updated]
        self.reference[updated] = frame.cells[updated]
        self.reference_stamp_ns[updated] = stamp_ns
        self.valid |= updated
        return CommitResult(updated, int(np.count_nonzero(frame.flagged & newer)))

    def grid(self) -> npt.NDArray[np.uint8]:
        """The cached codes as a (10, 10) grid (0 where no code was predicted yet)."""
        grid: npt.NDArray[np.uint8] = self.codes.reshape(GRID, GRID).copy()
        return grid

    def age_s(self, now_ns: int) -> npt.NDArray[np.float64]:
        """(100,) seconds since each cell's reference frame; NaN where there is none."""
        age = (now_ns - self.reference_stamp_ns) / 1e9
        return np.where(self.valid, age, np.nan)

    def _no_frame(self, stamp_ns: int) -> str:
        if not self._frames:
            return f"depth tokens stamped {stamp_ns} match no buffered frame (none buffered)"
        oldest, newest = next(iter(self._frames)), next(reversed(self._frames))
        where = "older than" if stamp_ns < oldest else "not one of"
        return (
            f"depth tokens stamped {stamp_ns} match no buffered frame ({where} the "
            f"{len(self._frames)} frames {oldest}..{newest}; tokens too late, or from before "
            "a reset)"
        )
