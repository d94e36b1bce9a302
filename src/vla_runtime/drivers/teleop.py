"""Teleoperation sources: a leader arm or a keyboard, read at a fixed rate for `teleop_node`.

A `TeleopSource` yields joint targets in the **follower's** joint order and units; the driver
(`driver_node`) checks them against its limits and owns the handover, so a source only reads
and maps. Sources are registered by name in `TELEOP_SOURCES` (STYLE: explicit registries):

- `leader_arm`: any registry `ArmDriver` (`leader.embodiment`, default the follower's), disabled
  after connect (a Feetech leader is torque off, free to move by hand; a YAM leader with
  `leader.damped` damps), mapped joint by joint with `leader.scale` / `leader.offset`.
- `dynamixel_leader`: a GELLO-style arm of Dynamixel X servos read with one sync read per tick.
- `keyboard`: single-key joint jogging from a terminal (Franka has no leader arm).

`TeleopLoop` reads a source on its own thread, paced on the monotonic clock, and hands each
reading to a callback. Latest value wins: nothing is queued, a slow read or a slow consumer
skips ticks instead of bursting through a backlog (i2rt's minimum_gello follower once "fell
seconds behind the leader" draining a FIFO). A missing or vanished device is retried with
backoff and reported once per distinct error, so the node keeps running and never crash-loops.

Parameters (flat ROS names, as teleop_node reads them; mapping: follower = scale·leader + offset):

    source: leader_arm            # leader_arm | dynamixel_leader | keyboard
    rate_hz: 100.0
    embodiment, joint_names       # the follower's, from its config/embodiments/<name>.yaml
    leader.embodiment             # leader_arm: driver stack of the leader (default: follower's)
    leader.joint_names            # leader_arm: the leader's joints (default: follower's)
    leader.driver.*               # leader_arm: that stack's driver parameters (port, ids, ...)
    leader.damped                 # leader_arm: enable before disabling (Damiao: damping mode)
    leader.port, leader.ids, leader.baudrate, leader.signs, leader.read_retries,
    leader.packet_timeout_ms      # dynamixel_leader
    leader.scale, leader.offset   # both leaders: one per follower joint (default 1 and 0)
    keyboard.start_pose           # keyboard: one per follower joint [rad or m]
    keyboard.step                 # keyboard: jog step, one value or one per joint [rad or m]
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import os
import select
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from vla_runtime.core.loop_timing import RateKeeper
from vla_runtime.drivers.base import ArmDriver, DriverError, DriverTimeout, FloatArray
from vla_runtime.drivers.embodiment import driver_parameters
from vla_runtime.drivers.registry import build_driver
from vla_runtime.drivers.so100.calibration import CENTRE_TICKS, RAD_PER_TICK
from vla_runtime.drivers.so100.dynamixel_bus import DynamixelBus

_RETRY_S = (0.5, 1.0, 2.0, 5.0)  # backoff while the device is absent (as the driver loop)
# Consecutive read timeouts (in seconds of the loop) before the bus is reopened: one timeout is
# a glitch worth a retry next tick, half a second of them is a cut power or cable.
_RECONNECT_AFTER_S = 0.5


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


# -- keyboard -------------------------------------------------------------------------------------

KEY_MAP = """\
  1..9   select joint 1..9 (follower order)
  + =    jog the selected joint up by its step
  - _    jog it down
  r      back to the start pose"""


class KeyboardJog(TeleopSource):
    """Jog one joint at a time from single keys (see `KEY_MAP`), for arms without a leader.

    Keys are taken from `stream` without blocking on every `read()`: a terminal is put in
    cbreak mode (no Enter needed, no echo) between connect() and disconnect(); a pipe is polled
    with select(); a stream without a file descriptor (StringIO) is drained with read().
    """

    def __init__(
        self, joint_names: Sequence[str], start_pose: FloatArray, step: FloatArray,
        stream: TextIO | None = None,
    ) -> None:  # fmt: skip
        self._joint_names = tuple(joint_names)
        self.start_pose = np.array(start_pose, dtype=np.float64)
        self.step = np.array(step, dtype=np.float64)
        self.pose = self.start_pose.copy()
        self.selected = 0  # index of the joint the +/- keys move
        self._stream = stream if stream is not None else sys.stdin
        self._fd: int | None = None
        self._saved_mode: list[Any] | None = None
        self._eof = False

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self._joint_names

    @property
    def instructions(self) -> str:
        return f"keyboard jog keys:\n{KEY_MAP}"

    def connect(self) -> None:
        try:
            self._fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
            self._fd = None
        self._eof = False
        if self._fd is not None and self._stream.isatty():
            import termios
            import tty

            self._saved_mode = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)

    def read(self) -> FloatArray:
        for key in self._pending():
            self.press(key)
        pose: FloatArray = self.pose.copy()
        return pose

    def press(self, key: str) -> None:
        """Apply one key of `KEY_MAP`; any other key is ignored."""
        if key.isdigit() and 1 <= int(key) <= min(9, len(self.pose)):
            self.selected = int(key) - 1
        elif key in "+=":
            self.pose[self.selected] += self.step[self.selected]
        elif key in "-_":
            self.pose[self.selected] -= self.step[self.selected]
        elif key == "r":
            self.pose = self.start_pose.copy()

    def disconnect(self) -> None:
        if self._saved_mode is not None and self._fd is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved_mode)
            self._saved_mode = None

    def _pending(self) -> str:
        if self._eof:
            return ""
        if self._fd is None:
            text = self._stream.read()
            return text if isinstance(text, str) else ""
        chunks: list[bytes] = []
        # Raw os.read on the descriptor: the text wrapper's buffer would hide keys from select.
        while select.select([self._fd], [], [], 0.0)[0]:
            data = os.read(self._fd, 256)
            if not data:
                self._eof = True
                break
            chunks.append(data)
        return b"".join(chunks).decode("utf-8", errors="ignore")


def build_keyboard(config: TeleopConfig, parameters: Mapping[str, Any]) -> TeleopSource:
    keyboard = _subtree(parameters, "keyboard")
    _reject_unknown(keyboard, ("start_pose", "step"), "keyboard")
    names = config.joint_names
    if "start_pose" not in keyboard:
        raise TeleopConfigError(
            f"keyboard.start_pose is missing: give one position per joint ({', '.join(names)}), "
            "e.g. the arm's ready pose inside its limits"
        )
    start = _per_joint(keyboard["start_pose"], len(names), "keyboard.start_pose", names)
    step = _per_joint(keyboard.get("step", 0.02), len(names), "keyboard.step", names)
    if np.any(step <= 0.0):
        raise TeleopConfigError(f"keyboard.step must be > 0, got {list(step)}")
    return KeyboardJog(names, start, step)


# -- registry -------------------------------------------------------------------------------------

TeleopSourceBuilder = Callable[[TeleopConfig, Mapping[str, Any]], TeleopSource]

TELEOP_SOURCES: dict[str, TeleopSourceBuilder] = {
    "leader_arm": build_leader_arm,
    "dynamixel_leader": build_dynamixel_leader,
    "keyboard": build_keyboard,
}


def build_teleop_source(config: TeleopConfig, parameters: Mapping[str, Any]) -> TeleopSource:
    """The source `config.source` names, from the node's flat parameters; an unknown name or
    a bad parameter raises TeleopConfigError with what to change."""
    try:
        builder = TELEOP_SOURCES[config.source]
    except KeyError:
        close = difflib.get_close_matches(config.source, TELEOP_SOURCES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise TeleopConfigError(
            f"unknown teleop source {config.source!r}; known: "
            f"{', '.join(sorted(TELEOP_SOURCES))}.{hint}"
        ) from None
    try:
        return builder(config, parameters)
    except TeleopConfigError:
        raise
    except (LookupError, ValueError, TypeError) as exc:  # a driver's own config validation
        raise TeleopConfigError(f"{config.source}: {exc}") from exc


# -- the loop -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TeleopReading:
    """One read of the source.

    Attributes:
        positions: (joints,) targets in the follower's order [rad or m].
        stamp_ns: system time right after the read [ns since the epoch], the message stamp.
        index: reads since start (gaps never appear; skipped ticks are simply not read).
    """

    positions: FloatArray
    stamp_ns: int
    index: int


@dataclass(frozen=True)
class TeleopStatus:
    connected: bool
    failing: bool  # the newest read attempt failed
    reads: int
    errors: int
    reconnects: int
    last_error: str


class TeleopLoop:
    """Reads `source` at `rate_hz` on its own thread (see the module docstring).

    Args:
        on_reading: called on the loop thread with every reading (keep it light: publish).
        on_error: called on the loop thread with each new error message (a repeat of the
            previous message is not reported again until a read succeeds).
        retry_s: waits between connection attempts, the last one repeated.
    """

    def __init__(
        self,
        source: TeleopSource,
        rate_hz: float,
        on_reading: Callable[[TeleopReading], None],
        on_error: Callable[[str], None],
        *,
        retry_s: Sequence[float] = _RETRY_S,
    ) -> None:
        if not rate_hz > 0.0 or not retry_s:
            raise ValueError("rate_hz must be > 0 and retry_s non-empty")
        self.source = source
        self.rate = RateKeeper(1.0 / rate_hz, sleep=self._sleep)
        self._reconnect_after = max(1, math.ceil(rate_hz * _RECONNECT_AFTER_S))
        self._retry_s = tuple(retry_s)
        self._on_reading = on_reading
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._latest: TeleopReading | None = None
        self._connected = self._failing = False
        self._reported = ""
        self._reads = self._errors = self._reconnects = 0
        self._ever_connected = False
        self._last_error = ""

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="teleop-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self._disconnect()

    def latest(self) -> TeleopReading | None:
        """The newest reading (None before the first)."""
        with self._lock:
            return self._latest

    def status(self) -> TeleopStatus:
        with self._lock:
            return TeleopStatus(
                self._connected,
                self._failing,
                self._reads,
                self._errors,
                self._reconnects,
                self._last_error,
            )

    def diagnostics(self) -> tuple[str, str, dict[str, str]]:
        """(level 'OK'|'WARN'|'ERROR', one-line message, key-values) for /diagnostics."""
        status = self.status()
        summary = self.rate.summary()
        level = "ERROR" if not status.connected else "WARN" if status.failing else "OK"
        values = {key: str(value) for key, value in dataclasses.asdict(status).items()}
        values["period_error_p99_ms"] = f"{summary.period_error_p99_ms:.3f}"
        values["overruns"] = str(summary.overruns)
        healthy = status.connected and not status.failing
        message = "reading" if healthy else status.last_error or "connecting"
        return level, message, values

    # -- the thread ------------------------------------------------------------------------------

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _run(self) -> None:
        attempt = 0
        timeouts = 0
        while not self._stop.is_set():
            if not self._connected:
                if not self._connect(attempt):
                    attempt += 1
                    continue
                attempt = timeouts = 0
                self.rate.start()
            self.rate.wait()
            if self._stop.is_set():
                break
            try:
                positions = np.asarray(self.source.read(), dtype=np.float64)
            except DriverTimeout as exc:
                timeouts += 1
                self._error(f"read failed: {exc}")
                if timeouts >= self._reconnect_after:
                    self._disconnect()
                continue
            except Exception as exc:  # any error, not only DriverError: see _describe
                self._error(f"read failed: {_describe(exc)}")
                self._disconnect()
                continue
            timeouts = 0
            stamp_ns = time.time_ns()
            if positions.shape != (len(self.source.joint_names),):
                self._error(f"the source gave {positions.shape} values, not one per joint")
                continue
            with self._lock:
                reading = TeleopReading(positions, stamp_ns, self._reads)
                self._latest = reading
                self._reads += 1
                self._failing = False
            self._reported = ""  # a recurrence of an old error is news again
            self._on_reading(reading)

    def _connect(self, attempt: int) -> bool:
        try:
            self.source.connect()
        except Exception as exc:  # any error, not only DriverError: see _describe
            self._error(f"cannot connect: {_describe(exc)}")
            with contextlib.suppress(Exception):  # a half-open bus would skip the next ping
                self.source.disconnect()
            self._stop.wait(self._retry_s[min(attempt, len(self._retry_s) - 1)])
            return False
        with self._lock:
            self._reconnects += self._ever_connected
            self._connected = self._ever_connected = True
        return True

    def _disconnect(self) -> None:
        with self._lock:
            connected, self._connected = self._connected, False
        if connected:
            with contextlib.suppress(Exception):  # a vanished device has nothing to close
                self.source.disconnect()

    def _error(self, message: str) -> None:
        with self._lock:
            self._errors += 1
            self._failing = True
            self._last_error = message
        if message != self._reported:
            self._reported = message
            self._on_error(message)


def _describe(exc: Exception) -> str:
    """A device error's message; anything else named with its type.

    The loop thread must outlive whatever a source raises: vendor SDKs raise more than
    DriverError on a garbled status packet (scservo_sdk's ping indexes a short answer:
    IndexError), and a dead thread would leave the node running but silent. Such errors are
    reported and retried like a vanished device.
    """
    return str(exc) if isinstance(exc, DriverError) else f"{type(exc).__name__}: {exc}"
