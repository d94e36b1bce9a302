"""Real-time pacing of a fixed-step simulation: how many steps wall time asks for, and lag."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

# Warn at most this often when the simulation keeps falling behind [ns].
_WARN_PERIOD_NS = 2_000_000_000


class RealTimePacer:
    """Counts the fixed steps due by a monotonic time; reports, never hides, falling behind.

    The first `steps_due()` anchors simulated time to the clock. Each later call returns the
    steps that bring simulated time up to the clock. When more than `max_catch_up_s` is due
    (the simulation, or the process running it, was too slow), it returns that many steps,
    counts the event in `behind_count`, adds the dropped time to `dropped_s` and warns: the
    world then runs behind wall time by a known amount rather than silently slower.
    """

    def __init__(self, timestep_s: float, max_catch_up_s: float) -> None:
        self.timestep_ns = round(timestep_s * 1e9)
        self.max_steps = max(1, int(max_catch_up_s / timestep_s))
        self.behind_count = 0
        self.dropped_s = 0.0
        self._sim_ns: int | None = None  # clock reading that simulated time has reached
        self._last_warning_ns: int | None = None

    def steps_due(self, now_ns: int) -> int:
        if self._sim_ns is None:
            self._sim_ns = now_ns
            return 0
        steps = (now_ns - self._sim_ns) // self.timestep_ns
        if steps <= self.max_steps:
            self._sim_ns += max(0, steps) * self.timestep_ns
            return max(0, steps)
        dropped_ns = (steps - self.max_steps) * self.timestep_ns
        self.behind_count += 1
        self.dropped_s += dropped_ns / 1e9
        self._sim_ns += steps * self.timestep_ns
        if self._last_warning_ns is None or now_ns - self._last_warning_ns > _WARN_PERIOD_NS:
            self._last_warning_ns = now_ns
            logger.warning(
                "simulation behind real time: dropped %.3f s (%d times, %.3f s in all)",
                dropped_ns / 1e9,
                self.behind_count,
                self.dropped_s,
            )
        return self.max_steps
