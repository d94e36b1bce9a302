"""Wire protocols and control tables of serial-bus servos, as the servos implement them.

Used by `servo_bus` (the emulators) and by tests that cross-check our framing against the
vendors' SDKs. Two families:

- Feetech protocol 0 (STS3215, SO100/SO101): `FF FF id len instr params checksum`, with
  `len = len(params) + 2` and `checksum = ~(id + len + instr + sum(params)) & 0xFF`; status
  packets put the error byte where the instruction was. One-byte addresses and lengths.
- Dynamixel protocol 2.0 (X series, GELLO-style leaders): `FF FF FD 00 id len_l len_h instr
  params crc_l crc_h`, `len = len(params) + 3`, CRC-16 (polynomial 0x8005) over everything
  before it, byte stuffing of `FF FF FD` in the payload; status packets carry instruction 0x55
  then the error byte. Two-byte addresses and lengths.

The control tables are written from the vendors' memory maps, independently of the drivers'
register constants, so that a wrong address in a driver shows up as a failing test.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import IntEnum

BROADCAST_ID = 0xFE
MAX_SERVO_ID = 252
TICKS_PER_TURN = 4096


class Instruction(IntEnum):
    """Instruction codes shared by Feetech protocol 0 and Dynamixel protocol 2.0."""

    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REG_WRITE = 0x04
    ACTION = 0x05
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83


@dataclass(frozen=True)
class Packet:
    """A decoded packet: `code` is the instruction (host → servo) or error byte (servo → host)."""

    servo_id: int
    code: int
    params: bytes


class ChecksumError(ValueError):
    """A whole packet arrived whose checksum (CRC) does not match; it has been discarded."""


# --- value encodings -----------------------------------------------------------------------


def encode_sign_magnitude(value: int, sign_bit: int) -> int:
    """Feetech's signed registers: magnitude in the low bits, `sign_bit` set when negative."""
    magnitude = abs(value)
    if magnitude >= 1 << sign_bit:
        raise ValueError(f"{value} does not fit a sign-magnitude value with sign bit {sign_bit}")
    return magnitude | (1 << sign_bit) if value < 0 else magnitude


def decode_sign_magnitude(raw: int, sign_bit: int) -> int:
    magnitude = raw & ((1 << sign_bit) - 1)
    return -magnitude if raw & (1 << sign_bit) else magnitude


def decode_twos_complement(raw: int, size: int) -> int:
    """Dynamixel's signed registers: two's complement over `size` bytes."""
    bits = 8 * size
    return raw - (1 << bits) if raw & (1 << (bits - 1)) else raw


# --- framing -------------------------------------------------------------------------------


def feetech_checksum(body: bytes) -> int:
    """Protocol 0: the inverted low byte of the sum of id, length, instruction/error, params."""
    return ~sum(body) & 0xFF


def _crc_table() -> list[int]:
    # CRC-16 with polynomial 0x8005 (x^16 + x^15 + x^2 + 1), MSB first, no reflection.
    table = []
    for index in range(256):
        crc = index << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC16 = _crc_table()


def dynamixel_crc16(data: bytes) -> int:
    """Protocol 2.0 CRC-16 (initial value 0) over the header up to the last parameter."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) ^ _CRC16[((crc >> 8) ^ byte) & 0xFF]) & 0xFFFF
    return crc


def _take_whole(buffer: bytearray, header: bytes, minimum: int) -> bytes | None:
    """Discard bytes before `header`; None while fewer than `minimum` bytes follow it."""
    start = buffer.find(header)
    if start < 0:
        del buffer[: max(0, len(buffer) - len(header) + 1)]  # keep a possible partial header
        return None
    del buffer[:start]
    return bytes(buffer[:minimum]) if len(buffer) >= minimum else None


class FeetechFraming:
    """Feetech protocol 0: FF FF id length code params checksum, length = len(params) + 2."""

    HEADER = b"\xff\xff"

    def encode(self, servo_id: int, code: int, params: bytes) -> bytes:
        body = bytes((servo_id, len(params) + 2, code)) + params
        return self.HEADER + body + bytes((feetech_checksum(body),))

    def decode(self, buffer: bytearray) -> Packet | None:
        """Remove the next whole packet from `buffer` (None: more bytes needed)."""
        while True:
            head = _take_whole(buffer, self.HEADER, 4)
            if head is None:
                return None
            if head[2] == 0xFF or head[3] < 2:  # 0xFF is no id: a run of FF, or a bad length
                del buffer[:1]
                continue
            total = 4 + head[3]
            if len(buffer) < total:
                return None
            frame = bytes(buffer[:total])
            del buffer[:total]
            if feetech_checksum(frame[2:-1]) != frame[-1]:
                raise ChecksumError(f"checksum mismatch in {frame.hex(' ')}")
            return Packet(frame[2], frame[4], frame[5:-1])


class DynamixelFraming:
    """Protocol 2.0: FF FF FD 00 id len_l len_h code params crc_l crc_h, len = payload + 2.

    Status packets carry instruction 0x55 followed by the error byte. FF FF FD inside the
    payload is sent as FF FF FD FD ("byte stuffing") so that it never looks like a header.
    """

    HEADER = b"\xff\xff\xfd\x00"
    STATUS = 0x55

    def encode(self, servo_id: int, code: int, params: bytes, *, status: bool = False) -> bytes:
        payload = bytes((self.STATUS, code)) + params if status else bytes((code,)) + params
        stuffed = _stuff(payload)
        length = len(stuffed) + 2
        head = self.HEADER + bytes((servo_id, length & 0xFF, length >> 8))
        crc = dynamixel_crc16(head + stuffed)
        return head + stuffed + bytes((crc & 0xFF, crc >> 8))

    def decode(self, buffer: bytearray, *, status: bool = False) -> Packet | None:
        while True:
            head = _take_whole(buffer, self.HEADER, 7)
            if head is None:
                return None
            length = head[5] | head[6] << 8
            if length < (4 if status else 3) or head[4] == 0xFF:
                del buffer[:1]
                continue
            total = 7 + length
            if len(buffer) < total:
                return None
            frame = bytes(buffer[:total])
            del buffer[:total]
            if dynamixel_crc16(frame[:-2]) != (frame[-2] | frame[-1] << 8):
                raise ChecksumError(f"CRC mismatch in {frame.hex(' ')}")
            payload = _unstuff(frame[7:-2])
            if status:
                return Packet(frame[4], payload[1], payload[2:])
            return Packet(frame[4], payload[0], payload[1:])


def _stuff(payload: bytes) -> bytes:
    out = bytearray()
    for byte in payload:
        out.append(byte)
        if byte == 0xFD and out[-3:-1] == b"\xff\xff":
            out.append(0xFD)
    return bytes(out)


def _unstuff(payload: bytes) -> bytes:
    return payload.replace(b"\xff\xff\xfd\xfd", b"\xff\xff\xfd")


# --- servo families ------------------------------------------------------------------------


def read_unsigned(table: bytearray, address: int, size: int) -> int:
    return int.from_bytes(table[address : address + size], "little")


def _put(table: bytearray, address: int, size: int, value: int) -> None:
    table[address : address + size] = (value % (1 << (8 * size))).to_bytes(size, "little")


class ServoProtocol(ABC):
    """What differs between servo families: framing, field widths, control table, frames."""

    name: str
    field_size: int  # width of the address and length fields of READ/WRITE/SYNC params
    table_size: int
    torque_enable: int  # addresses of the registers the bus logic itself needs
    return_delay_time: int
    max_speed_ticks_s: float  # unloaded speed, the default speed limit of the dynamics
    access_error: int | None  # status error for a refused access; None: stay silent

    @abstractmethod
    def encode_status(self, servo_id: int, error: int, params: bytes) -> bytes: ...

    @abstractmethod
    def encode_instruction(self, servo_id: int, instruction: int, params: bytes) -> bytes: ...

    @abstractmethod
    def decode_instruction(self, buffer: bytearray) -> Packet | None: ...

    @abstractmethod
    def default_table(self, servo_id: int, position_ticks: float) -> bytearray: ...

    @abstractmethod
    def ping_params(self, table: bytearray) -> bytes: ...

    @abstractmethod
    def answers(self, table: bytearray, instruction: int) -> bool:
        """Whether the status-return-level register lets the servo answer `instruction`."""

    @abstractmethod
    def write_refused(self, table: bytearray, address: int, size: int) -> bool:
        """Read-only registers, and EEPROM while it is protected."""

    @abstractmethod
    def goal_ticks(self, table: bytearray) -> float:
        """Goal_Position, clamped to the position limits, in raw encoder ticks."""

    @abstractmethod
    def refresh(self, table: bytearray, position: float, velocity: float, goal: float) -> None:
        """Write the Present_* registers from the physical state (raw ticks, ticks/s)."""


class FeetechProtocol(ServoProtocol):
    """Feetech STS3215 (STS/SMS memory map; SO100/SO101 use six of them per arm).

    Homing: Present_Position = (raw − Homing_Offset) mod 4096, Homing_Offset in sign-magnitude
    with the sign at bit 11. Goal_Position is in the same (homed) frame and is clamped to
    [Min_Position_Limit, Max_Position_Limit] when max > min (both 0 is the multi-turn setting).
    EEPROM registers (below Torque_Enable) only take writes while Lock is 0: a real servo
    applies them but forgets them at power-off, and refusing them here catches a driver that
    forgets to unlock before calibrating.
    """

    name = "feetech"
    field_size = 1
    table_size = 256
    max_speed_ticks_s = 3000.0  # STS3215 at 7.4 V: 0.222 s/60° unloaded ≈ 3070 ticks/s
    access_error = None
    MODEL_NUMBER = 777  # STS3215
    FIRMWARE_MAJOR, FIRMWARE_MINOR, MODEL, ID, BAUD_RATE = 0, 1, 3, 5, 6
    return_delay_time = 7
    RESPONSE_STATUS_LEVEL = 8
    MIN_POSITION_LIMIT, MAX_POSITION_LIMIT = 9, 11
    MAX_TORQUE_LIMIT = 16
    P_COEFFICIENT, D_COEFFICIENT, I_COEFFICIENT = 21, 22, 23
    PROTECTION_CURRENT = 28
    HOMING_OFFSET = 31
    OPERATING_MODE = 33
    OVERLOAD_TORQUE = 36
    torque_enable = 40
    ACCELERATION = 41
    GOAL_POSITION = 42
    TORQUE_LIMIT = 48
    LOCK = 55
    PRESENT_POSITION, PRESENT_VELOCITY, PRESENT_LOAD = 56, 58, 60
    PRESENT_VOLTAGE, PRESENT_TEMPERATURE, MOVING = 62, 63, 66
    MAXIMUM_ACCELERATION = 85
    _READ_ONLY = (range(0, 5), range(56, 72))

    def encode_status(self, servo_id: int, error: int, params: bytes) -> bytes:
        return FeetechFraming().encode(servo_id, error, params)

    def encode_instruction(self, servo_id: int, instruction: int, params: bytes) -> bytes:
        return FeetechFraming().encode(servo_id, instruction, params)

    def decode_instruction(self, buffer: bytearray) -> Packet | None:
        return FeetechFraming().decode(buffer)

    def default_table(self, servo_id: int, position_ticks: float) -> bytearray:
        table = bytearray(self.table_size)
        for address, size, value in (
            (self.FIRMWARE_MAJOR, 1, 3),
            (self.FIRMWARE_MINOR, 1, 10),
            (self.MODEL, 2, self.MODEL_NUMBER),
            (self.ID, 1, servo_id),
            (self.BAUD_RATE, 1, 0),  # 0 = 1 Mbaud
            (self.return_delay_time, 1, 250),  # factory 500 µs
            (self.RESPONSE_STATUS_LEVEL, 1, 1),
            (self.MAX_POSITION_LIMIT, 2, 4095),
            (self.MAX_TORQUE_LIMIT, 2, 1000),
            (self.P_COEFFICIENT, 1, 32),
            (self.D_COEFFICIENT, 1, 32),
            (self.PROTECTION_CURRENT, 2, 500),
            (self.OVERLOAD_TORQUE, 1, 80),
            (self.GOAL_POSITION, 2, round(position_ticks) % TICKS_PER_TURN),
            (self.TORQUE_LIMIT, 2, 1000),
            (self.LOCK, 1, 1),
            (self.PRESENT_VOLTAGE, 1, 120),  # 0.1 V: the 12 V C018 variant
            (self.PRESENT_TEMPERATURE, 1, 30),
            (self.MAXIMUM_ACCELERATION, 1, 0),
        ):
            _put(table, address, size, value)
        return table

    def ping_params(self, table: bytearray) -> bytes:
        return b""

    def answers(self, table: bytearray, instruction: int) -> bool:
        # Level 0: only READ and PING are answered; level 1: every instruction.
        return table[self.RESPONSE_STATUS_LEVEL] >= 1 or instruction in (
            Instruction.PING,
            Instruction.READ,
        )

    def write_refused(self, table: bytearray, address: int, size: int) -> bool:
        span = range(address, address + size)
        if any(a in r for r in self._READ_ONLY for a in span):
            return True
        return address < self.torque_enable and table[self.LOCK] != 0

    def _homing(self, table: bytearray) -> int:
        return decode_sign_magnitude(read_unsigned(table, self.HOMING_OFFSET, 2), 11)

    def goal_ticks(self, table: bytearray) -> float:
        goal = read_unsigned(table, self.GOAL_POSITION, 2)
        low, high = (
            read_unsigned(table, self.MIN_POSITION_LIMIT, 2),
            read_unsigned(table, self.MAX_POSITION_LIMIT, 2),
        )
        if high > low:
            goal = min(max(goal, low), high)
        return float(goal + self._homing(table))

    def refresh(self, table: bytearray, position: float, velocity: float, goal: float) -> None:
        present = round(position - self._homing(table)) % TICKS_PER_TURN
        _put(table, self.PRESENT_POSITION, 2, present)
        speed = max(-32767, min(32767, round(velocity)))
        _put(table, self.PRESENT_VELOCITY, 2, encode_sign_magnitude(speed, 15))
        # Load in 0.1 % of stall torque, direction at bit 10: a stand-in proportional to the
        # tracking error while torque is on (no load model), zero with torque off.
        error = (goal - position) if table[self.torque_enable] else 0.0
        load = min(1000, round(abs(error) * 2))
        _put(table, self.PRESENT_LOAD, 2, load | (1 << 10) if error < 0 else load)
        table[self.MOVING] = 1 if abs(velocity) > 1.0 else 0


class DynamixelProtocol(ServoProtocol):
    """Dynamixel X series (XL330-M288 by default) over protocol 2.0.

    Homing: Present_Position = raw + Homing_Offset (4 bytes, two's complement); positions are
    not wrapped. EEPROM (below Torque_Enable) refuses writes while torque is on, answering the
    Access error (7), as the X series does.
    """

    name = "dynamixel"
    field_size = 2
    table_size = 256
    max_speed_ticks_s = 7000.0  # XL330-M288 at 5 V: 103 rpm unloaded ≈ 7030 ticks/s
    access_error = 7
    TICKS_S_PER_VELOCITY_UNIT = 0.229 * TICKS_PER_TURN / 60.0  # 0.229 rpm per unit
    MODEL, FIRMWARE, ID, BAUD_RATE = 0, 6, 7, 8
    return_delay_time = 9
    DRIVE_MODE, OPERATING_MODE, PROTOCOL_TYPE = 10, 11, 13
    HOMING_OFFSET = 20
    MAX_POSITION_LIMIT, MIN_POSITION_LIMIT = 48, 52
    torque_enable = 64
    STATUS_RETURN_LEVEL = 68
    POSITION_D_GAIN, POSITION_I_GAIN, POSITION_P_GAIN = 80, 82, 84
    GOAL_POSITION = 116
    MOVING = 122
    PRESENT_VELOCITY, PRESENT_POSITION = 128, 132
    PRESENT_INPUT_VOLTAGE, PRESENT_TEMPERATURE = 144, 146
    _READ_ONLY = (range(0, 7), range(70, 71), range(120, 148))

    def __init__(self, model_number: int = 1200) -> None:
        self.model_number = model_number  # XL330-M288 1200, XL330-M077 1190, XL430-W250 1060

    def encode_status(self, servo_id: int, error: int, params: bytes) -> bytes:
        return DynamixelFraming().encode(servo_id, error, params, status=True)

    def encode_instruction(self, servo_id: int, instruction: int, params: bytes) -> bytes:
        return DynamixelFraming().encode(servo_id, instruction, params)

    def decode_instruction(self, buffer: bytearray) -> Packet | None:
        return DynamixelFraming().decode(buffer)

    def default_table(self, servo_id: int, position_ticks: float) -> bytearray:
        table = bytearray(self.table_size)
        for address, size, value in (
            (self.MODEL, 2, self.model_number),
            (self.FIRMWARE, 1, 52),
            (self.ID, 1, servo_id),
            (self.BAUD_RATE, 1, 3),  # 3 = 1 Mbps
            (self.return_delay_time, 1, 250),
            (self.OPERATING_MODE, 1, 3),  # position control
            (self.PROTOCOL_TYPE, 1, 2),
            (self.MAX_POSITION_LIMIT, 4, 4095),
            (self.STATUS_RETURN_LEVEL, 1, 2),
            (self.POSITION_P_GAIN, 2, 400),
            (self.GOAL_POSITION, 4, round(position_ticks)),
            (self.PRESENT_INPUT_VOLTAGE, 2, 50),  # 0.1 V
            (self.PRESENT_TEMPERATURE, 1, 30),
        ):
            _put(table, address, size, value)
        return table

    def ping_params(self, table: bytearray) -> bytes:
        return bytes(table[self.MODEL : self.MODEL + 2]) + bytes((table[self.FIRMWARE],))

    def answers(self, table: bytearray, instruction: int) -> bool:
        # Level 0: PING only; 1: PING and READ; 2: everything.
        level = table[self.STATUS_RETURN_LEVEL]
        if instruction == Instruction.PING:
            return True
        if instruction in (Instruction.READ, Instruction.SYNC_READ):
            return level >= 1
        return level >= 2

    def write_refused(self, table: bytearray, address: int, size: int) -> bool:
        span = range(address, address + size)
        if any(a in r for r in self._READ_ONLY for a in span):
            return True
        return address < self.torque_enable and table[self.torque_enable] != 0

    def goal_ticks(self, table: bytearray) -> float:
        goal = decode_twos_complement(read_unsigned(table, self.GOAL_POSITION, 4), 4)
        low = decode_twos_complement(read_unsigned(table, self.MIN_POSITION_LIMIT, 4), 4)
        high = decode_twos_complement(read_unsigned(table, self.MAX_POSITION_LIMIT, 4), 4)
        if table[self.OPERATING_MODE] == 3 and high > low:
            goal = min(max(goal, low), high)
        return float(goal - decode_twos_complement(read_unsigned(table, self.HOMING_OFFSET, 4), 4))

    def refresh(self, table: bytearray, position: float, velocity: float, goal: float) -> None:
        homing = decode_twos_complement(read_unsigned(table, self.HOMING_OFFSET, 4), 4)
        _put(table, self.PRESENT_POSITION, 4, round(position) + homing)
        _put(table, self.PRESENT_VELOCITY, 4, round(velocity / self.TICKS_S_PER_VELOCITY_UNIT))
        table[self.MOVING] = 1 if abs(velocity) > 1.0 else 0
