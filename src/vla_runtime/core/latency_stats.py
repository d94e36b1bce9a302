"""Latency distributions per stage: HdrHistogram, a rolling window and whole-run totals.

Values are recorded in microseconds (1 µs .. 60 s, 3 significant digits: ~0.1 % error at any
magnitude, constant memory, O(1) record), the way performance_test and CARET report them. The
rolling window is a ring of one-second histograms: a summary merges the slots of the last
`window_s` seconds, so old samples leave the window without being stored one by one. Negative
values (a stamp from a clock ahead of ours) are not latencies: they are counted apart, and values
past the range are clamped to it and counted too. Pure: the caller passes the time.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 60_000_000  # 60 s: anything slower is a stalled stage, clamped and counted
SIGNIFICANT_DIGITS = 3
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
_NS_PER_S = 1_000_000_000


def _histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


@dataclass(frozen=True)
class StageSummary:
    """One distribution's summary, in milliseconds (NaN when there are no samples)."""

    count: int
    rate_hz: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float

    def as_values(self) -> dict[str, str]:
        """Key-values for a DiagnosticStatus (the names `vla-runtime top` reads)."""
        return {
            "p50_ms": f"{self.p50_ms:.3f}",
            "p90_ms": f"{self.p90_ms:.3f}",
            "p99_ms": f"{self.p99_ms:.3f}",
            "p999_ms": f"{self.p999_ms:.3f}",
            "max_ms": f"{self.max_ms:.3f}",
            "count": str(self.count),
            "rate_hz": f"{self.rate_hz:.2f}",
        }


def summarise(histogram: HdrHistogram, duration_s: float) -> StageSummary:
    """Percentiles of `histogram`; rate = count / duration_s."""
    count = int(histogram.get_total_count())
    if count == 0:
        nan = math.nan
        return StageSummary(0, 0.0, nan, nan, nan, nan, nan)
    p50, p90, p99, p999 = (int(histogram.get_value_at_percentile(p)) / 1e3 for p in PERCENTILES)
    return StageSummary(
        count,
        count / duration_s if duration_s > 0 else 0.0,
        p50,
        p90,
        p99,
        p999,
        int(histogram.get_max_value()) / 1e3,
    )


class LatencyStats:
    """A stage's latency distribution over the last `window_s` seconds and the whole run."""

    def __init__(self, window_s: int = 10) -> None:
        if window_s < 1:
            raise ValueError(f"window_s must be >= 1, got {window_s}")
        self.window_s = window_s
        self.total = _histogram()
        self._slots = [_histogram() for _ in range(window_s)]
        self._slot_second = [-1] * window_s
        self.first_ns: int | None = None
        self.negative = 0  # values < 0: the source's clock is ahead of ours
        self.clamped = 0  # values past HIGHEST_US, recorded as HIGHEST_US

    def record(self, latency_ms: float, now_ns: int) -> bool:
        """Add one sample at `now_ns`; False (and counted) when it is negative or not finite."""
        if not math.isfinite(latency_ms) or latency_ms < 0:
            self.negative += 1
            return False
        value_us = max(round(latency_ms * 1e3), LOWEST_US)
        if value_us > HIGHEST_US:
            self.clamped += 1
            value_us = HIGHEST_US
        if self.first_ns is None:
            self.first_ns = now_ns
        second = now_ns // _NS_PER_S
        slot = second % self.window_s
        if self._slot_second[slot] != second:  # a slot from an older lap of the ring
            self._slots[slot].reset()
            self._slot_second[slot] = second
        self._slots[slot].record_value(value_us)
        self.total.record_value(value_us)
        return True

    def window(self, now_ns: int) -> StageSummary:
        """Summary of the samples of the last `window_s` seconds (the current second included)."""
        second = now_ns // _NS_PER_S
        merged = _histogram()
        for slot, slot_second in enumerate(self._slot_second):
            if second - self.window_s < slot_second <= second:
                merged.add(self._slots[slot])
        return summarise(merged, self._span_s(now_ns, self.window_s))

    def whole_run(self, now_ns: int) -> StageSummary:
        """Summary of every sample since the first."""
        return summarise(self.total, self._span_s(now_ns, None))

    def _span_s(self, now_ns: int, window_s: int | None) -> float:
        """Seconds the rate is over: from the first sample (or the window's oldest second)."""
        if self.first_ns is None:
            return 0.0
        start_ns = self.first_ns
        if window_s is not None:
            start_ns = max(start_ns, (now_ns // _NS_PER_S - window_s + 1) * _NS_PER_S)
        return max((now_ns - start_ns) / _NS_PER_S, 1.0)


class PeriodTracker:
    """A periodic stream's intervals against its expected period: errors and overruns.

    An interval longer than `overrun_factor` periods means at least one period was missed (a
    control loop overran, or a publisher stalled).
    """

    def __init__(self, period_s: float, window_s: int = 10, overrun_factor: float = 1.5) -> None:
        if not (period_s > 0 and overrun_factor > 1):
            raise ValueError("period_s must be > 0 and overrun_factor > 1")
        self.period_ns = round(period_s * _NS_PER_S)
        self.overrun_factor = overrun_factor
        self.intervals = LatencyStats(window_s)
        self.errors = LatencyStats(window_s)  # |interval - period|
        self.count = 0
        self.overruns = 0
        self.out_of_order = 0
        self._last_ns: int | None = None

    def record(self, stamp_ns: int, now_ns: int) -> None:
        """A tick stamped `stamp_ns` (the source's clock), seen at `now_ns` (ours)."""
        last, self._last_ns = self._last_ns, stamp_ns
        if last is None:
            return
        interval_ns = stamp_ns - last
        if interval_ns <= 0:
            self.out_of_order += 1
            return
        self.count += 1
        if interval_ns > self.overrun_factor * self.period_ns:
            self.overruns += 1
        self.intervals.record(interval_ns / 1e6, now_ns)
        self.errors.record(abs(interval_ns - self.period_ns) / 1e6, now_ns)

    @property
    def overrun_fraction(self) -> float:
        return self.overruns / self.count if self.count else 0.0


class WindowedRatio:
    """events / trials over the last `window_s` seconds, from two cumulative counters.

    For counters another process keeps (a driver's `overruns` and `ticks`): a counter that goes
    down means the process restarted, and the history starts again.
    """

    def __init__(self, window_s: float) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_ns = round(window_s * _NS_PER_S)
        self._history: deque[tuple[int, int, int]] = deque()

    def record(self, events: int, trials: int, now_ns: int) -> None:
        if self._history and (trials < self._history[-1][2] or events < self._history[-1][1]):
            self._history.clear()
        self._history.append((now_ns, events, trials))
        # Keep one sample at or before the window's start, so the window is fully covered.
        while len(self._history) > 2 and self._history[1][0] <= now_ns - self.window_ns:
            self._history.popleft()

    def ratio(self) -> float:
        """The fraction over the window; NaN without two samples or without trials."""
        if len(self._history) < 2:
            return math.nan
        _, events0, trials0 = self._history[0]
        _, events1, trials1 = self._history[-1]
        trials = trials1 - trials0
        return (events1 - events0) / trials if trials > 0 else math.nan
