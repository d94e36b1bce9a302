"""Fixed-grid pacing: no drift, overruns skip missed deadlines, statistics."""

from __future__ import annotations

from vla_runtime.core.loop_timing import RateKeeper


class FakeClock:
    def __init__(self) -> None:
        self.now_ns = 1_000_000_000

    def __call__(self) -> int:
        self.now_ns += 1_000  # every reading costs 1 µs
        return self.now_ns

    def sleep(self, seconds: float) -> None:
        self.now_ns += int(seconds * 1e9)


def keeper(clock: FakeClock, period_s: float = 0.005) -> RateKeeper:
    return RateKeeper(period_s, window=100, spin_s=0.0, clock_ns=clock, sleep=clock.sleep)


def test_ticks_stay_on_the_grid_without_drift() -> None:
    clock = FakeClock()
    rate = keeper(clock)
    rate.start()
    start = clock.now_ns
    for _ in range(1000):
        timing = rate.wait()
        clock.now_ns += 1_000_000  # 1 ms of work per tick
    assert timing.deadline_ns == start + 1000 * 5_000_000
    assert rate.overruns == 0
    summary = rate.summary()
    assert summary.ticks == 1000 and summary.period_error_p99_ms < 0.01


def test_a_long_tick_is_an_overrun_and_skips_instead_of_bursting() -> None:
    clock = FakeClock()
    rate = keeper(clock)
    rate.start()
    rate.wait()
    clock.now_ns += 12_000_000  # 12 ms of work in a 5 ms loop
    timing = rate.wait()
    assert timing.overrun and rate.overruns == 1
    after = rate.wait()
    assert after.period_ns >= 4_900_000  # the next tick is a full period later, no burst
    summary = rate.summary()
    assert summary.overrun_fraction == 1 / 3
    assert summary.period_error_max_ms > 5.0
