"""Serial servo buses through the vendors' SDKs: Feetech STS (SO100/SO101) and, sharing the
machinery, Dynamixel (`dynamixel_bus.py`, leader arms).

A bus owns one serial port and a fixed list of servo ids. Every transaction retries on a
timeout or a corrupted status packet, up to `read_retries` more times, clearing stale bytes
between attempts; after that it raises `DriverTimeout` naming the port, the transaction and
the ids that did not answer. A vanished serial device becomes a `DriverError` naming the port.

Both SDKs (`scservo_sdk`, `dynamixel_sdk`) share one API shape (PortHandler, PacketHandler,
GroupSyncRead/Write, COMM_SUCCESS), so `ServoBus` drives either; subclasses only say which SDK,
which registers, and how the servos configure and home.
"""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from vla_runtime.drivers.base import DriverError, DriverTimeout

IntArray = npt.NDArray[np.int64]

try:  # pyserial raises termios.error (no OSError) when a tty vanishes under tcdrain
    import termios

    _DEVICE_ERRORS: tuple[type[Exception], ...] = (OSError, termios.error)
except ImportError:  # pragma: no cover - not POSIX
    _DEVICE_ERRORS = (OSError,)


class Encoding(Enum):
    UNSIGNED = "unsigned"
    SIGN_MAGNITUDE = "sign-magnitude"  # Feetech: sign at `sign_bit`, magnitude below it
    TWOS_COMPLEMENT = "two's complement"  # Dynamixel


@dataclass(frozen=True)
class Register:
    """One control-table entry: `size` bytes at `address`, little-endian."""

    name: str
    address: int
    size: int
    encoding: Encoding = Encoding.UNSIGNED
    sign_bit: int = 15

    def decode(self, raw: int) -> int:
        if self.encoding is Encoding.SIGN_MAGNITUDE:
            magnitude = raw & ((1 << self.sign_bit) - 1)
            return -magnitude if raw & (1 << self.sign_bit) else magnitude
        if self.encoding is Encoding.TWOS_COMPLEMENT:
            bits = 8 * self.size
            return raw - (1 << bits) if raw & (1 << (bits - 1)) else raw
        return raw

    def encode(self, value: int) -> int:
        if self.encoding is Encoding.SIGN_MAGNITUDE:
            if abs(value) >= 1 << self.sign_bit:
                raise ValueError(f"{self.name}: {value} exceeds ±{(1 << self.sign_bit) - 1}")
            return abs(value) | (1 << self.sign_bit) if value < 0 else value
        bits = 8 * self.size
        low = -(1 << (bits - 1)) if self.encoding is Encoding.TWOS_COMPLEMENT else 0
        high = (
            (1 << (bits - 1)) - 1 if self.encoding is Encoding.TWOS_COMPLEMENT else (1 << bits) - 1
        )
        if not low <= value <= high:
            raise ValueError(f"{self.name}: {value} outside {low}..{high}")
        return value % (1 << bits)

    def to_bytes(self, value: int) -> list[int]:
        return list(self.encode(value).to_bytes(self.size, "little"))

    def value_in(self, block: bytes, block_address: int) -> int:
        """This register's decoded value inside a block read from `block_address`."""
        start = self.address - block_address
        return self.decode(int.from_bytes(block[start : start + self.size], "little"))


@dataclass
class BusStatistics:
    """Counters since open(): what the latency monitor reports as bus health."""

    transactions: int = 0
    retries: int = 0  # attempts repeated after a timeout or a corrupted status packet
    failures: int = 0  # transactions that raised DriverTimeout after every retry


class ServoBus(ABC):
    """Shared machinery over a vendor SDK (see the module docstring).

    Args:
        port: serial device (/dev/ttyACM0, a udev name, or an emulator's pty).
        ids: servo ids in joint order.
        baudrate: [bit/s].
        read_retries: extra attempts per transaction within the tick.
        packet_timeout_ms: how long to wait for a status packet beyond its wire time [ms].
    """

    sdk_name: str  # the module to import
    protocol_version: float
    present_position: Register
    goal_position: Register
    torque_enable: Register
    homing_offset: Register
    min_position_limit: Register
    max_position_limit: Register

    def __init__(
        self,
        port: str,
        ids: Sequence[int],
        *,
        baudrate: int = 1_000_000,
        read_retries: int = 2,
        packet_timeout_ms: float = 10.0,
    ) -> None:
        if not ids or len(set(ids)) != len(ids):
            raise ValueError(f"{port}: servo ids must be distinct and non-empty, got {list(ids)}")
        self.port = port
        self.ids = tuple(int(i) for i in ids)
        self.baudrate = baudrate
        self.read_retries = read_retries
        self.packet_timeout_ms = packet_timeout_ms
        self.statistics = BusStatistics()
        self.models: dict[int, int] = {}
        self._lock = threading.Lock()
        self._sdk: Any = None
        self._port_handler: Any = None
        self._packet_handler: Any = None
        self._readers: dict[tuple[int, int], Any] = {}
        self._writers: dict[tuple[int, int], Any] = {}

    # lifecycle ---------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._port_handler is not None

    def open(self) -> dict[int, int]:
        """Open the port and ping every servo; the model number of each id.

        Raises:
            DriverError: the port cannot be opened, or some ids do not answer (named).
        """
        if self.is_open:
            return dict(self.models)
        sdk = _import_sdk(self.sdk_name)
        port_handler = sdk.PortHandler(self.port)
        _set_packet_timeout(port_handler, self.packet_timeout_ms)
        try:
            opened = port_handler.setBaudRate(self.baudrate)
        except (OSError, ValueError) as exc:
            raise DriverError(
                f"cannot open {self.port}: {exc} — is the arm plugged in, and are you in the "
                f"dialout group?"
            ) from exc
        if not opened:
            raise DriverError(f"cannot open {self.port}: baud rate {self.baudrate} unsupported")
        # The SDKs open the port non-blocking and spin on read() for the whole round trip; a
        # blocking read bounded by the packet timeout sleeps instead (measured under a CPU hog:
        # read p99 4.2-5.3 ms spinning, 0.7-0.9 ms blocking). The SDK's own timeout still holds.
        port_handler.ser.timeout = self.packet_timeout_ms / 1000.0
        self._sdk, self._port_handler = sdk, port_handler
        self._packet_handler = sdk.PacketHandler(self.protocol_version)
        self.statistics = BusStatistics()
        try:
            models = {servo_id: self.ping(servo_id) for servo_id in self.ids}
        except DriverError:
            self.close()
            raise
        missing = [servo_id for servo_id, model in models.items() if model is None]
        if missing:
            self.close()
            answering = [i for i in self.ids if i not in missing]
            raise DriverError(
                f"{self.port}: no answer from servo id(s) {_join(missing)} "
                f"(expected {_join(self.ids)}; answering: {_join(answering) or 'none'}) — check "
                f"the power supply, the cables between the servos, and the ids"
            )
        self.models = {i: m for i, m in models.items() if m is not None}
        return dict(self.models)

    def close(self) -> None:
        """Close the port. Safe to call twice, and after the device vanished."""
        handler, self._port_handler = self._port_handler, None
        self._readers.clear()
        self._writers.clear()
        if handler is not None and handler.ser is not None:
            with contextlib.suppress(*_DEVICE_ERRORS):  # the device may already be gone
                handler.closePort()

    @abstractmethod
    def configure(self) -> None:
        """Write the settings the control loop relies on (torque must be off)."""

    @abstractmethod
    def homing_offset_for(self, present_ticks: int, target_ticks: int) -> int:
        """The Homing_Offset that makes a servo reading `present_ticks` at offset 0 read
        `target_ticks`."""

    # transactions ------------------------------------------------------------------------

    def ping(self, servo_id: int) -> int | None:
        """The servo's model number, or None when it does not answer after the retries."""
        try:
            result = self._transact(
                f"ping of id {servo_id}",
                lambda: self._packet_handler.ping(self._port_handler, servo_id),
            )
        except DriverTimeout:
            return None
        return int(result[0])

    def read_register(self, servo_id: int, register: Register) -> int:
        """One register of one servo, decoded (signed where the register is)."""
        what = f"read of {register.name} from id {servo_id}"
        data, _, error = self._transact(
            what,
            lambda: self._packet_handler.readTxRx(
                self._port_handler, servo_id, register.address, register.size
            ),
        )
        self._check_status(what, servo_id, error)
        if len(data) != register.size:
            raise DriverError(f"{self.port}: {what}: {len(data)} bytes instead of {register.size}")
        return register.decode(int.from_bytes(bytes(data), "little"))

    def write_register(self, servo_id: int, register: Register, value: int) -> None:
        """One register of one servo, acknowledged by its status packet."""
        what = f"write of {register.name}={value} to id {servo_id}"
        data = register.to_bytes(value)
        _, error = self._transact(
            what,
            lambda: self._packet_handler.writeTxRx(
                self._port_handler, servo_id, register.address, register.size, data
            ),
        )
        self._check_status(what, servo_id, error)

    def sync_read(self, address: int, length: int) -> dict[int, bytes]:
        """One sync read of `length` bytes at `address` from every servo, with retries; the
        raw block per id (decode fields with `Register.value_in`)."""
        reader = self._reader(address, length)

        def attempt() -> tuple[None, int, list[int]]:
            for servo_id in self.ids:  # so that a failed attempt leaves no stale data behind
                reader.data_dict[servo_id] = []
            result = int(reader.txRxPacket())
            # The SDKs stop at the first servo without a valid answer: name that one.
            silent = [i for i in self.ids if len(reader.data_dict[i]) != length][:1]
            return None, result, silent

        self._transact(f"sync read of {length} bytes at address {address}", attempt)
        return {servo_id: bytes(reader.data_dict[servo_id]) for servo_id in self.ids}

    def sync_write(self, register: Register, values: Mapping[int, int]) -> None:
        """One sync write (no status packets come back; nothing to retry)."""
        writer = self._writer(register.address, register.size)
        with self._lock:
            writer.clearParam()
            for servo_id, value in values.items():
                writer.addParam(servo_id, register.to_bytes(value))
            self.statistics.transactions += 1
            result = self._guard(writer.txPacket)
        if result != self._sdk.COMM_SUCCESS:
            raise DriverError(
                f"{self.port}: sync write of {register.name} failed "
                f"({self._packet_handler.getTxRxResult(result)})"
            )

    def sync_read_positions(self) -> IntArray:
        """Present_Position of every servo, in id order [ticks]."""
        register = self.present_position
        block = self.sync_read(register.address, register.size)
        return np.array([register.value_in(block[i], register.address) for i in self.ids])

    def sync_write_positions(self, ticks: Sequence[int] | IntArray) -> None:
        """Goal_Position of every servo, in id order [ticks]."""
        if len(ticks) != len(self.ids):
            raise ValueError(f"{len(ticks)} positions for {len(self.ids)} servos")
        self.sync_write(
            self.goal_position, {i: int(t) for i, t in zip(self.ids, ticks, strict=True)}
        )

    def set_torque(self, enabled: bool) -> None:
        for servo_id in self.ids:
            self.write_register(servo_id, self.torque_enable, int(enabled))

    def write_position_limits(self, servo_id: int, low: int, high: int) -> None:
        self.write_register(servo_id, self.min_position_limit, low)
        self.write_register(servo_id, self.max_position_limit, high)

    # internals ---------------------------------------------------------------------------

    def _transact(self, what: str, attempt: Callable[[], tuple[Any, ...]]) -> tuple[Any, ...]:
        """Run an SDK call returning (..., result, error) until COMM_SUCCESS, with retries.

        A sync read puts the ids that stayed silent where the error byte would be.
        """
        if self._port_handler is None:
            raise DriverError(f"{self.port}: the bus is not open; call connect() first")
        ok = self._sdk.COMM_SUCCESS
        with self._lock:
            self.statistics.transactions += 1
            outcome: tuple[Any, ...] = ()
            for attempt_index in range(self.read_retries + 1):
                if attempt_index:
                    self.statistics.retries += 1
                    # A late or partial answer to the failed attempt must not be taken for
                    # the next one's: the Feetech SDK only flushes output before sending.
                    self._guard(self._port_handler.ser.reset_input_buffer)
                try:
                    outcome = self._guard(attempt)
                except (IndexError, TypeError):
                    # The SDKs index into a garbled status packet without checking its length:
                    # that is a corrupt answer to retry, not a crash.
                    outcome = (getattr(self._sdk, "COMM_RX_CORRUPT", -3001), [])
                if outcome[-2] == ok:
                    return outcome
            self.statistics.failures += 1
        detail = self._packet_handler.getTxRxResult(outcome[-2])
        silent = outcome[-1] if isinstance(outcome[-1], list) else []
        ids = f"; first id without a valid answer: {silent[0]}" if silent else ""
        raise DriverTimeout(
            f"{self.port}: {what} failed after {self.read_retries + 1} attempts ({detail}{ids})"
        )

    def _check_status(self, what: str, servo_id: int, error: int) -> None:
        if error:
            raise DriverError(
                f"{self.port}: {what}: the servo reports error 0x{error:02x} "
                f"({self._packet_handler.getRxPacketError(error)})"
            )

    def _guard(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except _DEVICE_ERRORS as exc:  # pyserial's SerialException is an OSError
            self._port_handler.is_using = False
            raise DriverError(
                f"{self.port}: serial device lost ({exc}) — is the USB cable still plugged in?"
            ) from exc

    def _reader(self, address: int, length: int) -> Any:
        if self._port_handler is None:
            raise DriverError(f"{self.port}: the bus is not open; call connect() first")
        key = (address, length)
        if key not in self._readers:
            reader = self._sdk.GroupSyncRead(
                self._port_handler, self._packet_handler, address, length
            )
            for servo_id in self.ids:
                reader.addParam(servo_id)
            self._readers[key] = reader
        return self._readers[key]

    def _writer(self, address: int, length: int) -> Any:
        if self._port_handler is None:
            raise DriverError(f"{self.port}: the bus is not open; call connect() first")
        key = (address, length)
        if key not in self._writers:
            self._writers[key] = self._sdk.GroupSyncWrite(
                self._port_handler, self._packet_handler, address, length
            )
        return self._writers[key]


def _import_sdk(name: str) -> ModuleType:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        package = {"scservo_sdk": "feetech-servo-sdk", "dynamixel_sdk": "dynamixel-sdk"}[name]
        raise DriverError(f"the {name} module is missing: pip install {package}") from exc


def _set_packet_timeout(port_handler: Any, margin_ms: float) -> None:
    """Bound the wait for a status packet to its wire time plus `margin_ms`.

    Both SDKs wait `bytes × byte time + 2 × 16 ms + 2 ms` (16 ms being an FTDI adapter's default
    latency timer); three such waits are 100 ms, twenty ticks of a 200 Hz loop. The SO100's
    CH34x adapters answer in about 2 ms at 1 Mbaud; with an FTDI adapter, set its latency timer
    to 1 ms or raise `packet_timeout_ms` above 32.
    """

    def set_packet_timeout(packet_length: int) -> None:
        port_handler.packet_start_time = port_handler.getCurrentTime()
        port_handler.packet_timeout = port_handler.tx_time_per_byte * packet_length + margin_ms

    port_handler.setPacketTimeout = set_packet_timeout


def _join(ids: Sequence[int]) -> str:
    return ", ".join(str(i) for i in ids)


class FeetechBus(ServoBus):
    """Feetech STS3215 servos (protocol 0) through `scservo_sdk`.

    Homing: Present_Position = raw − Homing_Offset (mod 4096); Homing_Offset is sign-magnitude
    with the sign at bit 11, so it spans ±2047 ticks. EEPROM registers (below Torque_Enable)
    only persist while Lock is 0, so torque-off also unlocks, and torque-on locks again.
    """

    sdk_name = "scservo_sdk"
    protocol_version = 0
    # STS/SMS memory map (Feetech's STS manual; as LeRobot's feetech/tables.py lists it).
    RETURN_DELAY_TIME = Register("Return_Delay_Time", 7, 1)  # 2 µs per unit
    min_position_limit = Register("Min_Position_Limit", 9, 2)
    max_position_limit = Register("Max_Position_Limit", 11, 2)
    P_COEFFICIENT = Register("P_Coefficient", 21, 1)
    D_COEFFICIENT = Register("D_Coefficient", 22, 1)
    I_COEFFICIENT = Register("I_Coefficient", 23, 1)
    homing_offset = Register("Homing_Offset", 31, 2, Encoding.SIGN_MAGNITUDE, sign_bit=11)
    OPERATING_MODE = Register("Operating_Mode", 33, 1)  # 0 = position servo
    torque_enable = Register("Torque_Enable", 40, 1)
    ACCELERATION = Register("Acceleration", 41, 1)
    goal_position = Register("Goal_Position", 42, 2)
    LOCK = Register("Lock", 55, 1)
    present_position = Register("Present_Position", 56, 2)
    PRESENT_VELOCITY = Register("Present_Velocity", 58, 2, Encoding.SIGN_MAGNITUDE, 15)
    MAXIMUM_ACCELERATION = Register("Maximum_Acceleration", 85, 1)
    MODEL_NUMBERS = {777: "STS3215", 2825: "STS3250"}
    MAX_HOMING_OFFSET_TICKS = 2047

    def __init__(
        self,
        port: str,
        ids: Sequence[int],
        *,
        acceleration: int = 254,
        p_coefficient: int = 16,
        i_coefficient: int = 0,
        d_coefficient: int = 32,
        **options: Any,
    ) -> None:
        super().__init__(port, ids, **options)
        self.acceleration = acceleration
        self.pid = (p_coefficient, i_coefficient, d_coefficient)

    def configure(self) -> None:
        """LeRobot's SO100 settings: answer at once, accelerate hard, position mode with the
        PID (16, 0, 32) that damps the factory P = 32 shaking."""
        p, i, d = self.pid
        for servo_id in self.ids:
            # Factory Return_Delay_Time is 250 (500 µs); 0 is the 2 µs minimum, which is what
            # makes a 6-servo sync read fit in ~1 ms of wire time.
            for register, value in (
                (self.RETURN_DELAY_TIME, 0),
                (self.MAXIMUM_ACCELERATION, self.acceleration),
                (self.ACCELERATION, self.acceleration),
                (self.OPERATING_MODE, 0),
                (self.P_COEFFICIENT, p),
                (self.I_COEFFICIENT, i),
                (self.D_COEFFICIENT, d),
            ):
                self.write_register(servo_id, register, value)

    def set_torque(self, enabled: bool) -> None:
        for servo_id in self.ids:
            self.write_register(servo_id, self.torque_enable, int(enabled))
            self.write_register(servo_id, self.LOCK, int(enabled))

    def sync_read_state(self) -> tuple[IntArray, IntArray]:
        """Present_Position [ticks] and Present_Velocity [ticks/s] in one sync read."""
        start = self.present_position.address
        block = self.sync_read(start, 4)
        positions = [self.present_position.value_in(block[i], start) for i in self.ids]
        velocities = [self.PRESENT_VELOCITY.value_in(block[i], start) for i in self.ids]
        return np.array(positions, dtype=np.int64), np.array(velocities, dtype=np.int64)

    def homing_offset_for(self, present_ticks: int, target_ticks: int) -> int:
        # Present = raw − offset. ±2048 is one value short of the sign-magnitude range; the
        # servo then reads one tick off the target, which calibration records as it is.
        offset = present_ticks - target_ticks
        return max(-self.MAX_HOMING_OFFSET_TICKS, min(self.MAX_HOMING_OFFSET_TICKS, offset))
