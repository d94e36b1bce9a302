"""rclpy.time / rclpy.duration / rclpy.clock equivalents.

ROS time is the system (wall) clock, as in rclpy without `use_sim_time`: message stamps must be
comparable across processes and hosts. Durations and timer pacing use the steady clock.
"""

from __future__ import annotations

import enum
import time
from functools import total_ordering
from typing import Any

_NS_PER_S = 1_000_000_000


class ClockType(enum.IntEnum):
    UNINITIALIZED = 0
    ROS_TIME = 1
    SYSTEM_TIME = 2
    STEADY_TIME = 3


@total_ordering
class Duration:
    """A signed span of time in integer nanoseconds (rclpy.duration.Duration)."""

    __slots__ = ("_ns",)

    def __init__(self, *, seconds: float = 0, nanoseconds: int = 0) -> None:
        self._ns = round(seconds * _NS_PER_S) + int(nanoseconds)

    @property
    def nanoseconds(self) -> int:
        return self._ns

    def to_msg(self) -> Any:
        from vla_runtime.ros.interfaces import get_message

        sec, nanosec = divmod(self._ns, _NS_PER_S)
        return get_message("builtin_interfaces/msg/Duration")(sec=sec, nanosec=nanosec)

    @classmethod
    def from_msg(cls, msg: Any) -> Duration:
        return cls(seconds=msg.sec, nanoseconds=msg.nanosec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Duration) and self._ns == other._ns

    def __lt__(self, other: Duration) -> bool:
        return self._ns < other._ns

    def __hash__(self) -> int:
        return hash(self._ns)

    def __repr__(self) -> str:
        return f"Duration(nanoseconds={self._ns})"


@total_ordering
class Time:
    """A point in time on one clock, integer nanoseconds since its epoch (rclpy.time.Time)."""

    __slots__ = ("_clock_type", "_ns")

    def __init__(
        self,
        *,
        seconds: float = 0,
        nanoseconds: int = 0,
        clock_type: ClockType = ClockType.SYSTEM_TIME,
    ) -> None:
        ns = round(seconds * _NS_PER_S) + int(nanoseconds)
        if ns < 0:
            raise ValueError("Time cannot be negative; use a Duration for signed spans")
        self._ns = ns
        self._clock_type = ClockType(clock_type)

    @property
    def nanoseconds(self) -> int:
        return self._ns

    @property
    def clock_type(self) -> ClockType:
        return self._clock_type

    def seconds_nanoseconds(self) -> tuple[int, int]:
        return divmod(self._ns, _NS_PER_S)

    def to_msg(self) -> Any:
        from vla_runtime.ros.interfaces import get_message

        sec, nanosec = divmod(self._ns, _NS_PER_S)
        return get_message("builtin_interfaces/msg/Time")(sec=sec, nanosec=nanosec)

    @classmethod
    def from_msg(cls, msg: Any, clock_type: ClockType = ClockType.ROS_TIME) -> Time:
        return cls(seconds=msg.sec, nanoseconds=msg.nanosec, clock_type=clock_type)

    def __add__(self, other: Duration) -> Time:
        if not isinstance(other, Duration):
            return NotImplemented
        return Time(nanoseconds=self._ns + other.nanoseconds, clock_type=self._clock_type)

    __radd__ = __add__

    def __sub__(self, other: Time | Duration) -> Any:
        if isinstance(other, Time):
            if other.clock_type != self._clock_type:
                raise TypeError("cannot subtract times of different clock types")
            return Duration(nanoseconds=self._ns - other._ns)
        if isinstance(other, Duration):
            return Time(nanoseconds=self._ns - other.nanoseconds, clock_type=self._clock_type)
        return NotImplemented

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Time)
            and self._ns == other._ns
            and self._clock_type == other._clock_type
        )

    def __lt__(self, other: Time) -> bool:
        if other.clock_type != self._clock_type:
            raise TypeError("cannot compare times of different clock types")
        return self._ns < other._ns

    def __hash__(self) -> int:
        return hash((self._ns, self._clock_type))

    def __repr__(self) -> str:
        return f"Time(nanoseconds={self._ns}, clock_type={self._clock_type.name})"


class Clock:
    """rclpy.clock.Clock; a node's clock is a ROS_TIME clock that follows the system clock."""

    def __init__(self, *, clock_type: ClockType = ClockType.SYSTEM_TIME) -> None:
        self._clock_type = ClockType(clock_type)

    @property
    def clock_type(self) -> ClockType:
        return self._clock_type

    def now(self) -> Time:
        if self._clock_type == ClockType.STEADY_TIME:
            return Time(nanoseconds=time.monotonic_ns(), clock_type=self._clock_type)
        return Time(nanoseconds=time.time_ns(), clock_type=self._clock_type)

    def sleep_for(self, rel_time: Duration) -> bool:
        time.sleep(max(0.0, rel_time.nanoseconds / _NS_PER_S))
        return True


class ROSClock(Clock):
    def __init__(self) -> None:
        super().__init__(clock_type=ClockType.ROS_TIME)

    @property
    def ros_time_is_active(self) -> bool:
        return False
