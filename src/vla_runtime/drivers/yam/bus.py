"""One CAN bus of Damiao motors: send a batch of frames, collect one feedback per motor.

Damiao motors only speak when spoken to: every frame addressed to a motor is answered by one
feedback frame. A tick is therefore one *exchange*: send a frame to every motor, then read
until every motor has answered or the deadline passes. Feedback is latest-value-wins: the
receive queue is drained on every exchange and only the newest frame per motor is kept, so a
late answer from an earlier tick can never make the state lag behind (the i2rt follower once
fell seconds behind its leader by reading a queue in FIFO order).

The bus is any python-can interface: `socketcan` on the robot, `virtual` in one process, `slcan`
over a pseudo-terminal to an emulator in another process.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import can

from vla_runtime.drivers.base import DriverError, DriverTimeout
from vla_runtime.drivers.yam.damiao import (
    REFRESH_CAN_ID,
    MitCommand,
    MotorFeedback,
    MotorModel,
    SpecialCommand,
    decode_feedback,
    encode_mit,
    refresh_frame,
    special_frame,
)

# Linux CAN error-frame classes (linux/can/error.h), carried in the error frame's id.
_CAN_ERR_BUSOFF = 0x40
# A bus on which nobody answered this many exchanges in a row is treated as off: a single
# silent tick can be scheduling jitter (DriverTimeout), three in a row (12 ms at 250 Hz) are not.
SILENT_EXCHANGES_FOR_BUS_OFF = 3


class MotorTimeout(DriverTimeout):
    """Some motors did not answer an exchange before its deadline."""

    def __init__(self, message: str, motor_ids: Sequence[int]) -> None:
        super().__init__(message)
        self.motor_ids = tuple(motor_ids)


@dataclass(frozen=True)
class BusMotor:
    """One motor on the bus.

    Attributes:
        motor_id: CAN id commands go to.
        model: the model whose ranges pack its frames.
        feedback_id: CAN id its feedback comes from (its master id register).
    """

    motor_id: int
    model: MotorModel
    feedback_id: int


class DamiaoBus:
    """Owns one python-can bus and the newest feedback of each motor on it."""

    def __init__(
        self, interface: str, channel: str, bitrate: int, motors: Sequence[BusMotor]
    ) -> None:
        self._interface = interface
        self._channel = channel
        self._bitrate = bitrate
        self._motors = {motor.motor_id: motor for motor in motors}
        self._by_feedback_id = {motor.feedback_id: motor for motor in motors}
        self._bus: can.BusABC | None = None
        # One exchange at a time: read() and write() may come from different threads.
        self._lock = threading.Lock()
        self._latest: dict[int, MotorFeedback] = {}
        self._latest_stamp_ns = 0
        self._silent_exchanges = 0
        self._bus_off_seen = False

    @property
    def where(self) -> str:
        """`interface:channel`, for messages."""
        return f"{self._interface}:{self._channel}"

    @property
    def is_open(self) -> bool:
        return self._bus is not None

    @property
    def latest(self) -> Mapping[int, MotorFeedback]:
        """Newest feedback per motor id (a snapshot)."""
        with self._lock:
            return MappingProxyType(dict(self._latest))

    @property
    def latest_stamp_ns(self) -> int:
        """System time the newest feedback arrived [ns since the epoch]; 0 before any."""
        return self._latest_stamp_ns

    def open(self) -> None:
        """Open the CAN channel; DriverError naming interface, channel and the fix."""
        if self._bus is not None:
            return
        filters: list[can.typechecking.CanFilter] = [
            {"can_id": feedback_id, "can_mask": 0x7FF, "extended": False}
            for feedback_id in sorted(self._by_feedback_id)
        ]
        try:
            self._bus = can.Bus(
                interface=self._interface,
                channel=self._channel,
                bitrate=self._bitrate,
                can_filters=filters,
            )
        except (can.CanError, OSError, ValueError, ImportError, NotImplementedError) as error:
            raise DriverError(
                f"cannot open CAN bus {self.where} at {self._bitrate} bit/s: {error}. "
                f"{self._open_hint()}"
            ) from error
        self._silent_exchanges = 0
        self._bus_off_seen = False

    def close(self) -> None:
        """Shut the channel down; safe to call twice."""
        with self._lock:
            bus, self._bus = self._bus, None
        if bus is not None:
            # Closing a dead adapter must not mask the error that led here.
            with contextlib.suppress(can.CanError, OSError):
                bus.shutdown()

    def command(self, commands: Mapping[int, MitCommand], timeout_s: float) -> dict[int, float]:
        """Send one MIT command per motor and collect their feedback (see `exchange`).

        Returns:
            Motor id → arrival time of its feedback [monotonic s].
        """
        frames = [
            (motor_id, encode_mit(command, self._motors[motor_id].model))
            for motor_id, command in commands.items()
        ]
        return self.exchange(frames, commands.keys(), timeout_s)

    def special(
        self, command: SpecialCommand, timeout_s: float, motor_ids: Iterable[int] | None = None
    ) -> dict[int, float]:
        """Send a special frame (enable, disable, zero, clear error) and collect feedback."""
        ids = list(self._motors if motor_ids is None else motor_ids)
        data = special_frame(command)
        return self.exchange([(motor_id, data) for motor_id in ids], ids, timeout_s)

    def refresh(
        self, timeout_s: float, motor_ids: Iterable[int] | None = None
    ) -> dict[int, float]:
        """Ask every motor for its state without commanding it."""
        ids = list(self._motors if motor_ids is None else motor_ids)
        frames = [(REFRESH_CAN_ID, refresh_frame(motor_id)) for motor_id in ids]
        return self.exchange(frames, ids, timeout_s)

    def exchange(
        self,
        frames: Sequence[tuple[int, bytes]],
        expected_ids: Iterable[int],
        timeout_s: float,
    ) -> dict[int, float]:
        """Send `frames`, then read until each expected motor answered or `timeout_s` passed.

        The deadline counts from the moment the last frame was handed to the interface.
        Answers are stored in `latest`.

        Raises:
            MotorTimeout: some expected motors stayed silent (their ids are in the message).
            DriverError: the interface refused a frame, reported bus-off, or no motor at all
                answered `SILENT_EXCHANGES_FOR_BUS_OFF` exchanges in a row.
        """
        expected = set(expected_ids)
        with self._lock:
            bus = self._require_open()
            try:
                self._drain(bus)
            except can.CanError as error:
                raise DriverError(
                    f"reading CAN bus {self.where} failed ({error}). {self._bus_off_hint()}"
                ) from error
            for arbitration_id, data in frames:
                message = can.Message(
                    arbitration_id=arbitration_id, data=data, is_extended_id=False
                )
                try:
                    bus.send(message)
                except can.CanError as error:
                    raise DriverError(
                        f"CAN bus {self.where} refused a frame ({error}): the bus is probably "
                        f"off. {self._bus_off_hint()}"
                    ) from error
            try:
                answered = self._collect(bus, expected, time.monotonic() + timeout_s)
            except can.CanError as error:
                raise DriverError(
                    f"reading CAN bus {self.where} failed ({error}). {self._bus_off_hint()}"
                ) from error
            if answered:
                self._silent_exchanges = 0
            elif expected:
                self._silent_exchanges += 1
            self._raise_for(expected, answered)
            return answered

    def _collect(self, bus: can.BusABC, expected: set[int], deadline: float) -> dict[int, float]:
        answered: dict[int, float] = {}
        while not expected.issubset(answered):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            message = bus.recv(timeout=remaining)
            if message is not None:
                self._take(message, answered)
        # Anything arriving after this (a duplicate, a late answer) is drained by the next
        # exchange: one empty non-blocking read per tick is enough (on slcan it costs up to the
        # serial timeout, 1 ms).
        return answered

    def _drain(self, bus: can.BusABC) -> None:
        """Take everything already queued (answers too late for an earlier exchange)."""
        discarded: dict[int, float] = {}
        while (message := bus.recv(timeout=0.0)) is not None:
            self._take(message, discarded)

    def _take(self, message: can.Message, answered: dict[int, float]) -> None:
        if message.is_error_frame:
            if message.arbitration_id & _CAN_ERR_BUSOFF:
                self._bus_off_seen = True
            return
        motor = self._by_feedback_id.get(message.arbitration_id)
        if motor is None or message.is_extended_id or len(message.data) != 8:
            return
        feedback = decode_feedback(message.data, motor.model)
        if feedback.motor_id_nibble != motor.motor_id & 0xF:
            return  # not a feedback frame (another node's traffic on that id)
        self._latest[motor.motor_id] = feedback
        self._latest_stamp_ns = time.time_ns()
        answered[motor.motor_id] = time.monotonic()

    def _raise_for(self, expected: set[int], answered: Mapping[int, float]) -> None:
        if self._bus_off_seen:
            self._bus_off_seen = False
            raise DriverError(f"CAN bus {self.where} reported bus-off. {self._bus_off_hint()}")
        silent = sorted(expected.difference(answered))
        if not silent:
            return
        if self._silent_exchanges >= SILENT_EXCHANGES_FOR_BUS_OFF:
            raise DriverError(
                f"no motor answered on CAN bus {self.where} for {self._silent_exchanges} "
                f"exchanges in a row: the bus is off, the adapter is gone or motor power is "
                f"off. {self._bus_off_hint()}"
            )
        listed = ", ".join(f"{motor_id} (0x{motor_id:02X})" for motor_id in silent)
        raise MotorTimeout(
            f"motor{'s' if len(silent) > 1 else ''} {listed} on CAN bus {self.where} did not "
            f"answer (feedback expected on "
            f"{', '.join(f'0x{self._motors[i].feedback_id:03X}' for i in silent)}): check the "
            f"motor's power, its CAN id and master id, and the wiring to it",
            silent,
        )

    def _require_open(self) -> can.BusABC:
        if self._bus is None:
            raise DriverError(f"CAN bus {self.where} is not open: call connect() first")
        return self._bus

    def _open_hint(self) -> str:
        if self._interface == "socketcan":
            return (
                f"Check that {self._channel} exists (`ip link show {self._channel}`) and bring "
                f"it up: `sudo ip link set {self._channel} up type can bitrate {self._bitrate}`."
            )
        if self._interface == "slcan":
            return (
                f"Check that the serial device {self._channel} exists and that you may open it "
                f"(group dialout)."
            )
        return f"Check the python-can interface {self._interface!r} and channel name."

    def _bus_off_hint(self) -> str:
        if self._interface == "socketcan":
            return (
                f"Check motor power, wiring and the 120 Ω termination, then restart the "
                f"interface: `sudo ip link set {self._channel} down && sudo ip link set "
                f"{self._channel} up type can bitrate {self._bitrate} restart-ms 100` "
                f"(state: `ip -details -statistics link show {self._channel}`)."
            )
        return "Check motor power, wiring, termination and the CAN adapter."
