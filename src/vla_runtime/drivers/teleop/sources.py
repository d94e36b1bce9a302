"""Teleop source interface, its configuration and mapping, and the two leader-arm sources.

See the package docstring (`vla_runtime.drivers.teleop`) for the parameters.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vla_runtime.drivers.base import ArmDriver, DriverError, FloatArray
from vla_runtime.drivers.embodiment import driver_parameters
from vla_runtime.drivers.registry import build_driver
from vla_runtime.drivers.so100.calibration import CENTRE_TICKS, RAD_PER_TICK
from vla_runtime.drivers.so100.dynamixel_bus import DynamixelBus


class TeleopConfigError(ValueError):
    """Teleop parameters that cannot work; the message names the parameter and the fix."""


class TeleopSource(ABC):
    """Where teleop targets come from. No I/O in `__init__`; `connect()` before `read()`."""

    @property
    @abstractmethod
    def joint_names(self) -> tuple[str, ...]:
        """The follower's joint names, the order of `read()`."""

    @abstractmethod
    def connect(self) -> None:
        """Open the device; raise DriverError naming the port when it is absent."""

    @abstractmethod
    def read(self) -> FloatArray:
        """(joints,) targets now, follower order [rad or m]; DriverError on a bus fault."""

    @abstractmethod
    def disconnect(self) -> None:
        """Close the device. Safe to call twice."""

    @property
    def warnings(self) -> tuple[str, ...]:
        """Things the node should log once (e.g. an uncalibrated leader)."""
        return ()

    @property
    def instructions(self) -> str:
        """What the operator needs to know to use the source (logged once at start)."""
        return ""


@dataclass(frozen=True)
class TeleopConfig:
    """What every source shares: which source, how fast, and the follower it drives."""

    source: str  # a TELEOP_SOURCES key
    rate_hz: float  # read (and publish) rate; the driver wants targets well inside its timeout
    embodiment: str  # the follower's registry key
    joint_names: tuple[str, ...]  # the follower's command order

    def __post_init__(self) -> None:
        if not 1.0 <= self.rate_hz <= 1000.0:
            raise TeleopConfigError(f"rate_hz {self.rate_hz} is outside 1..1000 Hz")
        if not self.joint_names:
            raise TeleopConfigError(
                "joint_names is empty; pass the follower's config/embodiments/<name>.yaml"
            )

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> TeleopConfig:
        for key in ("embodiment", "joint_names"):
            if key not in parameters:
                raise TeleopConfigError(
                    f"missing parameter {key!r}; pass the follower's parameter file "
                    "(config/embodiments/<name>.yaml) with --params-file"
                )
        return cls(
            source=str(parameters.get("source", "leader_arm")),
            rate_hz=float(parameters.get("rate_hz", 100.0)),
            embodiment=str(parameters["embodiment"]),
            joint_names=tuple(str(name) for name in parameters["joint_names"]),
        )


# -- mapping --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JointMapping:
    """Leader joint i → follower joint i: `follower = scale · leader + offset`, per joint.

    A mirrored joint is scale −1, a different zero an offset, a gripper whose leader trigger
    spans another range a scale and an offset: data, never a branch per robot.
    """

    scale: FloatArray  # (joints,)
    offset: FloatArray  # (joints,) [rad or m]

    def apply(self, leader: FloatArray) -> FloatArray:
        result: FloatArray = self.scale * leader + self.offset
        return result

    @classmethod
    def from_parameters(
        cls, joint_names: Sequence[str], parameters: Mapping[str, Any], prefix: str = "leader."
    ) -> JointMapping:
        count = len(joint_names)
        return cls(
            _per_joint(parameters.get("scale", 1.0), count, f"{prefix}scale", joint_names),
            _per_joint(parameters.get("offset", 0.0), count, f"{prefix}offset", joint_names),
        )


def _per_joint(value: Any, count: int, name: str, joint_names: Sequence[str]) -> FloatArray:
    """One finite number for every joint (a scalar applies to all)."""
    try:
        values = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TeleopConfigError(f"{name} must be numbers, got {value!r}") from None
    if values.ndim == 0:
        values = np.full(count, float(values))
    if values.shape != (count,) or not np.all(np.isfinite(values)):
        raise TeleopConfigError(
            f"{name} needs {count} finite values, one per follower joint "
            f"({', '.join(joint_names)}), got {value!r}"
        )
    return values


def _subtree(parameters: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    head = prefix + "."
    return {key[len(head) :]: value for key, value in parameters.items() if key.startswith(head)}


def _reject_unknown(parameters: Mapping[str, Any], known: Sequence[str], prefix: str) -> None:
    for key in parameters:
        if key.split(".")[0] not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean '{prefix}.{close[0]}'?" if close else ""
            raise TeleopConfigError(
                f"unknown parameter '{prefix}.{key}'; known: "
                f"{', '.join(f'{prefix}.{k}' for k in known)}.{hint}"
            )


# -- leader_arm -----------------------------------------------------------------------------------


class LeaderArm(TeleopSource):
    """A registry arm driver used as a leader: connected, then disabled, then only read.

    `damped`: enable() before disable(). A Damiao motor only enters its damping mode from the
    enabled state (a never-enabled one is limp), so a YAM leader arm / teaching handle sinks
    slowly under gravity instead of falling; after the last command its 400 ms watchdog keeps
    it damping. Leave it off for Feetech leaders: enable() would briefly hold them.
    """

    def __init__(
        self,
        driver: ArmDriver,
        joint_names: Sequence[str],
        mapping: JointMapping,
        damped: bool = False,
    ) -> None:
        if len(driver.joint_names) != len(joint_names):
            raise TeleopConfigError(
                f"the leader has {len(driver.joint_names)} joints "
                f"({', '.join(driver.joint_names)}) but the follower {len(joint_names)}"
            )
        self.driver = driver
        self.mapping = mapping
        self.damped = damped
        self._joint_names = tuple(joint_names)

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self._joint_names

    @property
    def warnings(self) -> tuple[str, ...]:
        arms = getattr(self.driver, "arms", (self.driver,))
        return tuple(w for arm in arms for w in getattr(arm, "warnings", ()))

    def connect(self) -> None:
        self.driver.connect()
        try:
            if self.damped:
                self.driver.enable()  # holds the measured pose for the few ms until disable()
            self.driver.disable()  # never driven: the operator's hand moves the leader
        except DriverError:
            self.driver.disconnect()
            raise

    def read(self) -> FloatArray:
        return self.mapping.apply(self.driver.read().positions)

    def disconnect(self) -> None:
        self.driver.disconnect()


def build_leader_arm(config: TeleopConfig, parameters: Mapping[str, Any]) -> TeleopSource:
    leader = _subtree(parameters, "leader")
    known = ("embodiment", "joint_names", "scale", "offset", "damped", "driver")
    _reject_unknown(leader, known, "leader")
    embodiment = str(leader.get("embodiment", config.embodiment))
    if embodiment != config.embodiment and "joint_names" not in leader:
        raise TeleopConfigError(
            f"leader.embodiment {embodiment!r} is not the follower's ({config.embodiment!r}): "
            "set leader.joint_names to the leader's joints"
        )
    names = tuple(str(n) for n in leader.get("joint_names", config.joint_names))
    if len(names) != len(config.joint_names):
        raise TeleopConfigError(
            f"leader.joint_names has {len(names)} joints but the follower "
            f"{len(config.joint_names)} ({', '.join(config.joint_names)})"
        )
    if not _subtree(leader, "driver"):
        raise TeleopConfigError(
            "no leader.driver.* parameters: give the leader's bus (e.g. leader.driver.port, "
            "leader.driver.ids), see config/embodiments/so100_leader.yaml"
        )
    driver = build_driver(embodiment, names, driver_parameters(leader))
    mapping = JointMapping.from_parameters(config.joint_names, leader)
    damped = leader.get("damped", False)
    if not isinstance(damped, bool):
        raise TeleopConfigError(f"leader.damped must be true or false, got {damped!r}")
    return LeaderArm(driver, config.joint_names, mapping, damped)


# -- dynamixel_leader -----------------------------------------------------------------------------


class DynamixelLeader(TeleopSource):
    """A GELLO-style leader: Dynamixel X servos, one sync read of Present_Position per tick.

    joint = offset + scale · sign · (ticks − 2048) · 2π/4096: 4096 ticks per turn, 2048 is the
    middle of the turn; `sign` and `offset` are GELLO's joint_signs / joint_offsets.
    """

    def __init__(
        self, bus: DynamixelBus, joint_names: Sequence[str], mapping: JointMapping
    ) -> None:
        if len(bus.ids) != len(joint_names):
            raise TeleopConfigError(
                f"leader.ids has {len(bus.ids)} servos for {len(joint_names)} follower joints"
            )
        self.bus = bus
        self.mapping = mapping
        self._joint_names = tuple(joint_names)

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self._joint_names

    def connect(self) -> None:
        self.bus.open()
        try:
            self.bus.set_torque(False)  # moved by hand; EEPROM writes below need torque off
            self.bus.configure()
        except DriverError:
            self.bus.close()
            raise

    def read(self) -> FloatArray:
        centred = (self.bus.sync_read_positions() - CENTRE_TICKS).astype(np.float64)
        return self.mapping.apply(centred * RAD_PER_TICK)

    def disconnect(self) -> None:
        self.bus.close()


_DYNAMIXEL_KEYS = (
    "port", "ids", "baudrate", "signs", "scale", "offset", "read_retries", "packet_timeout_ms",
)  # fmt: skip


def build_dynamixel_leader(config: TeleopConfig, parameters: Mapping[str, Any]) -> TeleopSource:
    leader = _subtree(parameters, "leader")
    _reject_unknown(leader, _DYNAMIXEL_KEYS, "leader")
    names = config.joint_names
    if "port" not in leader or "ids" not in leader:
        raise TeleopConfigError(
            "dynamixel_leader needs leader.port (e.g. /dev/ttyUSB0) and leader.ids (servo ids "
            f"in the follower's joint order: {', '.join(names)})"
        )
    signs = _per_joint(leader.get("signs", 1.0), len(names), "leader.signs", names)
    if not np.all(np.abs(signs) == 1.0):
        raise TeleopConfigError(f"leader.signs must be 1 or -1, got {list(signs)}")
    mapping = JointMapping.from_parameters(names, leader)
    bus = DynamixelBus(  # a wrong type or id list is reported by build_teleop_source
        str(leader["port"]),
        [int(i) for i in leader["ids"]],
        # GELLO's XL330s run at their factory 57600 bit/s unless reconfigured.
        baudrate=int(leader.get("baudrate", 57_600)),
        read_retries=int(leader.get("read_retries", 2)),
        packet_timeout_ms=float(leader.get("packet_timeout_ms", 10.0)),
    )
    return DynamixelLeader(bus, names, JointMapping(mapping.scale * signs, mapping.offset))
