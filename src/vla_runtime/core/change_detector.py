"""MolmoThink change detection: which 32x32 cells of the primary camera changed (DESIGN §6).

As released [molmoact2.md §3]: the frame is resized bilinearly to 320x320 and cut into a 10x10
grid of 32x32-pixel cells; a cell's RGB values (3,072 numbers) are compared by cosine
similarity, and the cell is changed when the similarity falls below 0.996. A patch that is all
zero counts as similarity 1.

Unlike the release, which compares with the previous *step's* image, cells are compared with
their **reference**: the pixels at the time the cell's depth code was predicted (the depth cache
keeps them, core/depth_cache.py). A slow drift that no two consecutive frames would show still
trips the threshold once it has added up.

    cells = frame_cells(rgb)                       # (100, 3072) uint8
    similarity = cell_similarity(cells, reference) # (100,) float32
    changed = detector.classify(similarity, valid) # (100,) bool, with hysteresis and refresh rules

Numpy and OpenCV only; well under a millisecond per 640x480 frame (benchmarks/think.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

GRID = 10
"""Cells per side of the depth grid."""
CELL_PX = 32
"""Cell side [px] after the resize."""
SIZE_PX = GRID * CELL_PX
"""Side of the resized frame [px] (320)."""
CELLS = GRID * GRID
CELL_VALUES = CELL_PX * CELL_PX * 3
DEFAULT_THRESHOLD = 0.996
"""Cosine similarity below which a cell changed (the released `_DEPTH_REASONING_THRESHOLD`)."""

CellArray = npt.NDArray[np.uint8]
"""(100, 3072) uint8: one row of RGB values per cell, row-major over the grid."""


class FrameError(ValueError):
    """A frame the detector cannot use (the message says why)."""


@dataclass(frozen=True)
class ChangeDetectorConfig:
    """How cells are classified.

    Attributes:
        threshold: a cell changed when its similarity to its reference is below this.
        hysteresis: a cell that is flagged stays flagged until its similarity is back at or
            above `threshold + hysteresis` (or it is re-predicted); 0 = the release's rule.
        full_refresh_fraction: when at least this fraction of the cells changed, flag them all
            (one full re-prediction is cheaper than many scattered ones); 0 = off.
        refresh_every: force a full refresh after this many committed depth grids; 0 = off.
    """

    threshold: float = DEFAULT_THRESHOLD
    hysteresis: float = 0.0
    full_refresh_fraction: float = 0.0
    refresh_every: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and -1.0 <= self.threshold <= 1.0):
            raise ValueError(f"threshold must be in [-1, 1], got {self.threshold}")
        if not (math.isfinite(self.hysteresis) and 0.0 <= self.hysteresis <= 1.0):
            raise ValueError(f"hysteresis must be in [0, 1], got {self.hysteresis}")
        fraction = self.full_refresh_fraction
        if not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
            raise ValueError(
                f"full_refresh_fraction must be in [0, 1] (0 = off), got "
                f"{self.full_refresh_fraction}"
            )
        if self.refresh_every < 0:
            raise ValueError(f"refresh_every must be >= 0 (0 = off), got {self.refresh_every}")


def frame_cells(image: npt.NDArray[np.uint8]) -> CellArray:
    """Cut an HxWx3 uint8 RGB frame (any size) into the 100 cells of its 320x320 resize.

    Raises:
        FrameError: not an HxWx3 uint8 array, or empty.
    """
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
        raise FrameError(f"a frame must be HxWx3 uint8 RGB, got {array.shape} {array.dtype}")
    if array.shape[:2] != (SIZE_PX, SIZE_PX):
        array = np.asarray(
            cv2.resize(array, (SIZE_PX, SIZE_PX), interpolation=cv2.INTER_LINEAR), np.uint8
        )
    # (320, 320, 3) -> (10, 32, 10, 32, 3) -> (10, 10, 32, 32, 3) -> (100, 3072)
    grid = array.reshape(GRID, CELL_PX, GRID, CELL_PX, 3).swapaxes(1, 2)
    return np.ascontiguousarray(grid).reshape(CELLS, CELL_VALUES)


def cell_similarity(cells: CellArray, reference: CellArray) -> npt.NDArray[np.float32]:
    """Cosine similarity per cell of two (100, 3072) cell arrays; 1 where either is all zero."""
    a = cells.astype(np.float32)
    b = reference.astype(np.float32)
    dot = np.einsum("ij,ij->i", a, b)
    norms = np.sqrt(np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", b, b))
    similarity = np.ones(CELLS, np.float32)
    nonzero = norms > 0
    similarity[nonzero] = dot[nonzero] / norms[nonzero]
    return similarity


class ChangeDetector:
    """Classifies cells from their similarity to their references, with hysteresis.

    Stateful only for hysteresis: which cells are flagged now (`latched`). Cells without a
    reference (never predicted, or after a reset) are always changed.
    """

    def __init__(self, config: ChangeDetectorConfig | None = None) -> None:
        self.config = config or ChangeDetectorConfig()
        self.latched = np.zeros(CELLS, np.bool_)

    def classify(
        self, similarity: npt.NDArray[np.float32], valid: npt.NDArray[np.bool_]
    ) -> npt.NDArray[np.bool_]:
        """(100,) bool changed mask from per-cell similarity and reference validity."""
        cfg = self.config
        changed = (similarity < cfg.threshold) | ~valid
        if cfg.hysteresis > 0:
            changed |= self.latched & (similarity < cfg.threshold + cfg.hysteresis)
        if cfg.full_refresh_fraction > 0 and changed.mean() >= cfg.full_refresh_fraction:
            changed = np.ones(CELLS, np.bool_)
        self.latched = changed.copy()
        return changed

    def release(self, cells: npt.NDArray[np.bool_]) -> None:
        """Cells were re-predicted: their flag no longer holds (new reference)."""
        self.latched &= ~cells

    def reset(self) -> None:
        self.latched[:] = False
