"""Damiao MIT-mode frames: packing round trips at the range edges, clamping, special frames."""

from __future__ import annotations

from dataclasses import astuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_runtime.drivers.yam.damiao import (
    KD_MAX,
    KP_MAX,
    MODELS,
    MitCommand,
    MotorFeedback,
    MotorModel,
    MotorState,
    SpecialCommand,
    decode_feedback,
    decode_mit,
    encode_feedback,
    encode_mit,
    float_to_uint,
    motor_model,
    parse_refresh,
    parse_special,
    refresh_frame,
    special_frame,
    state_name,
    uint_to_float,
)

DM4340 = motor_model("DM4340")
DM4310 = motor_model("DM4310")


def step(low: float, high: float, bits: int) -> float:
    return (high - low) / ((1 << bits) - 1)


def test_model_table_has_the_yam_motors_with_their_factory_ranges() -> None:
    assert (DM4340.position_max_rad, DM4340.velocity_max_rad_s, DM4340.torque_max_nm) == (
        12.5,
        10.0,
        28.0,
    )
    assert (DM4310.position_max_rad, DM4310.velocity_max_rad_s, DM4310.torque_max_nm) == (
        12.5,
        30.0,
        10.0,
    )
    assert all(name == model.name for name, model in MODELS.items())


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"DM4310.*DM4340"):
        motor_model("DM4330")


def test_uint_mapping_hits_both_ends_and_clamps_beyond_them() -> None:
    assert float_to_uint(-12.5, -12.5, 12.5, 16) == 0
    assert float_to_uint(12.5, -12.5, 12.5, 16) == 0xFFFF
    assert float_to_uint(-100.0, -12.5, 12.5, 16) == 0
    assert float_to_uint(100.0, -12.5, 12.5, 16) == 0xFFFF
    assert float_to_uint(1e9, 0.0, KP_MAX, 12) == 0xFFF
    assert uint_to_float(0, -28.0, 28.0, 12) == -28.0
    assert uint_to_float(0xFFF, -28.0, 28.0, 12) == pytest.approx(28.0)


def test_mit_command_bytes_follow_the_documented_bit_layout() -> None:
    # p at the top, v at the bottom, kp at the top, kd at the bottom, torque at the top:
    # 16 bits FFFF | 12 bits 000 | 12 bits FFF | 12 bits 000 | 12 bits FFF.
    command = MitCommand(
        position_rad=12.5, velocity_rad_s=-10.0, kp=KP_MAX, kd=0.0, torque_nm=28.0
    )
    assert encode_mit(command, DM4340) == bytes.fromhex("FFFF000FFF000FFF")


@pytest.mark.parametrize("model", [DM4340, DM4310], ids=lambda model: model.name)
@pytest.mark.parametrize("edge", [-1.0, 1.0])
def test_mit_command_round_trips_at_the_range_edges(model: MotorModel, edge: float) -> None:
    command = MitCommand(
        position_rad=edge * model.position_max_rad,
        velocity_rad_s=edge * model.velocity_max_rad_s,
        kp=KP_MAX if edge > 0 else 0.0,
        kd=KD_MAX if edge > 0 else 0.0,
        torque_nm=edge * model.torque_max_nm,
    )
    assert astuple(decode_mit(encode_mit(command, model), model)) == pytest.approx(
        astuple(command)
    )


@settings(deadline=None)  # a loaded CI machine must not fail a pure function on time
@given(
    position=st.floats(-12.5, 12.5),
    velocity=st.floats(-30.0, 30.0),
    kp=st.floats(0.0, KP_MAX),
    kd=st.floats(0.0, KD_MAX),
    torque=st.floats(-10.0, 10.0),
)
def test_mit_command_round_trips_to_half_a_step(
    position: float, velocity: float, kp: float, kd: float, torque: float
) -> None:
    decoded = decode_mit(
        encode_mit(MitCommand(position, velocity, kp, kd, torque), DM4310), DM4310
    )
    assert abs(decoded.position_rad - position) <= step(-12.5, 12.5, 16) / 2 + 1e-12
    assert abs(decoded.velocity_rad_s - velocity) <= step(-30.0, 30.0, 12) / 2 + 1e-12
    assert abs(decoded.kp - kp) <= step(0.0, KP_MAX, 12) / 2 + 1e-12
    assert abs(decoded.kd - kd) <= step(0.0, KD_MAX, 12) / 2 + 1e-12
    assert abs(decoded.torque_nm - torque) <= step(-10.0, 10.0, 12) / 2 + 1e-12


def test_out_of_range_commands_are_clamped_to_the_model_ranges() -> None:
    command = MitCommand(
        position_rad=40.0, velocity_rad_s=-99.0, kp=900.0, kd=-1.0, torque_nm=-50.0
    )
    decoded = decode_mit(encode_mit(command, DM4340), DM4340)
    assert astuple(decoded) == pytest.approx((12.5, -10.0, KP_MAX, 0.0, -28.0))


@pytest.mark.parametrize("edge", [-1.0, 1.0])
def test_feedback_round_trips_at_the_range_edges(edge: float) -> None:
    feedback = MotorFeedback(
        motor_id_nibble=7,
        state=MotorState.ENABLED,
        position_rad=edge * 12.5,
        velocity_rad_s=edge * 10.0,
        torque_nm=edge * 28.0,
        mos_temperature_c=41,
        rotor_temperature_c=55,
    )
    decoded = decode_feedback(encode_feedback(feedback, DM4340), DM4340)
    assert astuple(decoded) == pytest.approx(astuple(feedback))


def test_feedback_first_byte_carries_state_and_id_nibbles() -> None:
    feedback = MotorFeedback(3, MotorState.COMMUNICATION_LOST, 0.0, 0.0, 0.0)
    data = encode_feedback(feedback, DM4310)
    assert data[0] == 0xD3
    decoded = decode_feedback(data, DM4310)
    assert (decoded.motor_id_nibble, decoded.state) == (3, MotorState.COMMUNICATION_LOST)
    assert state_name(decoded.state) == "communication lost"
    assert state_name(0x5) == "unknown state 0x5"


def test_feedback_layout_matches_the_manual() -> None:
    # id 1 enabled; position mid-scale 0x8000; velocity 0x800; torque 0x800; 30 °C, 40 °C.
    decoded = decode_feedback(bytes.fromhex("1180008008001E28"), DM4340)
    assert decoded.motor_id_nibble == 1 and decoded.state == MotorState.ENABLED
    assert decoded.position_rad == pytest.approx(0.0, abs=step(-12.5, 12.5, 16))
    assert decoded.velocity_rad_s == pytest.approx(0.0, abs=step(-10.0, 10.0, 12))
    assert decoded.torque_nm == pytest.approx(0.0, abs=step(-28.0, 28.0, 12))
    assert (decoded.mos_temperature_c, decoded.rotor_temperature_c) == (30, 40)


def test_frames_must_have_eight_bytes() -> None:
    with pytest.raises(ValueError, match="8 data bytes"):
        decode_feedback(b"\x11\x00", DM4340)
    with pytest.raises(ValueError, match="8 data bytes"):
        decode_mit(b"", DM4340)


@pytest.mark.parametrize(
    ("command", "last_byte"),
    [
        (SpecialCommand.ENABLE, 0xFC),
        (SpecialCommand.DISABLE, 0xFD),
        (SpecialCommand.SAVE_ZERO, 0xFE),
        (SpecialCommand.CLEAR_ERROR, 0xFB),
    ],
)
def test_special_frames_round_trip(command: SpecialCommand, last_byte: int) -> None:
    data = special_frame(command)
    assert data == b"\xff" * 7 + bytes((last_byte,))
    assert parse_special(data) is command


def test_ordinary_mit_frames_are_not_special() -> None:
    assert parse_special(encode_mit(MitCommand(0.0, kp=80.0, kd=5.0), DM4340)) is None
    assert parse_special(b"\xff" * 7 + b"\x00") is None
    assert parse_special(b"\xff" * 7) is None


def test_refresh_frame_addresses_a_motor_by_id() -> None:
    data = refresh_frame(0x107)
    assert data == bytes((0x07, 0x01, 0xCC, 0, 0, 0, 0, 0))
    assert parse_refresh(data) == 0x107
    assert parse_refresh(b"\x07\x00\x00\x00\x00\x00\x00\x00") is None
