"""The depth-token codebook: k-means over pooled depth cells, learned from the demonstrations.

MolmoThink quantises each 32x32 cell of the first camera's depth with a 128-entry VQ-VAE
codebook [DESIGN §6]. Here the codes come from plain k-means (numpy, k-means++ seeding) over
the cells of the recorded episodes, each average-pooled to 8x8 depths in metres
(`demos.depth_cells`). The policy never reads the codebook: it predicts codes as tokens. The
codebook is saved next to the weights so the training targets can be reproduced and decoded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

CODEBOOK_FILE = "depth_codebook.npy"

FloatArray = npt.NDArray[np.float32]


def _squared_distances(points: FloatArray, centroids: FloatArray) -> FloatArray:
    cross = points @ centroids.T
    norms = np.einsum("ij,ij->i", centroids, centroids)
    out: FloatArray = np.einsum("ij,ij->i", points, points)[:, None] - 2.0 * cross + norms
    return out


def fit_codebook(
    cells: npt.ArrayLike,
    codes: int = 128,
    *,
    iterations: int = 30,
    sample: int = 60_000,
    seed: int = 0,
) -> FloatArray:
    """(codes, D) centroids of k-means over `cells` (..., D), k-means++ seeded.

    At most `sample` cells (drawn at random) enter the fit; empty clusters are re-seeded at the
    points farthest from their centroids.
    """
    rng = np.random.default_rng(seed)
    points = np.asarray(cells, np.float32).reshape(-1, np.shape(cells)[-1])
    if points.shape[0] > sample:
        points = points[rng.choice(points.shape[0], sample, replace=False)]
    if points.shape[0] < codes:
        raise ValueError(f"need at least {codes} cells to fit {codes} codes, got {len(points)}")
    centroids = np.empty((codes, points.shape[1]), np.float32)
    centroids[0] = points[rng.integers(points.shape[0])]
    closest = _squared_distances(points, centroids[:1])[:, 0]
    for index in range(1, codes):
        weights = np.maximum(closest, 0.0)
        total = float(weights.sum())
        pick = (
            rng.choice(points.shape[0], p=weights / total)
            if total > 0
            else rng.integers(points.shape[0])
        )
        centroids[index] = points[pick]
        closest = np.minimum(
            closest, _squared_distances(points, centroids[index : index + 1])[:, 0]
        )
    for _ in range(iterations):
        distances = _squared_distances(points, centroids)
        labels = distances.argmin(axis=1)
        counts = np.bincount(labels, minlength=codes)
        sums = np.zeros_like(centroids, dtype=np.float64)
        np.add.at(sums, labels, points)
        empty = counts == 0
        centroids[~empty] = (sums[~empty] / counts[~empty, None]).astype(np.float32)
        if empty.any():
            error = distances[np.arange(points.shape[0]), labels]
            far = np.argsort(error)[::-1][: int(empty.sum())]
            centroids[empty] = points[far]
    return centroids


def quantize(
    cells: npt.ArrayLike, codebook: FloatArray, *, block: int = 65_536
) -> npt.NDArray[np.uint8]:
    """Nearest code of every cell: (..., D) -> (...) uint8."""
    array = np.asarray(cells, np.float32)
    flat = array.reshape(-1, array.shape[-1])
    labels = np.empty(flat.shape[0], np.uint8)
    for start in range(0, flat.shape[0], block):
        part = flat[start : start + block]
        labels[start : start + block] = _squared_distances(part, codebook).argmin(axis=1)
    return labels.reshape(array.shape[:-1])


def decode(codes: npt.ArrayLike, codebook: FloatArray) -> FloatArray:
    """Codes (...) -> their centroids (..., D)."""
    out: FloatArray = codebook[np.asarray(codes, np.int64)]
    return out


def save_codebook(codebook: FloatArray, directory: Path) -> Path:
    path = directory / CODEBOOK_FILE
    np.save(path, codebook.astype(np.float32))
    return path


def load_codebook(directory: Path) -> FloatArray:
    out: FloatArray = np.load(directory / CODEBOOK_FILE).astype(np.float32)
    return out
