"""QoS profiles with rclpy's names, values and presets (zenoh backend).

Enum integers are rmw's (`ros2/rmw` types.h, mirrored by rclpy `qos.py`); rmw_zenoh writes them
into liveliness tokens, so they are wire facts, not choices.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

from vla_runtime.ros.zenoh.time import Duration


class HistoryPolicy(enum.IntEnum):
    SYSTEM_DEFAULT = 0
    KEEP_LAST = 1
    KEEP_ALL = 2
    UNKNOWN = 3


class ReliabilityPolicy(enum.IntEnum):
    SYSTEM_DEFAULT = 0
    RELIABLE = 1
    BEST_EFFORT = 2
    UNKNOWN = 3
    BEST_AVAILABLE = 4


class DurabilityPolicy(enum.IntEnum):
    SYSTEM_DEFAULT = 0
    TRANSIENT_LOCAL = 1
    VOLATILE = 2
    UNKNOWN = 3
    BEST_AVAILABLE = 4


class LivelinessPolicy(enum.IntEnum):
    SYSTEM_DEFAULT = 0
    AUTOMATIC = 1
    MANUAL_BY_TOPIC = 3
    UNKNOWN = 4
    BEST_AVAILABLE = 5


class InvalidQoSProfileException(ValueError):
    """A QoS profile that rclpy would refuse too."""


_INFINITE = Duration(nanoseconds=0)


@dataclass
class QoSProfile:
    """rclpy.qos.QoSProfile: `QoSProfile(depth=10)` or `QoSProfile(history=..., depth=...)`."""

    history: HistoryPolicy = HistoryPolicy.KEEP_LAST
    depth: int = 10
    reliability: ReliabilityPolicy = ReliabilityPolicy.RELIABLE
    durability: DurabilityPolicy = DurabilityPolicy.VOLATILE
    lifespan: Duration = field(default_factory=lambda: _INFINITE)
    deadline: Duration = field(default_factory=lambda: _INFINITE)
    liveliness: LivelinessPolicy = LivelinessPolicy.SYSTEM_DEFAULT
    liveliness_lease_duration: Duration = field(default_factory=lambda: _INFINITE)
    avoid_ros_namespace_conventions: bool = False

    def __init__(self, **kwargs: Any) -> None:
        allowed = set(self.__dataclass_fields__)
        unknown = set(kwargs) - allowed
        if unknown:
            raise InvalidQoSProfileException(
                f"unknown QoS field(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
            )
        if "history" not in kwargs and "depth" not in kwargs:
            raise InvalidQoSProfileException("QoSProfile needs history or depth, e.g. depth=10")
        history = HistoryPolicy(kwargs.get("history", HistoryPolicy.KEEP_LAST))
        if history == HistoryPolicy.KEEP_LAST and "depth" not in kwargs:
            raise InvalidQoSProfileException("history KEEP_LAST needs a depth")
        self.history = history
        self.depth = int(kwargs.get("depth", 0))
        self.reliability = ReliabilityPolicy(kwargs.get("reliability", ReliabilityPolicy.RELIABLE))
        self.durability = DurabilityPolicy(kwargs.get("durability", DurabilityPolicy.VOLATILE))
        self.lifespan = kwargs.get("lifespan", _INFINITE)
        self.deadline = kwargs.get("deadline", _INFINITE)
        self.liveliness = LivelinessPolicy(
            kwargs.get("liveliness", LivelinessPolicy.SYSTEM_DEFAULT)
        )
        self.liveliness_lease_duration = kwargs.get("liveliness_lease_duration", _INFINITE)
        self.avoid_ros_namespace_conventions = bool(
            kwargs.get("avoid_ros_namespace_conventions", False)
        )

    def copy(self, **changes: Any) -> QoSProfile:
        return replace(self, **changes)


def qos_from(qos_or_depth: QoSProfile | int) -> QoSProfile:
    """Accept what rclpy's create_publisher accepts: a profile or a KEEP_LAST depth."""
    if isinstance(qos_or_depth, QoSProfile):
        return qos_or_depth
    if isinstance(qos_or_depth, int) and not isinstance(qos_or_depth, bool):
        return QoSProfile(depth=qos_or_depth)
    raise TypeError(f"expected a QoSProfile or an int depth, got {type(qos_or_depth).__name__}")


# rmw's predefined profiles (rmw/qos_profiles.h).
qos_profile_default = QoSProfile(depth=10)
qos_profile_sensor_data = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
qos_profile_services_default = QoSProfile(depth=10)
qos_profile_parameters = QoSProfile(depth=1000)
qos_profile_parameter_events = QoSProfile(depth=1000)
qos_profile_system_default = QoSProfile(
    history=HistoryPolicy.SYSTEM_DEFAULT,
    reliability=ReliabilityPolicy.SYSTEM_DEFAULT,
    durability=DurabilityPolicy.SYSTEM_DEFAULT,
)
qos_profile_best_available = QoSProfile(
    depth=10,
    reliability=ReliabilityPolicy.BEST_AVAILABLE,
    durability=DurabilityPolicy.BEST_AVAILABLE,
)
# A latched topic (e.g. /robot/mode): late joiners get the last value.
qos_profile_latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
