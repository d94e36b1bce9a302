"""Chunk execution: entry row, interpolation, each blend, and every rejection."""

from __future__ import annotations

import numpy as np
import pytest

from vla_runtime.core.chunk_executor import (
    ActionChunk,
    Blend,
    ChunkExecutor,
    ChunkExecutorConfig,
    Interpolation,
)

JOINTS = ("a", "b")
S = 1_000_000_000
T0 = 1_700_000_000 * S  # a capture stamp on the system clock


def executor(**config: object) -> ChunkExecutor:
    return ChunkExecutor(
        ChunkExecutorConfig(**config),  # type: ignore[arg-type]
        JOINTS,
        lower=np.array([-3.0, -3.0]),
        upper=np.array([3.0, 3.0]),
    )


def ramp(start: float, rows: int = 30, rate_hz: float = 30.0, stamp: int = T0) -> ActionChunk:
    """Row i = start + i/100 on joint a (negated on b)."""
    values = start + np.arange(rows) / 100.0
    return ActionChunk.uniform(np.stack([values, -values], axis=1), rate_hz, stamp, JOINTS)


def test_entered_at_the_row_matching_the_observation_age_not_row_0() -> None:
    ex = executor(interpolation="linear", blend="replace")
    now = T0 + int(0.2 * S)  # the policy took 200 ms: rows 0-5 are already in the past
    result = ex.submit(ramp(0.0), now)
    assert result.accepted and result.entry_time_s == pytest.approx(0.2)
    target = ex.target(now)
    assert target is not None
    assert target[0] == pytest.approx(0.06)  # row 6 at 30 Hz = 0.2 s
    assert target[1] == pytest.approx(-0.06)


def test_linear_interpolation_between_rows() -> None:
    ex = executor(interpolation="linear", blend="replace")
    ex.submit(ramp(0.0), T0)
    half_row = T0 + int(S / 60)
    assert ex.target(half_row)[0] == pytest.approx(0.005)  # type: ignore[index]


def test_cubic_interpolation_passes_through_rows_and_is_smooth() -> None:
    rows = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    chunk = ActionChunk.uniform(rows, 10.0, T0, JOINTS)
    for i, expected in enumerate(rows[:, 0]):
        sample = chunk.sample(i / 10.0, Interpolation.CUBIC)
        assert sample is not None and sample[0] == pytest.approx(expected)
    # Finite first differences on a fine grid: no jumps (C1 continuous).
    grid = np.linspace(0.0, 0.3, 301)
    samples = np.array([chunk.sample(float(t), Interpolation.CUBIC)[0] for t in grid])  # type: ignore[index]
    assert np.max(np.abs(np.diff(samples))) < 0.05


def test_chunk_runs_out_then_no_target() -> None:
    ex = executor(blend="replace")
    ex.submit(ramp(0.0, rows=3), T0)
    assert ex.target(T0 + int(0.05 * S)) is not None
    assert ex.target(T0 + int(0.2 * S)) is None  # last row at 2/30 s


def test_replace_switches_at_once() -> None:
    ex = executor(interpolation="linear", blend="replace")
    ex.submit(ramp(0.0), T0)
    ex.submit(ramp(1.0, stamp=T0), T0 + 1)
    assert ex.target(T0 + 1)[0] == pytest.approx(1.0, abs=1e-6)  # type: ignore[index]


def test_crossfade_goes_from_old_to_new_over_n_rows() -> None:
    ex = executor(interpolation="linear", blend="crossfade", crossfade_rows=3)
    ex.submit(ramp(0.0), T0)
    arrival = T0 + int(0.1 * S)
    ex.submit(ramp(1.0, stamp=T0), arrival)
    at_arrival = ex.target(arrival)
    assert at_arrival is not None and at_arrival[0] == pytest.approx(0.03)  # still the old one
    halfway = ex.target(arrival + int(0.05 * S))  # old 0.045, new 1.045, half faded
    assert halfway is not None and halfway[0] == pytest.approx(0.545, abs=0.01)
    done = ex.target(arrival + int(0.11 * S))  # fade of 3 rows = 0.1 s is over
    assert done is not None and done[0] == pytest.approx(1.063)


def test_ensemble_averages_overlapping_chunks() -> None:
    ex = executor(interpolation="linear", blend="ensemble", ensemble_decay=0.0)
    ex.submit(ramp(0.0), T0)
    ex.submit(ramp(1.0, stamp=T0), T0)
    target = ex.target(T0)
    assert target is not None and target[0] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("chunk", "now", "category", "needle"),
    [
        (ramp(0.0, rows=3), T0 + S, "stale", "stale"),
        (ActionChunk.uniform(np.array([[0.0, np.nan]]), 30, T0, JOINTS), T0, "non_finite", "b"),
        (ActionChunk.uniform(np.zeros((4, 3)), 30, T0, ()), T0, "joint_count", "3 joints"),
        (
            ActionChunk.uniform(np.zeros((4, 2)), 30, T0, ("x", "y")),
            T0,
            "joint_names",
            "wrong embodiment",
        ),
        (
            ActionChunk.uniform(np.full((4, 2), 5.0), 30, T0, JOINTS),
            T0,
            "out_of_limits",
            "outside joint a",
        ),
        (
            ActionChunk(np.zeros((2, 2)), np.array([0.0, 0.0]), T0, JOINTS),
            T0,
            "times",
            "increasing",
        ),
        (ramp(0.0, stamp=T0 + 2 * S), T0, "future", "future"),
    ],
)
def test_rejections_are_counted_with_a_reason(
    chunk: ActionChunk, now: int, category: str, needle: str
) -> None:
    ex = executor()
    result = ex.submit(chunk, now)
    assert not result.accepted
    assert result.category == category and needle in result.reason
    assert ex.counts[category] == 1
    assert ex.target(now) is None  # nothing was taken


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        ChunkExecutorConfig(crossfade_rows=0)
    with pytest.raises(ValueError):
        ChunkExecutorConfig(blend="nonsense")  # type: ignore[arg-type]
    assert ChunkExecutorConfig(blend="ensemble").blend == Blend.ENSEMBLE  # type: ignore[arg-type]


def test_columns_in_another_joint_order_are_reordered() -> None:
    ex = executor(interpolation="linear", blend="replace")
    rows = np.array([[1.0, 2.0], [1.0, 2.0]])
    assert ex.submit(ActionChunk.uniform(rows, 30, T0, ("b", "a")), T0).accepted
    target = ex.target(T0)
    assert target is not None and list(target) == [2.0, 1.0]
