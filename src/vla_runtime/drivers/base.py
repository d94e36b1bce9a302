"""The hardware side of a driver: one small interface per arm, composed for bimanual rigs.

An `ArmDriver` knows its bus and nothing about modes, chunks or safety (those are in `core/`).
Lifecycle, as ros2_control hardware components: `connect()` opens the bus and checks every
device answers (configure), `enable()` turns torque on (activate), `disable()` turns it off or
damps (deactivate), `disconnect()` closes the bus. No I/O happens in `__init__`.

Units: revolute joints in radians, prismatic joints in metres, in the embodiment's joint order.
A gripper is an ordinary joint whose unit and limits its URDF declares.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class DriverError(RuntimeError):
    """A device problem the operator must act on (wrong port, device absent, bus off)."""


class DriverTimeout(DriverError):
    """The bus did not answer within the tick, even after the driver's retries."""


@dataclass(frozen=True)
class JointReading:
    """Measured joint state of one arm at one instant.

    Attributes:
        positions: (joints,) measured positions [rad or m].
        velocities: (joints,) measured velocities [rad/s or m/s], or None when the bus has none.
        efforts: (joints,) measured efforts [N·m or N], or None.
        stamp_ns: system time of the read [ns since the epoch], for message stamps.
    """

    positions: FloatArray
    velocities: FloatArray | None = None
    efforts: FloatArray | None = None
    stamp_ns: int = 0


class ArmDriver(ABC):
    """One arm's bus: read measured joints, write commanded joints."""

    @property
    @abstractmethod
    def joint_names(self) -> tuple[str, ...]:
        """Joint names in command order (identical to the URDF and the embodiment config)."""

    @abstractmethod
    def connect(self) -> None:
        """Open the bus and check every device answers; raise DriverError naming the port."""

    @abstractmethod
    def enable(self) -> None:
        """Start holding position (torque on / motors enabled)."""

    @abstractmethod
    def disable(self) -> None:
        """Stop driving the joints (torque off, or the motors' damping mode)."""

    @abstractmethod
    def read(self) -> JointReading:
        """Measured state now; raise DriverTimeout when the bus failed after retries."""

    @abstractmethod
    def write(self, positions: FloatArray) -> None:
        """Send position targets (already inside the safety envelope) to every joint."""

    @abstractmethod
    def disconnect(self) -> None:
        """Close the bus. Safe to call twice."""


class MultiArmDriver(ArmDriver):
    """Several arms as one (bimanual = two single-arm drivers): joints concatenated in order."""

    def __init__(self, arms: Sequence[ArmDriver]) -> None:
        if not arms:
            raise ValueError("MultiArmDriver needs at least one arm")
        self._arms = tuple(arms)
        self._splits = np.cumsum([len(arm.joint_names) for arm in self._arms])[:-1]

    @property
    def arms(self) -> tuple[ArmDriver, ...]:
        return self._arms

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(name for arm in self._arms for name in arm.joint_names)

    def connect(self) -> None:
        connected: list[ArmDriver] = []
        try:
            for arm in self._arms:
                arm.connect()
                connected.append(arm)
        except DriverError:
            for arm in connected:
                arm.disconnect()
            raise

    def enable(self) -> None:
        for arm in self._arms:
            arm.enable()

    def disable(self) -> None:
        for arm in self._arms:
            arm.disable()

    def read(self) -> JointReading:
        readings = [arm.read() for arm in self._arms]

        def join(parts: list[FloatArray | None]) -> FloatArray | None:
            if any(part is None for part in parts):
                return None
            return np.concatenate([p for p in parts if p is not None])

        return JointReading(
            positions=np.concatenate([r.positions for r in readings]),
            velocities=join([r.velocities for r in readings]),
            efforts=join([r.efforts for r in readings]),
            stamp_ns=max(r.stamp_ns for r in readings) or time.time_ns(),
        )

    def write(self, positions: FloatArray) -> None:
        for arm, part in zip(self._arms, np.split(positions, self._splits), strict=True):
            arm.write(part)

    def disconnect(self) -> None:
        for arm in self._arms:
            arm.disconnect()
