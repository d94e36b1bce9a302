"""When the recurrent-depth head stops iterating: convergence, min/max, and a deadline.

Upstream RD-VLA stops when the mean squared change between consecutive decoded chunks falls
below 1e-3, checked from iteration 2 on, capped at 32 [rd-vla.md §3.1]. A robot also has a
deadline: with a time budget, the head stops *before* an iteration that would not fit, using a
running estimate of the iteration cost, and returns the chunk it has (the coda decodes every
iteration's state). At least one iteration always runs; the deadline may cut below
`min_iterations`, which only gates the convergence test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class StopRule:
    threshold: float = 1.0e-3
    min_iterations: int = 2
    max_iterations: int = 32

    def __post_init__(self) -> None:
        if not 1 <= self.min_iterations <= self.max_iterations:
            raise ValueError(
                f"need 1 <= min_iterations ({self.min_iterations}) <= max_iterations "
                f"({self.max_iterations})"
            )
        if not self.threshold >= 0.0:
            raise ValueError(f"threshold must be >= 0, got {self.threshold}")

    def decide(
        self,
        iterations: int,
        residual: float,
        elapsed_s: float,
        budget_s: float | None,
        next_cost_s: float,
    ) -> str | None:
        """Why to stop after `iterations` iterations, or None to run another one."""
        if iterations >= self.max_iterations:
            return "max_iterations"
        if iterations >= self.min_iterations and residual < self.threshold:
            return "converged"
        if budget_s is not None and iterations >= 1 and elapsed_s + next_cost_s > budget_s:
            return "deadline"
        return None


class IterationCostEstimator:
    """Running estimate of one iteration's wall time: smoothed mean + 2 x smoothed deviation.

    The deviation term (as TCP's retransmission timer) keeps the deadline stop on the safe side
    when iteration times jitter. It persists across queries, so the first iteration of a query
    is already predicted.
    """

    def __init__(self, gain: float = 0.25) -> None:
        if not 0.0 < gain <= 1.0:
            raise ValueError("gain must be in (0, 1]")
        self.gain = gain
        self.mean_s = math.nan
        self.deviation_s = 0.0

    def update(self, cost_s: float) -> None:
        if math.isnan(self.mean_s):
            self.mean_s = cost_s
            self.deviation_s = cost_s / 2.0
            return
        error = cost_s - self.mean_s
        self.mean_s += self.gain * error
        self.deviation_s += self.gain * (abs(error) - self.deviation_s)

    def estimate_s(self) -> float:
        """Predicted cost of the next iteration; 0 before the first measurement."""
        if math.isnan(self.mean_s):
            return 0.0
        return self.mean_s + 2.0 * self.deviation_s

    def reset(self) -> None:
        self.mean_s = math.nan
        self.deviation_s = 0.0


def chunk_change(
    previous: npt.NDArray[np.float32] | None,
    current: npt.NDArray[np.float32],
    mask: npt.NDArray[np.bool_],
) -> float:
    """Mean squared change over the valid action dims; NaN for the first chunk."""
    if previous is None:
        return math.nan
    diff = (current - previous)[..., mask]
    return float(np.mean(np.square(diff, dtype=np.float64)))
