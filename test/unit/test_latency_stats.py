"""Stage statistics: HdrHistogram percentiles, the rolling window, period and ratio trackers."""

from __future__ import annotations

import math

import pytest

from vla_runtime.core.latency_stats import (
    HIGHEST_US,
    LatencyStats,
    PeriodTracker,
    WindowedRatio,
)

S = 1_000_000_000


def test_percentiles_match_the_samples_within_hdr_precision() -> None:
    stats = LatencyStats(window_s=10)
    for i in range(1, 1001):  # 1..1000 ms, 100 per second over 10 s
        stats.record(float(i), 100 * S + (i - 1) * S // 100)
    summary = stats.window(110 * S - 1)
    assert summary.count == 1000
    assert summary.p50_ms == pytest.approx(500, rel=2e-3)
    assert summary.p90_ms == pytest.approx(900, rel=2e-3)
    assert summary.p99_ms == pytest.approx(990, rel=2e-3)
    assert summary.p999_ms == pytest.approx(999, rel=2e-3)
    assert summary.max_ms == pytest.approx(1000, rel=2e-3)
    assert summary.rate_hz == pytest.approx(100.0, rel=0.02)
    values = summary.as_values()
    assert set(values) == {"p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "count", "rate_hz"}


def test_old_samples_leave_the_window_but_stay_in_the_totals() -> None:
    stats = LatencyStats(window_s=5)
    for second in range(5):
        stats.record(100.0, second * S)
    for second in range(5, 10):
        stats.record(1.0, second * S)
    window = stats.window(9 * S + S // 2)
    assert window.count == 5 and window.max_ms == pytest.approx(1.0, rel=1e-2)
    total = stats.whole_run(9 * S)
    assert total.count == 10 and total.max_ms == pytest.approx(100.0, rel=1e-2)
    # The ring's slots from an older lap are reset, not merged.
    stats.record(7.0, 20 * S)
    assert stats.window(20 * S).count == 1


def test_empty_negative_and_out_of_range_samples() -> None:
    stats = LatencyStats(window_s=3)
    empty = stats.window(0)
    assert empty.count == 0 and math.isnan(empty.p99_ms)
    assert empty.as_values()["p99_ms"] == "nan"
    assert not stats.record(-2.0, S)  # a stamp from the future: counted, not a latency
    assert not stats.record(math.nan, S)
    assert stats.negative == 2
    assert stats.record(120_000.0, S)  # two minutes: clamped to the range and counted
    assert stats.clamped == 1
    assert stats.window(S).max_ms == pytest.approx(HIGHEST_US / 1e3, rel=1e-3)
    with pytest.raises(ValueError):
        LatencyStats(window_s=0)


def test_period_tracker_counts_overruns_and_errors() -> None:
    tracker = PeriodTracker(period_s=0.01, window_s=5)
    stamp = 0
    for i in range(100):
        stamp += 10_000_000 if i != 50 else 30_000_000  # one tick 20 ms late
        tracker.record(stamp, stamp)
    assert tracker.count == 99 and tracker.overruns == 1
    assert tracker.overrun_fraction == pytest.approx(1 / 99)
    errors = tracker.errors.window(stamp)
    assert errors.max_ms == pytest.approx(20.0, rel=1e-2)
    assert errors.p50_ms < 0.01
    tracker.record(stamp - 1, stamp)  # out of order
    assert tracker.out_of_order == 1


def test_windowed_ratio_from_cumulative_counters() -> None:
    ratio = WindowedRatio(window_s=5.0)
    assert math.isnan(ratio.ratio())
    for second in range(10):  # 200 ticks a second; overruns only in the first 3 s
        ratio.record(min(second, 3) * 20, second * 200, second * S)
    assert ratio.ratio() == pytest.approx(0.0)
    ratio.record(100, 2200, 11 * S)  # 40 overruns in 200 ticks
    assert ratio.ratio() > 0.0
    ratio.record(0, 10, 12 * S)  # counters went down: the process restarted
    assert math.isnan(ratio.ratio())
