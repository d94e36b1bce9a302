"""Damiao DM-J series CAN protocol in MIT mode: frame packing and parsing, no I/O.

Facts the code relies on (Damiao DM-J4310-2EC manual; i2rt `motor_drivers/dm_driver.py`):

- Classic CAN 2.0A, 11-bit ids, 8 data bytes, 1 Mbit/s. An MIT command goes to CAN id = motor
  id; the motor answers every frame addressed to it with one feedback frame on its *master id*
  (a per-motor register; i2rt's YAM configures master id = motor id + 0x10).
- Special frames `FF FF FF FF FF FF FF xx` to the motor id: FC enable, FD disable, FE save the
  current position as zero, FB clear the error state.
- Refresh (read the state without commanding): CAN id 0x7FF, data `id_lo id_hi CC 00 ...`.
- MIT command, big-endian bit fields: position 16 bit | velocity 12 | kp 12 | kd 12 | torque 12,
  each an unsigned integer spread linearly over the model's range ([-P_MAX, P_MAX] etc.,
  kp [0, 500], kd [0, 5]). The motor applies `tau = kp (p_des - p) + kd (v_des - v) + t_ff`.
- Feedback: byte 0 = state << 4 | (motor id & 0xF); position 16 bit; velocity 12; torque 12;
  MOS temperature [°C]; rotor temperature [°C].
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

KP_MAX = 500.0  # [N·m/rad] top of the MIT kp field
KD_MAX = 5.0  # [N·m·s/rad] top of the MIT kd field
REFRESH_CAN_ID = 0x7FF
REFRESH_CODE = 0xCC
MAX_STANDARD_ID = 0x7FF
# i2rt's YAM sets each motor's master (feedback) id to its motor id + 0x10 ("p16").
DEFAULT_FEEDBACK_ID_OFFSET = 0x10

_SPECIAL_PREFIX = b"\xff" * 7


@dataclass(frozen=True)
class MotorModel:
    """Ranges one Damiao model spreads the MIT fields over (factory PMAX/VMAX/TMAX registers).

    Attributes:
        name: model name as in configs, e.g. "DM4340".
        position_max_rad: P_MAX; positions span [-P_MAX, P_MAX] [rad].
        velocity_max_rad_s: V_MAX; velocities span [-V_MAX, V_MAX] [rad/s].
        torque_max_nm: T_MAX; torques span [-T_MAX, T_MAX] [N·m].
    """

    name: str
    position_max_rad: float
    velocity_max_rad_s: float
    torque_max_nm: float


# Factory ranges, as i2rt programs them (motor_drivers/utils.py `MotorType`).
MODELS: Mapping[str, MotorModel] = MappingProxyType(
    {
        "DM3507": MotorModel("DM3507", 12.5, 50.0, 5.0),
        "DM4310": MotorModel("DM4310", 12.5, 30.0, 10.0),
        "DM4340": MotorModel("DM4340", 12.5, 10.0, 28.0),
        "DM6248": MotorModel("DM6248", 12.5, 20.0, 120.0),
        "DM8009": MotorModel("DM8009", 12.5, 45.0, 54.0),
    }
)


def motor_model(name: str) -> MotorModel:
    """The model table entry for `name`; an unknown name fails with the known ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown Damiao motor model {name!r}; known: {', '.join(sorted(MODELS))}"
        ) from None


class SpecialCommand(enum.IntEnum):
    """Last byte of a special frame (the first seven are 0xFF)."""

    ENABLE = 0xFC
    DISABLE = 0xFD
    SAVE_ZERO = 0xFE
    CLEAR_ERROR = 0xFB


class MotorState(enum.IntEnum):
    """The state nibble of a feedback frame."""

    DISABLED = 0x0
    ENABLED = 0x1
    OVER_VOLTAGE = 0x8
    UNDER_VOLTAGE = 0x9
    OVER_CURRENT = 0xA
    MOS_OVER_TEMPERATURE = 0xB
    ROTOR_OVER_TEMPERATURE = 0xC
    # No command within the motor's CAN timeout (400 ms on YAM): the motor damps.
    COMMUNICATION_LOST = 0xD
    OVERLOAD = 0xE


def state_name(code: int) -> str:
    """Readable name of a feedback state nibble, unknown codes included."""
    try:
        return MotorState(code).name.lower().replace("_", " ")
    except ValueError:
        return f"unknown state 0x{code:X}"


@dataclass(frozen=True)
class MitCommand:
    """One MIT-mode command: `tau = kp (p_des - p) + kd (v_des - v) + t_ff`.

    Attributes:
        position_rad: p_des [rad].
        velocity_rad_s: v_des [rad/s].
        kp: position gain [N·m/rad], 0..500.
        kd: velocity gain [N·m·s/rad], 0..5.
        torque_nm: feed-forward torque t_ff [N·m].
    """

    position_rad: float
    velocity_rad_s: float = 0.0
    kp: float = 0.0
    kd: float = 0.0
    torque_nm: float = 0.0


@dataclass(frozen=True)
class MotorFeedback:
    """One parsed feedback frame.

    Attributes:
        motor_id_nibble: the low four bits of the answering motor's id (all the frame carries).
        state: state nibble, a `MotorState` value for known codes.
        position_rad: measured output position [rad].
        velocity_rad_s: measured velocity [rad/s].
        torque_nm: measured torque [N·m].
        mos_temperature_c: driver MOSFET temperature [°C].
        rotor_temperature_c: rotor temperature [°C].
    """

    motor_id_nibble: int
    state: int
    position_rad: float
    velocity_rad_s: float
    torque_nm: float
    mos_temperature_c: int = 0
    rotor_temperature_c: int = 0


def float_to_uint(value: float, low: float, high: float, bits: int) -> int:
    """Clamp `value` to [low, high] and spread it over an unsigned `bits`-bit integer."""
    top = (1 << bits) - 1
    clamped = min(max(value, low), high)
    return min(top, max(0, round((clamped - low) * top / (high - low))))


def uint_to_float(raw: int, low: float, high: float, bits: int) -> float:
    """Inverse of `float_to_uint` (to within half a step)."""
    return low + raw * (high - low) / ((1 << bits) - 1)


def encode_mit(command: MitCommand, model: MotorModel) -> bytes:
    """Pack an MIT command; out-of-range values are clamped to the model's ranges."""
    p = float_to_uint(command.position_rad, -model.position_max_rad, model.position_max_rad, 16)
    v = float_to_uint(
        command.velocity_rad_s, -model.velocity_max_rad_s, model.velocity_max_rad_s, 12
    )
    kp = float_to_uint(command.kp, 0.0, KP_MAX, 12)
    kd = float_to_uint(command.kd, 0.0, KD_MAX, 12)
    t = float_to_uint(command.torque_nm, -model.torque_max_nm, model.torque_max_nm, 12)
    return bytes(
        (
            p >> 8,
            p & 0xFF,
            v >> 4,
            (v & 0xF) << 4 | kp >> 8,
            kp & 0xFF,
            kd >> 4,
            (kd & 0xF) << 4 | t >> 8,
            t & 0xFF,
        )
    )


def decode_mit(data: bytes | bytearray, model: MotorModel) -> MitCommand:
    """Unpack an MIT command frame (the motor side of `encode_mit`)."""
    _require_length(data)
    p = data[0] << 8 | data[1]
    v = data[2] << 4 | data[3] >> 4
    kp = (data[3] & 0xF) << 8 | data[4]
    kd = data[5] << 4 | data[6] >> 4
    t = (data[6] & 0xF) << 8 | data[7]
    return MitCommand(
        position_rad=uint_to_float(p, -model.position_max_rad, model.position_max_rad, 16),
        velocity_rad_s=uint_to_float(v, -model.velocity_max_rad_s, model.velocity_max_rad_s, 12),
        kp=uint_to_float(kp, 0.0, KP_MAX, 12),
        kd=uint_to_float(kd, 0.0, KD_MAX, 12),
        torque_nm=uint_to_float(t, -model.torque_max_nm, model.torque_max_nm, 12),
    )


def encode_feedback(feedback: MotorFeedback, model: MotorModel) -> bytes:
    """Pack a feedback frame (the motor side; used by the emulator)."""
    p = float_to_uint(feedback.position_rad, -model.position_max_rad, model.position_max_rad, 16)
    v = float_to_uint(
        feedback.velocity_rad_s, -model.velocity_max_rad_s, model.velocity_max_rad_s, 12
    )
    t = float_to_uint(feedback.torque_nm, -model.torque_max_nm, model.torque_max_nm, 12)
    return bytes(
        (
            (feedback.state & 0xF) << 4 | feedback.motor_id_nibble & 0xF,
            p >> 8,
            p & 0xFF,
            v >> 4,
            (v & 0xF) << 4 | t >> 8,
            t & 0xFF,
            min(max(feedback.mos_temperature_c, 0), 0xFF),
            min(max(feedback.rotor_temperature_c, 0), 0xFF),
        )
    )


def decode_feedback(data: bytes | bytearray, model: MotorModel) -> MotorFeedback:
    """Unpack a feedback frame with the ranges of the motor that sent it."""
    _require_length(data)
    p = data[1] << 8 | data[2]
    v = data[3] << 4 | data[4] >> 4
    t = (data[4] & 0xF) << 8 | data[5]
    return MotorFeedback(
        motor_id_nibble=data[0] & 0xF,
        state=data[0] >> 4,
        position_rad=uint_to_float(p, -model.position_max_rad, model.position_max_rad, 16),
        velocity_rad_s=uint_to_float(v, -model.velocity_max_rad_s, model.velocity_max_rad_s, 12),
        torque_nm=uint_to_float(t, -model.torque_max_nm, model.torque_max_nm, 12),
        mos_temperature_c=data[6],
        rotor_temperature_c=data[7],
    )


def special_frame(command: SpecialCommand) -> bytes:
    """Data of a special frame (send it to the motor id)."""
    return _SPECIAL_PREFIX + bytes((command,))


def parse_special(data: bytes | bytearray) -> SpecialCommand | None:
    """The special command in `data`, or None for any other frame (an MIT command)."""
    if len(data) != 8 or bytes(data[:7]) != _SPECIAL_PREFIX:
        return None
    try:
        return SpecialCommand(data[7])
    except ValueError:
        return None


def refresh_frame(motor_id: int) -> bytes:
    """Data of a refresh request for `motor_id` (send it to `REFRESH_CAN_ID`)."""
    return bytes((motor_id & 0xFF, motor_id >> 8 & 0xFF, REFRESH_CODE, 0, 0, 0, 0, 0))


def parse_refresh(data: bytes | bytearray) -> int | None:
    """The motor id a refresh request asks for, or None if `data` is not one."""
    if len(data) < 3 or data[2] != REFRESH_CODE:
        return None
    return int(data[0] | data[1] << 8)


def _require_length(data: bytes | bytearray) -> None:
    if len(data) != 8:
        raise ValueError(f"a Damiao MIT frame has 8 data bytes, got {len(data)}")
