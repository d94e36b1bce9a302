"""Servo wire protocols, the servo-bus emulator's control tables, and SO100 calibration files.

Framing is checked against the vendors' SDKs (their packet builders and parsers, fed through a
byte-buffer port), the emulator through raw packets on its pty, calibration without hardware.
"""

from __future__ import annotations

import math
import os
import select
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vla_runtime.drivers.base import MultiArmDriver
from vla_runtime.drivers.emulators.servo_bus import DynamixelBusEmulator, ServoBusEmulator
from vla_runtime.drivers.emulators.servo_protocols import (
    ChecksumError,
    DynamixelFraming,
    DynamixelProtocol,
    FeetechFraming,
    FeetechProtocol,
    Instruction,
    Packet,
    decode_sign_magnitude,
    decode_twos_complement,
    dynamixel_crc16,
    encode_sign_magnitude,
    feetech_checksum,
)
from vla_runtime.drivers.so100.bus import Encoding, FeetechBus, Register
from vla_runtime.drivers.so100.calibration import (
    ArmCalibration,
    CalibrationError,
    JointCalibration,
)
from vla_runtime.drivers.so100.driver import So100Config, So100Driver, build

scs = pytest.importorskip("scservo_sdk")
dxl = pytest.importorskip("dynamixel_sdk")

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")


class BufferPort:
    """The slice of an SDK PortHandler its packet handlers use, over byte buffers."""

    def __init__(self, incoming: bytes = b"") -> None:
        self.incoming = bytearray(incoming)
        self.written = b""
        self.is_using = False

    def clearPort(self) -> None:  # noqa: N802 - the SDK's name
        pass

    def writePort(self, packet: list[int]) -> int:  # noqa: N802
        self.written += bytes(packet)
        return len(packet)

    def readPort(self, length: int) -> bytes:  # noqa: N802
        chunk = bytes(self.incoming[:length])
        del self.incoming[:length]
        return chunk

    def isPacketTimeout(self) -> bool:  # noqa: N802
        return not self.incoming

    def setPacketTimeout(self, packet_length: int) -> None:  # noqa: N802
        pass


# --- framing ---------------------------------------------------------------------------------


def test_feetech_checksum_of_a_ping() -> None:
    # PING id 1: FF FF 01 02 01 FB, the example of every protocol-0 manual.
    assert FeetechFraming().encode(1, Instruction.PING, b"") == bytes.fromhex("ffff010201fb")
    assert feetech_checksum(bytes((1, 2, 1))) == 0xFB


def test_feetech_instructions_match_the_sdk() -> None:
    handler = scs.PacketHandler(0)
    port = BufferPort()
    handler.readTx(port, 3, 56, 2)
    assert port.written == FeetechFraming().encode(3, Instruction.READ, bytes((56, 2)))
    port = BufferPort()
    handler.syncReadTx(port, 56, 4, [1, 2, 3], 3)
    expected = FeetechFraming().encode(0xFE, Instruction.SYNC_READ, bytes((56, 4, 1, 2, 3)))
    assert port.written == expected
    port = BufferPort()
    handler.syncWriteTxOnly(port, 42, 2, [1, 0x00, 0x08, 2, 0xFF, 0x0F], 6)
    params = bytes((42, 2, 1, 0x00, 0x08, 2, 0xFF, 0x0F))
    assert port.written == FeetechFraming().encode(0xFE, Instruction.SYNC_WRITE, params)
    # ...and our decoder reads what the SDK wrote.
    assert FeetechFraming().decode(bytearray(port.written)) == Packet(0xFE, 0x83, params)


def test_feetech_status_packets_parse_in_the_sdk() -> None:
    handler = scs.PacketHandler(0)
    status = FeetechFraming().encode(5, 0, bytes((0x00, 0x08)))
    packet, result = handler.rxPacket(BufferPort(status))
    assert result == scs.COMM_SUCCESS and packet[2] == 5 and packet[5:7] == [0x00, 0x08]
    corrupted = status[:-1] + bytes((status[-1] ^ 0xFF,))
    assert handler.rxPacket(BufferPort(corrupted))[1] == scs.COMM_RX_CORRUPT


def test_feetech_decoder_resynchronises_and_rejects_bad_checksums() -> None:
    framing = FeetechFraming()
    good = framing.encode(2, Instruction.READ, bytes((56, 2)))
    buffer = bytearray(b"\x00\x13\xff" + good[:5])
    assert framing.decode(buffer) is None  # garbage dropped, half a packet kept
    buffer += good[5:]
    assert framing.decode(buffer) == Packet(2, Instruction.READ, bytes((56, 2)))
    assert not buffer
    bad = bytearray(good[:-1] + bytes((good[-1] ^ 1,)))
    with pytest.raises(ChecksumError):
        framing.decode(bad)
    assert not bad  # the bad packet is consumed, not retried forever


def test_dynamixel_crc_matches_the_manual_and_the_sdk() -> None:
    # The e-Manual's protocol 2.0 PING example for id 1: FF FF FD 00 01 03 00 01 19 4E.
    ping = DynamixelFraming().encode(1, Instruction.PING, b"")
    assert ping == bytes.fromhex("fffffd0001030001194e")
    data = bytes(range(200))
    sdk_crc = dxl.Protocol2PacketHandler().updateCRC(0, list(data), len(data))
    assert dynamixel_crc16(data) == sdk_crc


def test_dynamixel_instructions_match_the_sdk() -> None:
    handler = dxl.Protocol2PacketHandler()
    port = BufferPort()
    handler.writeTxOnly(port, 1, 116, 4, [0x00, 0x08, 0x00, 0x00])
    params = bytes((116, 0, 0x00, 0x08, 0x00, 0x00))
    assert port.written == DynamixelFraming().encode(1, Instruction.WRITE, params)
    assert DynamixelFraming().decode(bytearray(port.written)) == Packet(1, 3, params)
    port = BufferPort()
    handler.syncReadTx(port, 132, 4, [1, 2], 2, False)
    params = bytes((132, 0, 4, 0, 1, 2))
    assert port.written == DynamixelFraming().encode(0xFE, Instruction.SYNC_READ, params)


def test_dynamixel_byte_stuffing() -> None:
    data = bytes((0xFF, 0xFF, 0xFD, 0x00))  # a Goal_Position whose bytes look like a header
    params = bytes((116, 0)) + data
    stuffed = DynamixelFraming().encode(1, Instruction.WRITE, params)
    assert b"\xff\xff\xfd\xfd" in stuffed and stuffed[5] == 10  # one extra FD counted
    assert DynamixelFraming().decode(bytearray(stuffed)) == Packet(1, 3, params)
    # dynamixel_sdk 4.1 loses its own stuffing (addStuffing rebinds a local list), so a real
    # SDK sends this unstuffed; the length and CRC still agree, and the decoder accepts it.
    port = BufferPort()
    dxl.Protocol2PacketHandler().writeTxOnly(port, 1, 116, 4, list(data))
    assert DynamixelFraming().decode(bytearray(port.written)) == Packet(1, 3, params)
    # Status packets: the SDK removes the stuffing our encoder adds.
    status = DynamixelFraming().encode(1, 0, data, status=True)
    assert dxl.Protocol2PacketHandler().readRx(BufferPort(status), 1, 4)[0] == list(data)


def test_dynamixel_status_packets_parse_in_the_sdk() -> None:
    handler = dxl.Protocol2PacketHandler()
    status = DynamixelFraming().encode(7, 0, bytes((0xB0, 0x04, 0x34)), status=True)
    data, result, error = handler.readRx(BufferPort(status), 7, 3)
    assert (result, error, data) == (dxl.COMM_SUCCESS, 0, [0xB0, 0x04, 0x34])
    assert DynamixelFraming().decode(bytearray(status), status=True) == Packet(
        7, 0, bytes((0xB0, 0x04, 0x34))
    )
    corrupted = status[:-1] + bytes((status[-1] ^ 0xFF,))
    assert handler.rxPacket(BufferPort(corrupted), False)[1] == dxl.COMM_RX_CORRUPT


@given(st.integers(-2047, 2047))
def test_sign_magnitude_round_trip(value: int) -> None:
    raw = encode_sign_magnitude(value, 11)
    assert 0 <= raw < 4096 and decode_sign_magnitude(raw, 11) == value
    homing = Register("Homing_Offset", 31, 2, Encoding.SIGN_MAGNITUDE, sign_bit=11)
    assert homing.encode(value) == raw and homing.decode(raw) == value


@given(st.integers(-(2**31), 2**31 - 1))
def test_twos_complement_round_trip(value: int) -> None:
    register = Register("Present_Position", 132, 4, Encoding.TWOS_COMPLEMENT)
    raw = register.encode(value)
    assert decode_twos_complement(raw, 4) == value == register.decode(raw)


def test_register_encoding_rejects_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="2048"):
        Register("Homing_Offset", 31, 2, Encoding.SIGN_MAGNITUDE, sign_bit=11).encode(2048)
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        Register("Goal_Position", 42, 2).encode(-1)


# --- the emulator through raw packets on its pty -------------------------------------------


class Wire:
    """Raw request/answer exchange with an emulator, through its pty slave."""

    def __init__(self, emulator: ServoBusEmulator) -> None:
        self.protocol = emulator.protocol
        self.fd = os.open(emulator.port, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)

    def send(self, servo_id: int, instruction: int, params: bytes = b"") -> None:
        os.write(self.fd, self.protocol.encode_instruction(servo_id, instruction, params))

    def answers(self, count: int, timeout_s: float = 0.5) -> list[Packet]:
        buffer, packets = bytearray(), []
        status = isinstance(self.protocol, DynamixelProtocol)
        while len(packets) < count:
            ready, _, _ = select.select([self.fd], [], [], timeout_s)
            if not ready:
                break
            buffer += os.read(self.fd, 1024)
            while True:
                if status:
                    packet = DynamixelFraming().decode(buffer, status=True)
                else:
                    packet = FeetechFraming().decode(buffer)
                if packet is None:
                    break
                packets.append(packet)
        return packets

    def ask(self, servo_id: int, instruction: int, params: bytes = b"") -> Packet | None:
        self.send(servo_id, instruction, params)
        answers = self.answers(1)
        return answers[0] if answers else None


@pytest.fixture
def feetech() -> Iterator[tuple[ServoBusEmulator, Wire]]:
    emulator = ServoBusEmulator([1, 2, 3], physics_rate_hz=None)
    with emulator:
        wire = Wire(emulator)
        # Factory 500 µs per answer is realistic but slow for many small exchanges.
        for servo_id in (1, 2, 3):
            wire.ask(servo_id, Instruction.WRITE, bytes((55, 0)))  # Lock = 0
            wire.ask(servo_id, Instruction.WRITE, bytes((7, 0)))  # Return_Delay_Time = 0
        yield emulator, wire
        os.close(wire.fd)


def test_feetech_ping_and_model_number(feetech: tuple[ServoBusEmulator, Wire]) -> None:
    _, wire = feetech
    assert wire.ask(2, Instruction.PING) == Packet(2, 0, b"")
    assert wire.ask(9, Instruction.PING) is None  # no such servo: silence
    answer = wire.ask(1, Instruction.READ, bytes((3, 2)))
    assert answer is not None and int.from_bytes(answer.params, "little") == 777  # STS3215


def test_feetech_eeprom_takes_writes_only_unlocked(
    feetech: tuple[ServoBusEmulator, Wire],
) -> None:
    emulator, wire = feetech
    wire.ask(1, Instruction.WRITE, bytes((55, 1)))  # Lock = 1
    wire.ask(1, Instruction.WRITE, bytes((21, 16)))  # P_Coefficient: EEPROM, refused
    assert emulator.read_register(1, 21, 1) == 32
    wire.ask(1, Instruction.WRITE, bytes((55, 0)))
    wire.ask(1, Instruction.WRITE, bytes((21, 16)))
    assert emulator.read_register(1, 21, 1) == 16
    wire.ask(1, Instruction.WRITE, bytes((56, 0, 0)))  # Present_Position is read-only
    assert emulator.read_register(1, 56, 2) == 2048


def test_feetech_homing_offset_shifts_present_position(
    feetech: tuple[ServoBusEmulator, Wire],
) -> None:
    emulator, wire = feetech
    emulator.set_positions({1: 1000.0, 2: 100.0})
    # Present = raw − offset; the offset is sign-magnitude with the sign at bit 11.
    wire.ask(1, Instruction.WRITE, bytes((31,)) + (500 | 1 << 11).to_bytes(2, "little"))
    wire.ask(2, Instruction.WRITE, bytes((31,)) + (300).to_bytes(2, "little"))
    answer = wire.ask(1, Instruction.READ, bytes((56, 2)))
    assert answer is not None and int.from_bytes(answer.params, "little") == 1500
    answer = wire.ask(2, Instruction.READ, bytes((56, 2)))
    assert answer is not None and int.from_bytes(answer.params, "little") == 4096 - 200  # wraps


def test_feetech_goal_is_clamped_to_the_position_limits(
    feetech: tuple[ServoBusEmulator, Wire],
) -> None:
    emulator, wire = feetech
    wire.ask(1, Instruction.WRITE, bytes((9,)) + (1000).to_bytes(2, "little"))
    wire.ask(1, Instruction.WRITE, bytes((11,)) + (3000).to_bytes(2, "little"))
    wire.ask(1, Instruction.WRITE, bytes((42,)) + (3500).to_bytes(2, "little"))
    assert emulator.goal_positions()[1] == 3000.0


def test_feetech_sync_read_answers_in_order_and_skips_missing(
    feetech: tuple[ServoBusEmulator, Wire],
) -> None:
    emulator, wire = feetech
    emulator.set_positions({1: 11.0, 2: 22.0, 3: 33.0})
    emulator.set_faults(missing_ids=[2])
    wire.send(0xFE, Instruction.SYNC_READ, bytes((56, 2, 3, 2, 1)))
    answers = wire.answers(3, timeout_s=0.2)
    assert [(a.servo_id, int.from_bytes(a.params, "little")) for a in answers] == [
        (3, 33),
        (1, 11),
    ]


def test_feetech_sync_write_reg_write_and_action(feetech: tuple[ServoBusEmulator, Wire]) -> None:
    emulator, wire = feetech
    params = bytes((42, 2, 1)) + (100).to_bytes(2, "little") + bytes((3,))
    wire.send(0xFE, Instruction.SYNC_WRITE, params + (300).to_bytes(2, "little"))
    assert wire.answers(1, timeout_s=0.1) == []  # broadcast: nobody answers
    assert emulator.goal_positions() == {1: 100.0, 2: 2048.0, 3: 300.0}
    wire.ask(2, Instruction.REG_WRITE, bytes((42,)) + (700).to_bytes(2, "little"))
    assert emulator.goal_positions()[2] == 2048.0  # registered, not applied yet
    wire.send(0xFE, Instruction.ACTION)
    wire.ask(2, Instruction.PING)  # a round trip, so the ACTION has been handled
    assert emulator.goal_positions()[2] == 700.0


def test_feetech_status_level_zero_answers_reads_only(
    feetech: tuple[ServoBusEmulator, Wire],
) -> None:
    _, wire = feetech
    assert wire.ask(1, Instruction.WRITE, bytes((8, 0))) is None  # Response_Status_Level = 0
    assert wire.ask(1, Instruction.WRITE, bytes((40, 0))) is None
    assert wire.ask(1, Instruction.READ, bytes((40, 1))) == Packet(1, 0, b"\x00")


def test_bad_checksums_and_half_packets_are_ignored(
    feetech: tuple[ServoBusEmulator, Wire],
) -> None:
    emulator, wire = feetech
    frame = FeetechFraming().encode(1, Instruction.PING, b"")
    os.write(wire.fd, frame[:-1] + bytes((frame[-1] ^ 0x55,)))
    assert wire.answers(1, timeout_s=0.1) == []
    assert emulator.stats.bad_checksums == 1
    os.write(wire.fd, frame[:4])  # the rest never comes: dropped after the byte timeout
    assert wire.answers(1, timeout_s=0.15) == []
    assert wire.ask(1, Instruction.PING) == Packet(1, 0, b"")


def test_servo_dynamics_follow_the_goal_only_with_torque(
    feetech: tuple[ServoBusEmulator, Wire],
) -> None:
    emulator, wire = feetech
    wire.ask(1, Instruction.WRITE, bytes((42,)) + (2148).to_bytes(2, "little"))
    emulator.step(0.03)
    assert emulator.positions()[1] == 2048.0  # torque off: nothing moves
    wire.ask(1, Instruction.WRITE, bytes((40, 1)))
    emulator.step(0.03)  # one time constant: 63 % of a 100-tick step
    assert emulator.positions()[1] == pytest.approx(2048 + 100 * (1 - math.exp(-1)))
    wire.ask(1, Instruction.WRITE, bytes((42,)) + (4000).to_bytes(2, "little"))
    before = emulator.positions()[1]
    emulator.step(0.01)  # a long move is speed-limited: 3000 ticks/s
    assert emulator.positions()[1] - before == pytest.approx(30.0)
    answer = wire.ask(1, Instruction.READ, bytes((58, 2)))
    assert answer is not None
    assert decode_sign_magnitude(int.from_bytes(answer.params, "little"), 15) == 3000


def test_dynamixel_control_table_semantics() -> None:
    with DynamixelBusEmulator([1, 2], physics_rate_hz=None) as emulator:
        wire = Wire(emulator)
        try:
            ping = wire.ask(1, Instruction.PING)
            assert ping is not None and ping.params[:2] == (1200).to_bytes(2, "little")
            emulator.set_positions({1: 5000.0})  # not wrapped: a second turn
            wire.ask(
                1,
                Instruction.WRITE,
                (20).to_bytes(2, "little") + (-100).to_bytes(4, "little", signed=True),
            )
            answer = wire.ask(
                1, Instruction.READ, (132).to_bytes(2, "little") + (4).to_bytes(2, "little")
            )
            assert answer is not None
            assert int.from_bytes(answer.params, "little", signed=True) == 4900
            wire.ask(1, Instruction.WRITE, bytes((64, 0, 1)))  # torque on
            refused = wire.ask(1, Instruction.WRITE, bytes((20, 0, 0, 0, 0, 0)))
            assert refused == Packet(1, 7, b"")  # EEPROM with torque on: Access error
            unknown = wire.ask(1, 0x99)
            assert unknown == Packet(1, 2, b"")  # Instruction error
        finally:
            os.close(wire.fd)


def test_fault_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="drop_probability"):
        ServoBusEmulator([1], drop_probability=1.5)
    with pytest.raises(ValueError, match="distinct"):
        ServoBusEmulator([1, 1])
    emulator = ServoBusEmulator([1])
    with pytest.raises(RuntimeError, match="start"):
        _ = emulator.port


def test_feetech_protocol_load_is_signed_by_direction() -> None:
    protocol = FeetechProtocol()
    table = protocol.default_table(1, 2048.0)
    table[protocol.torque_enable] = 1
    protocol.refresh(table, 2048.0, 0.0, 2000.0)
    assert int.from_bytes(table[60:62], "little") == (96 | 1 << 10)


# --- calibration ---------------------------------------------------------------------------


def calibration(**changes: Any) -> ArmCalibration:
    joints = tuple(
        JointCalibration(
            i + 1, homing_offset_ticks=10 * i, range_min_ticks=500, range_max_ticks=3500
        )
        for i in range(6)
    )
    return ArmCalibration(JOINTS, joints, **changes)


@given(
    st.lists(st.integers(500, 3500), min_size=6, max_size=6),
    st.lists(st.sampled_from([1, -1]), min_size=6, max_size=6),
    st.lists(st.floats(-math.pi, math.pi), min_size=6, max_size=6),
)
def test_ticks_and_radians_round_trip(
    ticks: list[int], signs: list[int], offsets: list[float]
) -> None:
    arm = calibration().with_convention(signs, offsets)
    radians = arm.ticks_to_rad(ticks)
    assert list(arm.rad_to_ticks(radians)) == ticks


def test_conversion_follows_the_sign_and_offset_convention() -> None:
    # MolmoAct2's SO checkpoints: signs 1,-1,1,1,1,1 and offsets 0,90°,90°,0,0,0.
    arm = calibration().with_convention(
        [1, -1, 1, 1, 1, 1], [0, math.pi / 2, math.pi / 2, 0, 0, 0]
    )
    radians = arm.ticks_to_rad([2048, 2048 + 1024, 2048, 2048 - 1024, 2048, 2048])
    assert radians == pytest.approx([0, 0, math.pi / 2, -math.pi / 2, 0, 0])
    assert arm.velocities_to_rad_s([4096, 4096, 0, 0, 0, 0]) == pytest.approx(
        [2 * math.pi, -2 * math.pi, 0, 0, 0, 0]
    )


def test_commands_are_clamped_to_the_recorded_range_and_must_be_finite() -> None:
    arm = calibration()
    assert list(arm.rad_to_ticks([10.0, -10.0, 0, 0, 0, 0])) == [3500, 500, 2048, 2048, 2048, 2048]
    with pytest.raises(ValueError, match="finite"):
        arm.rad_to_ticks([math.nan, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="6 finite"):
        arm.rad_to_ticks([0.0] * 5)


def test_yaml_round_trip(tmp_path: Path) -> None:
    arm = calibration(role="leader").with_convention(offsets_rad=[0.0, 1.5, 1.5, 0.0, 0.0, 0.25])
    path = tmp_path / "nested" / "so100.yaml"
    arm.save(path)
    assert ArmCalibration.load(path) == arm
    assert path.read_text().startswith("# Servo calibration")


BAD_FILES = [
    ("joints: [1, 2]", "'joints' must map"),
    ("version: 7\njoints: {a: {id: 1}}", "version 7 is not supported"),
    ("joints: {a: {id: 1, sgn: 1}}", "Did you mean 'sign'"),
    ("joints: {a: {homing_offset_ticks: 3}}", "'id' (the servo id) is missing"),
    ("joints: {a: {id: 1, sign: 2}}", "joint 'a': sign must be 1 or -1"),
    ("joints: {a: {id: 1, range_min_ticks: 3000, range_max_ticks: 1000}}", "must be below"),
    ("joints: {a: {id: 1, homing_offset_ticks: 2048}}", "outside ±2047"),
    ("joints: {a: {id: 1, range_max_ticks: 5000}}", "leaves the feetech position range"),
    ("joints: {a: {id: 1}, b: {id: 1}}", "servo ids repeat"),
    ("joints: {a: {id: '1'}}", "id must be an integer"),
    ("joints: {a: {id: 1}}\nbus: can", "bus must be one of"),
    ("joints: {a: {id: 1}\n", "not valid YAML"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_bad_calibration_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CalibrationError) as caught:
        ArmCalibration.load(path)
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_missing_calibration_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="vla-runtime calibrate so100"):
        ArmCalibration.load(tmp_path / "absent.yaml")


def test_calibration_must_match_the_driver(tmp_path: Path) -> None:
    path = tmp_path / "arm.yaml"
    calibration().save(path)
    with pytest.raises(CalibrationError, match="other arm's file"):
        build(
            JOINTS,
            {"port": "/dev/null", "ids": [11, 12, 13, 14, 15, 16], "calibration": str(path)},
        )
    driver = build(JOINTS, {"port": "/dev/null", "calibration": str(path)})
    assert isinstance(driver, So100Driver) and not driver.warnings


# --- driver configuration (no I/O before connect) ------------------------------------------


def test_config_validation_says_what_to_change() -> None:
    with pytest.raises(ValueError, match="Did you mean 'baudrate'"):
        So100Config.from_parameters({"baud_rate": 1_000_000})
    with pytest.raises(ValueError, match="use 1000000"):
        So100Config(baudrate=2_000_000)
    with pytest.raises(ValueError, match="repeat a servo id"):
        So100Config(ids=(1, 1, 2))
    with pytest.raises(ValueError, match="6 joint names for 5 servos"):
        build(JOINTS, {"ids": [1, 2, 3, 4, 5]})


def test_identity_calibration_is_reported_as_a_warning() -> None:
    driver = build(JOINTS, {"port": "/dev/ttyACM9", "calibration": ""})
    assert isinstance(driver, So100Driver)
    assert "identity calibration" in driver.warnings[0] and "/dev/ttyACM9" in driver.warnings[0]


def test_bimanual_splits_joint_names_in_order() -> None:
    names = tuple(f"left_{n}" for n in JOINTS) + tuple(f"right_{n}" for n in JOINTS)
    driver = build(
        names, {"baudrate": 1_000_000, "arms": [{"port": "/dev/a"}, {"port": "/dev/b"}]}
    )
    assert isinstance(driver, MultiArmDriver)
    assert [arm.joint_names for arm in driver.arms] == [names[:6], names[6:]]
    with pytest.raises(ValueError, match="share a port"):
        build(names, {"arms": [{"port": "/dev/a"}, {"port": "/dev/a"}]})
    with pytest.raises(ValueError, match="12 joints"):
        build(names, {"arms": [{"port": "/dev/a"}, {"port": "/dev/b", "ids": [1, 2]}]})


def test_feetech_homing_offset_for_puts_the_pose_at_the_target() -> None:
    bus = FeetechBus("/dev/null", [1])
    assert bus.homing_offset_for(3000, 2048) == 952  # present = raw − offset
    assert bus.homing_offset_for(0, 2048) == -2047  # ±2048 does not fit: one tick short
    assert np.isclose(bus.homing_offset_for(2048, 2048), 0)
