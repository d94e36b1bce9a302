"""MolmoThink: change detector, depth-token cache and their state machine (core, no middleware)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from vla_runtime.core.change_detector import (
    CELL_PX,
    CELLS,
    DEFAULT_THRESHOLD,
    ChangeDetector,
    ChangeDetectorConfig,
    FrameError,
    cell_similarity,
    frame_cells,
)
from vla_runtime.core.depth_cache import DepthCache, DepthCacheError
from vla_runtime.core.think import MolmoThink, ThinkConfig

MS = 1_000_000
Frame = npt.NDArray[np.uint8]


def textured(seed: int = 0, size: tuple[int, int] = (480, 640)) -> Frame:
    """A frame with texture in every cell (a table seen from above, roughly)."""
    rng = np.random.default_rng(seed)
    return rng.integers(40, 215, (*size, 3), dtype=np.uint8)


def paint(frame: Frame, row: int, col: int, rgb: tuple[int, int, int]) -> Frame:
    """Fill one cell of a 320x320 frame."""
    out = frame.copy()
    out[row * CELL_PX : (row + 1) * CELL_PX, col * CELL_PX : (col + 1) * CELL_PX] = rgb
    return out


def codes(value: int) -> Frame:
    return np.full((10, 10), value, np.uint8)


def primed(config: ThinkConfig | None = None, frame: Frame | None = None) -> MolmoThink:
    """A MolmoThink whose cache holds code 5 for every cell of `frame` (stamp 1 ms)."""
    think = MolmoThink(config)
    scene = think.on_frame(1 * MS, textured() if frame is None else frame)
    assert scene.changed.all() and scene.full_refresh  # start: full refresh
    assert think.on_depth_tokens(1 * MS, codes(5)) == CELLS
    return think


# -- detector ---------------------------------------------------------------------------------


def test_cells_are_the_320x320_resize_cut_row_major() -> None:
    frame = np.zeros((320, 320, 3), np.uint8)
    frame[32:64, 64:96] = (1, 2, 3)  # cell (row 1, col 2)
    cells = frame_cells(frame)
    assert cells.shape == (100, 3072) and cells.dtype == np.uint8
    assert np.flatnonzero(cells.any(axis=1)).tolist() == [12]
    assert cells[12, :3].tolist() == [1, 2, 3]
    assert frame_cells(textured(size=(480, 640))).shape == (100, 3072)  # any size is resized


def test_similarity_is_cosine_and_zero_patches_count_as_equal() -> None:
    a = frame_cells(textured(1, (320, 320)))
    assert np.allclose(cell_similarity(a, a), 1.0, atol=1e-6)
    # Cosine ignores a uniform scale of a cell's values (as released).
    assert np.allclose(cell_similarity(a // 2 * 2, (a // 2 * 2) // 2), 1.0, atol=1e-6)
    zero = np.zeros_like(a)
    assert (cell_similarity(zero, a) == 1.0).all() and (cell_similarity(a, zero) == 1.0).all()
    b = frame_cells(textured(2, (320, 320)))
    assert (cell_similarity(a, b) < DEFAULT_THRESHOLD).all()


@pytest.mark.parametrize(
    "bad", [np.zeros((480, 640), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3))]
)
def test_frames_that_are_not_rgb8_are_refused(bad: npt.NDArray[np.generic]) -> None:
    with pytest.raises(FrameError, match="HxWx3 uint8"):
        frame_cells(bad)  # type: ignore[arg-type]


def test_static_scene_flags_nothing_after_the_first_commit() -> None:
    think = primed()
    for k in range(2, 6):
        scene = think.on_frame(k * MS, textured())
        assert not scene.changed.any() and (scene.codes == 5).all()
    assert think.stats.full_refreshes == 1


def test_sensor_noise_stays_below_the_threshold() -> None:
    base = textured()
    think = primed(frame=base)
    rng = np.random.default_rng(3)
    noisy = np.clip(base + rng.normal(0, 2, base.shape), 0, 255).astype(np.uint8)
    assert not think.on_frame(2 * MS, noisy).changed.any()


def test_a_global_change_flags_every_cell() -> None:
    think = primed()
    assert think.on_frame(2 * MS, textured(seed=9)).changed.all()


def test_a_local_change_flags_only_its_cells() -> None:
    base = textured(size=(320, 320))
    think = primed(frame=base)
    moved = paint(paint(base, 3, 4, (200, 20, 20)), 3, 5, (200, 20, 20))
    scene = think.on_frame(2 * MS, moved)
    assert sorted(zip(*np.nonzero(scene.changed), strict=True)) == [(3, 4), (3, 5)]
    assert scene.similarity[3, 4] < DEFAULT_THRESHOLD <= scene.similarity[0, 0]


def test_slow_drift_is_caught_against_the_reference_not_the_previous_frame() -> None:
    base = textured(size=(320, 320))
    think = primed(frame=base)
    target = paint(base, 6, 1, (250, 250, 30))
    steps = 40
    flagged_at = None
    previous = base
    for k in range(1, steps + 1):
        frame = (base + (target.astype(np.float64) - base) * k / steps).astype(np.uint8)
        # Each step alone is invisible to the released frame-to-frame rule ...
        step_similarity = cell_similarity(frame_cells(frame), frame_cells(previous))
        assert step_similarity[61] >= DEFAULT_THRESHOLD
        previous = frame
        scene = think.on_frame((k + 1) * MS, frame)
        if scene.changed[6, 1] and flagged_at is None:
            flagged_at = k
        assert scene.changed.sum() <= 1
    # ... but the drift adds up against the cell's reference and is flagged midway.
    assert flagged_at is not None and flagged_at < steps


def test_hysteresis_keeps_a_flag_until_the_cell_is_clearly_back() -> None:
    detector = ChangeDetector(ChangeDetectorConfig(threshold=0.99, hysteresis=0.005))
    valid = np.ones(CELLS, np.bool_)
    similarity = np.ones(CELLS, np.float32)
    similarity[0] = 0.98
    assert detector.classify(similarity, valid)[0]
    similarity[0] = 0.992  # above the threshold, inside the band: still flagged
    assert detector.classify(similarity, valid)[0]
    similarity[0] = 0.996  # clearly back
    assert not detector.classify(similarity, valid)[0]
    plain = ChangeDetector(ChangeDetectorConfig(threshold=0.99))
    similarity[0] = 0.98
    plain.classify(similarity, valid)
    similarity[0] = 0.992
    assert not plain.classify(similarity, valid)[0]


def test_a_large_changed_fraction_forces_a_full_refresh() -> None:
    base = textured(size=(320, 320))
    think = primed(ThinkConfig(ChangeDetectorConfig(full_refresh_fraction=0.3)), base)
    partial = base.copy()
    partial[:96] = (200, 20, 20)  # three of ten rows: 30 % of the cells
    assert think.on_frame(2 * MS, partial).full_refresh
    few = paint(base, 9, 9, (0, 255, 0))
    assert think.on_frame(3 * MS, few).changed.sum() == 1


def test_periodic_full_refresh_lasts_until_a_full_grid_is_committed() -> None:
    think = primed(ThinkConfig(ChangeDetectorConfig(refresh_every=2)))
    for k in (2, 3):
        assert not think.on_frame(k * MS, textured()).changed.any()
        think.on_depth_tokens(k * MS, codes(5))
    assert think.on_frame(4 * MS, textured()).full_refresh  # two commits since the last full
    assert think.on_frame(5 * MS, textured()).full_refresh  # until answered
    assert think.on_depth_tokens(5 * MS, codes(6)) == CELLS
    scene = think.on_frame(6 * MS, textured())
    assert not scene.changed.any() and (scene.codes == 6).all()


# -- cache ------------------------------------------------------------------------------------


def test_commit_updates_only_the_cells_flagged_on_its_frame() -> None:
    base = textured(size=(320, 320))
    think = primed(frame=base)
    moved = paint(base, 2, 2, (10, 200, 10))
    assert think.on_frame(2 * MS, moved).changed.sum() == 1
    assert think.on_depth_tokens(2 * MS, codes(9)) == 1  # the policy's grid: all 9s
    cache = think.cache
    assert cache.codes[22] == 9 and (np.delete(cache.codes, 22) == 5).all()
    assert cache.reference_stamp_ns[22] == 2 * MS and cache.reference_stamp_ns[0] == 1 * MS
    assert np.array_equal(cache.reference[22], frame_cells(moved)[22])
    scene = think.on_frame(3 * MS, moved)  # the new reference: nothing changed now
    assert not scene.changed.any() and scene.codes[2, 2] == 9


def test_late_tokens_never_clear_a_flag_against_the_wrong_reference() -> None:
    base = textured(size=(320, 320))
    think = primed(frame=base)
    first = paint(base, 4, 4, (255, 0, 0))
    second = paint(base, 4, 4, (0, 0, 255))
    assert think.on_frame(2 * MS, first).changed[4, 4]  # the policy works on this one ...
    assert think.on_frame(3 * MS, second).changed[4, 4]  # ... while the cell changes again
    think.on_depth_tokens(2 * MS, codes(11))  # tokens of frame 2 arrive late
    assert np.array_equal(think.cache.reference[44], frame_cells(first)[44])
    assert think.on_frame(4 * MS, second).changed[4, 4]  # still differs from its reference
    # An older grid arriving after a newer one does not move the reference back.
    think.on_frame(5 * MS, second)
    think.on_depth_tokens(5 * MS, codes(12))
    assert think.on_depth_tokens(3 * MS, codes(13)) == 0
    assert think.cache.codes[44] == 12 and think.stats.stale_cells == 1


@pytest.mark.parametrize(
    ("stamp_ns", "grid", "match"),
    [
        (1 * MS, np.zeros((8, 10), np.uint8), "10x10"),
        (1 * MS, np.zeros((10, 10), np.int32), "uint8"),
        (1 * MS, np.full((10, 10), 128, np.uint8), "0..127"),
        (99 * MS, codes(3), "match no buffered frame"),
    ],
)
def test_bad_grids_are_refused_and_change_nothing(
    stamp_ns: int, grid: npt.NDArray[np.generic], match: str
) -> None:
    think = MolmoThink()
    think.on_frame(1 * MS, textured())
    with pytest.raises(DepthCacheError, match=match):
        think.on_depth_tokens(stamp_ns, grid)
    assert not think.cache.valid.any() and think.stats.rejected == 1
    assert think.on_frame(2 * MS, textured()).full_refresh  # still waiting for a full grid


def test_frames_fall_out_of_the_ring() -> None:
    cache = DepthCache(history=3)
    cells = frame_cells(textured(size=(320, 320)))
    for k in range(5):
        cache.remember(k * MS, cells, np.ones(CELLS, np.bool_))
    assert cache.buffered_stamps() == (2 * MS, 3 * MS, 4 * MS)
    with pytest.raises(DepthCacheError, match="older than the 3 frames"):
        cache.commit(1 * MS, codes(1))


def test_reset_empties_the_cache_and_refuses_tokens_from_before_it() -> None:
    think = primed()
    think.on_frame(2 * MS, textured())
    think.reset()
    with pytest.raises(DepthCacheError, match=r"before a reset|none buffered"):
        think.on_depth_tokens(2 * MS, codes(7))
    scene = think.on_frame(3 * MS, textured())
    assert scene.full_refresh and (scene.codes == 0).all()
    assert think.on_depth_tokens(3 * MS, codes(7)) == CELLS
    assert not think.on_frame(4 * MS, textured()).changed.any()


def test_diagnostics_report_cache_age_per_cell() -> None:
    think = primed()
    values = think.diagnostics(now_ns=2_001 * MS)
    ages = values["cache_age_s"].split()
    assert len(ages) == CELLS and set(ages) == {"2.0"}
    assert values["cells_without_code"] == "0" and values["commits"] == "1"
    fresh = MolmoThink().diagnostics(now_ns=0)
    assert set(fresh["cache_age_s"].split()) == {"-"} and fresh["cells_without_code"] == "100"


def test_invalid_configs_name_the_field() -> None:
    with pytest.raises(ValueError, match="threshold"):
        ChangeDetectorConfig(threshold=1.5)
    with pytest.raises(ValueError, match="refresh_every"):
        ChangeDetectorConfig(refresh_every=-1)
    with pytest.raises(ValueError, match="history"):
        DepthCache(history=0)
