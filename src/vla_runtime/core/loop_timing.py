"""Fixed-rate loop pacing and its statistics, on the monotonic clock.

`RateKeeper.wait()` sleeps until the next tick of a fixed grid (no drift: deadlines are
start + k·period, not "now + period"), reports how late the tick started and counts overruns
(the tick's work ran past the next deadline, so that deadline was skipped). Period errors go to
a ring buffer for p50/p99 and to running totals, so a driver can publish them as diagnostics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class TickTiming:
    """Timing of one tick.

    Attributes:
        index: tick number since start (skipped deadlines count).
        deadline_ns: when the tick should have started [monotonic ns].
        started_ns: when it did start [monotonic ns].
        period_ns: time since the previous tick started [ns].
        overrun: the previous tick's work made us miss at least one deadline.
    """

    index: int
    deadline_ns: int
    started_ns: int
    period_ns: int
    overrun: bool


@dataclass(frozen=True)
class PeriodSummary:
    ticks: int
    overruns: int
    period_error_p50_ms: float
    period_error_p99_ms: float
    period_error_max_ms: float
    late_start_p99_ms: float

    @property
    def overrun_fraction(self) -> float:
        return self.overruns / self.ticks if self.ticks else 0.0


@dataclass
class RateKeeper:
    """Keeps a loop on a fixed grid of `period_s`."""

    period_s: float
    window: int = 2048
    spin_s: float = 0.0002  # busy-wait this last bit: time.sleep overshoots by ~50-100 µs
    clock_ns: Callable[[], int] = time.monotonic_ns
    sleep: Callable[[float], None] = time.sleep
    ticks: int = 0
    overruns: int = 0
    _start_ns: int = 0
    _index: int = 0
    _last_ns: int = 0
    _errors: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    _late: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        if self.period_s <= 0:
            raise ValueError(f"period_s must be > 0, got {self.period_s}")
        self.period_ns = round(self.period_s * 1e9)
        self._errors = np.zeros(self.window, dtype=np.int64)
        self._late = np.zeros(self.window, dtype=np.int64)

    def start(self) -> None:
        self._start_ns = self._last_ns = self.clock_ns()
        self._index = 0

    def wait(self) -> TickTiming:
        """Sleep until the next deadline and return the tick's timing."""
        if self._start_ns == 0:
            self.start()
        now = self.clock_ns()
        self._index += 1
        deadline = self._start_ns + self._index * self.period_ns
        overrun = now > deadline
        if overrun:  # skip the missed deadlines instead of bursting to catch up
            self._index = (now - self._start_ns) // self.period_ns + 1
            deadline = self._start_ns + self._index * self.period_ns
            self.overruns += 1
        remaining_s = (deadline - now) / 1e9 - self.spin_s
        if remaining_s > 0:
            self.sleep(remaining_s)
        while (now := self.clock_ns()) < deadline:
            pass
        period = now - self._last_ns
        self._last_ns = now
        slot = self.ticks % self.window
        self._errors[slot] = period - self.period_ns
        self._late[slot] = now - deadline
        self.ticks += 1
        return TickTiming(self._index, deadline, now, period, overrun)

    def summary(self) -> PeriodSummary:
        """Statistics over the last `window` ticks (overruns over the whole run)."""
        count = min(self.ticks, self.window)
        if count == 0:
            return PeriodSummary(0, 0, 0.0, 0.0, 0.0, 0.0)
        errors = np.abs(self._errors[:count]) / 1e6
        late = self._late[:count] / 1e6
        return PeriodSummary(
            ticks=self.ticks,
            overruns=self.overruns,
            period_error_p50_ms=float(np.percentile(errors, 50)),
            period_error_p99_ms=float(np.percentile(errors, 99)),
            period_error_max_ms=float(errors.max()),
            late_start_p99_ms=float(np.percentile(late, 99)),
        )
