"""The safety envelope every command passes through, whatever produced it (DESIGN §4).

Always on, inside the driver, independent of any other node: joint position limits (from the
URDF), a per-tick step limit from the velocity limit, an acceleration limit, and a stopping
rule that slows down early enough to reach a target without overshoot. It clips, never jumps:
a target anywhere (even across the workspace) becomes a smooth, limited motion towards it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class EnvelopeLimits:
    """Per-joint limits, in the arm's joint order.

    Attributes:
        lower, upper: position limits [rad or m] (URDF `<limit lower upper>`).
        max_velocity: [rad/s or m/s] (URDF `<limit velocity>`, usually scaled down).
        max_acceleration: [rad/s² or m/s²] (not in URDFs: from the embodiment config).
    """

    lower: FloatArray
    upper: FloatArray
    max_velocity: FloatArray
    max_acceleration: FloatArray

    def __post_init__(self) -> None:
        arrays = [
            np.asarray(a, dtype=np.float64)
            for a in (self.lower, self.upper, self.max_velocity, self.max_acceleration)
        ]
        if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1:
            raise ValueError("envelope limits need one value per joint in every array")
        if np.any(arrays[0] >= arrays[1]):
            raise ValueError("every joint needs lower < upper")
        if np.any(arrays[2] <= 0) or np.any(arrays[3] <= 0):
            raise ValueError("velocity and acceleration limits must be > 0")
        for name, array in zip(
            ("lower", "upper", "max_velocity", "max_acceleration"), arrays, strict=True
        ):
            object.__setattr__(self, name, array)

    @classmethod
    def from_values(
        cls,
        lower: Sequence[float],
        upper: Sequence[float],
        max_velocity: Sequence[float],
        max_acceleration: Sequence[float],
        velocity_scale: float = 1.0,
    ) -> EnvelopeLimits:
        """Limits with the velocity limits scaled (e.g. 0.5 while commissioning an arm)."""
        if not 0 < velocity_scale <= 1:
            raise ValueError(f"velocity_scale must be in (0, 1], got {velocity_scale}")
        return cls(
            np.asarray(lower, dtype=np.float64),
            np.asarray(upper, dtype=np.float64),
            np.asarray(max_velocity, dtype=np.float64) * velocity_scale,
            np.asarray(max_acceleration, dtype=np.float64),
        )

    @property
    def joints(self) -> int:
        return int(self.lower.shape[0])


@dataclass
class SafetyEnvelope:
    """Turns targets into commands one control period apart, within the limits."""

    limits: EnvelopeLimits
    period_s: float
    _command: FloatArray | None = None
    _velocity: FloatArray = field(default_factory=lambda: np.zeros(0))
    limited_ticks: int = 0

    def __post_init__(self) -> None:
        if self.period_s <= 0:
            raise ValueError(f"period_s must be > 0, got {self.period_s}")

    def reset(self, position: FloatArray) -> None:
        """Seed from the measured position (activation: no jump), at rest."""
        checked = self.check(position)
        if checked:
            raise ValueError(f"cannot seed the envelope: {checked}")
        self._command = np.clip(
            np.asarray(position, dtype=np.float64), self.limits.lower, self.limits.upper
        )
        self._velocity = np.zeros(self.limits.joints)

    @property
    def command(self) -> FloatArray:
        """The last command sent (the pose HOLD keeps)."""
        if self._command is None:
            raise RuntimeError("the envelope was not seeded: call reset(measured) first")
        command: FloatArray = self._command.copy()
        return command

    @property
    def max_step(self) -> FloatArray:
        """The largest per-tick change of a command [rad or m]."""
        step: FloatArray = self.limits.max_velocity * self.period_s
        return step

    def check(self, target: FloatArray) -> str:
        """Why `target` cannot be used at all ('' when it can)."""
        array = np.asarray(target, dtype=np.float64)
        if array.shape != (self.limits.joints,):
            return f"expected {self.limits.joints} joint values, got shape {array.shape}"
        if not np.all(np.isfinite(array)):
            return "target contains NaN or Inf"
        return ""

    def step(self, target: FloatArray) -> FloatArray:
        """The next command towards `target`: position-clipped, velocity- and
        acceleration-limited, slowing down in time to stop at the target."""
        if self._command is None:
            raise RuntimeError("the envelope was not seeded: call reset(measured) first")
        problem = self.check(target)
        if problem:
            raise ValueError(problem)
        limits, dt = self.limits, self.period_s
        goal = np.clip(target, limits.lower, limits.upper)
        distance = goal - self._command
        # Fastest speed from which we can still stop at the goal braking by a·dt per tick:
        # the discrete braking distance is v²/(2a) + v·dt/2 (the continuous √(2ad) overshoots).
        a = limits.max_acceleration
        stop_speed = a * (np.sqrt((dt / 2.0) ** 2 + 2.0 * np.abs(distance) / a) - dt / 2.0)
        speed = np.minimum(np.minimum(np.abs(distance) / dt, limits.max_velocity), stop_speed)
        wanted = np.sign(distance) * speed
        dv = limits.max_acceleration * dt
        velocity = np.clip(wanted, self._velocity - dv, self._velocity + dv)
        command = np.clip(self._command + velocity * dt, limits.lower, limits.upper)
        step = command - self._command
        # Never more than one velocity-limited step, whatever the arithmetic above did.
        step = np.clip(step, -self.max_step, self.max_step)
        command = self._command + step
        if not np.allclose(command, goal, atol=1e-12):
            self.limited_ticks += 1
        self._velocity = step / dt
        self._command = command
        result: FloatArray = command.copy()
        return result
