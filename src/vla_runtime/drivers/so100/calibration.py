"""Per-arm servo calibration: homing offsets, ranges and the joint convention, as YAML.

`vla-runtime calibrate so100` writes the file; the driver loads it at start-up, checks it
against its joint names and servo ids, writes homing offsets and position limits to the servos
when they differ, and converts with it every tick. Ticks are the servo's Present_Position /
Goal_Position after its homing offset: 4096 per turn, the middle of each joint's range at 2048.

    q [rad] = sign × (ticks − 2048) × 2π/4096 + offset_rad
    ticks   = 2048 + sign × (q − offset_rad) × 4096/2π   (rounded, clamped to the range)

`sign` and `offset_rad` map the servo's frame onto the joint frame the URDF and the policy use
(direction of rotation, zero pose), so a joint convention is data, not code. MolmoAct2's SO
checkpoints, for instance, expect the pre-LeRobot-0.5 convention (signs 1, −1, 1, 1, 1, 1 and
offsets 0°, 90°, 90°, 0°, 0°, 0°, i.e. offset_rad 0, π/2, π/2, 0, 0, 0 on shoulder_lift and
elbow_flex); pass them to the calibration command with `--signs` / `--offsets-rad`.

File format (version 1):

    version: 1
    bus: feetech          # feetech (STS3215) or dynamixel (X series leader)
    role: follower        # follower or leader
    joints:
      shoulder_pan: {id: 1, homing_offset_ticks: -31, range_min_ticks: 760,
                     range_max_ticks: 3320, sign: 1, offset_rad: 0.0}
      ...
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

TICKS_PER_TURN = 4096  # STS3215 and X-series encoders: 12 bits per turn
CENTRE_TICKS = 2048
RAD_PER_TICK = 2.0 * math.pi / TICKS_PER_TURN
FORMAT_VERSION = 1
# Homing_Offset spans: Feetech sign-magnitude with an 11-bit magnitude; Dynamixel ±256 turns.
HOMING_LIMIT_TICKS = {"feetech": 2047, "dynamixel": 1_044_479}
# Ranges after homing: a Feetech servo reports one turn; Dynamixel positions are not wrapped.
POSITION_LIMITS_TICKS = {"feetech": (0, TICKS_PER_TURN - 1), "dynamixel": (-(2**31), 2**31 - 1)}
ROLES = ("follower", "leader")
RECALIBRATE = "run `vla-runtime calibrate so100` to write a new file"


class CalibrationError(ValueError):
    """A calibration that cannot be used; the message names the file, joint and fix."""


@dataclass(frozen=True)
class JointCalibration:
    """One joint's servo calibration.

    Attributes:
        id: servo id on the bus.
        homing_offset_ticks: value of the servo's Homing_Offset register.
        range_min_ticks, range_max_ticks: travel recorded during calibration [ticks after
            homing]; written to the servo's position limits, and the clamp of every command.
        sign: +1 or −1, direction of the joint relative to the servo.
        offset_rad: joint position when the servo reads 2048 [rad].
    """

    id: int
    homing_offset_ticks: int = 0
    range_min_ticks: int = 0
    range_max_ticks: int = TICKS_PER_TURN - 1
    sign: int = 1
    offset_rad: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.id <= 252:
            raise CalibrationError(f"id {self.id} is outside the servo ids 0..252")
        if self.sign not in (1, -1):
            raise CalibrationError(f"sign must be 1 or -1, got {self.sign}")
        if not math.isfinite(self.offset_rad):
            raise CalibrationError(f"offset_rad must be a finite number, got {self.offset_rad}")
        if self.range_min_ticks >= self.range_max_ticks:
            raise CalibrationError(
                f"range_min_ticks ({self.range_min_ticks}) must be below range_max_ticks "
                f"({self.range_max_ticks})"
            )


_JOINT_FIELDS = tuple(field.name for field in dataclasses.fields(JointCalibration))


@dataclass(frozen=True)
class ArmCalibration:
    """The calibration of one arm, joints in command order."""

    joint_names: tuple[str, ...]
    joints: tuple[JointCalibration, ...]
    bus: str = "feetech"
    role: str = "follower"
    # Per-joint arrays for the conversions, derived in __post_init__.
    _sign: FloatArray = dataclasses.field(init=False, repr=False, compare=False)
    _offset: FloatArray = dataclasses.field(init=False, repr=False, compare=False)
    _min: IntArray = dataclasses.field(init=False, repr=False, compare=False)
    _max: IntArray = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.joint_names) != len(self.joints) or not self.joints:
            raise CalibrationError(
                f"{len(self.joint_names)} joint names for {len(self.joints)} joints"
            )
        if len(set(self.joint_names)) != len(self.joint_names):
            raise CalibrationError(f"joint names repeat: {list(self.joint_names)}")
        ids = [joint.id for joint in self.joints]
        if len(set(ids)) != len(ids):
            raise CalibrationError(f"servo ids repeat: {ids}; every joint needs its own servo")
        if self.bus not in HOMING_LIMIT_TICKS:
            raise CalibrationError(f"bus must be one of {sorted(HOMING_LIMIT_TICKS)}")
        if self.role not in ROLES:
            raise CalibrationError(f"role must be one of {list(ROLES)}, got {self.role!r}")
        homing_limit = HOMING_LIMIT_TICKS[self.bus]
        low, high = POSITION_LIMITS_TICKS[self.bus]
        for name, joint in zip(self.joint_names, self.joints, strict=True):
            if abs(joint.homing_offset_ticks) > homing_limit:
                raise CalibrationError(
                    f"joint {name!r}: homing_offset_ticks {joint.homing_offset_ticks} is outside "
                    f"±{homing_limit}, the {self.bus} Homing_Offset range"
                )
            if joint.range_min_ticks < low or joint.range_max_ticks > high:
                raise CalibrationError(
                    f"joint {name!r}: range {joint.range_min_ticks}..{joint.range_max_ticks} "
                    f"leaves the {self.bus} position range {low}..{high}"
                )
        arrays = {
            "_sign": np.array([j.sign for j in self.joints], dtype=np.float64),
            "_offset": np.array([j.offset_rad for j in self.joints], dtype=np.float64),
            "_min": np.array([j.range_min_ticks for j in self.joints], dtype=np.int64),
            "_max": np.array([j.range_max_ticks for j in self.joints], dtype=np.int64),
        }
        for key, value in arrays.items():
            object.__setattr__(self, key, value)

    # conversions -------------------------------------------------------------------------

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(joint.id for joint in self.joints)

    def __getitem__(self, joint_name: str) -> JointCalibration:
        try:
            return self.joints[self.joint_names.index(joint_name)]
        except ValueError:
            raise KeyError(f"no joint {joint_name!r}; joints: {list(self.joint_names)}") from None

    def ticks_to_rad(self, ticks: npt.ArrayLike) -> FloatArray:
        """(joints,) servo positions [ticks] → joint positions [rad]."""
        centred = np.asarray(ticks, dtype=np.float64) - CENTRE_TICKS
        result: FloatArray = self._sign * centred * RAD_PER_TICK + self._offset
        return result

    def velocities_to_rad_s(self, ticks_s: npt.ArrayLike) -> FloatArray:
        """(joints,) servo velocities [ticks/s] → joint velocities [rad/s]."""
        result: FloatArray = self._sign * np.asarray(ticks_s, np.float64) * RAD_PER_TICK
        return result

    def rad_to_ticks(self, positions_rad: npt.ArrayLike) -> IntArray:
        """(joints,) joint positions [rad] → servo targets [ticks], clamped to each range."""
        rad = np.asarray(positions_rad, dtype=np.float64)
        if rad.shape != (len(self.joints),) or not np.all(np.isfinite(rad)):
            raise ValueError(f"need {len(self.joints)} finite joint positions, got {rad!r}")
        ticks = CENTRE_TICKS + self._sign * (rad - self._offset) / RAD_PER_TICK
        clamped: IntArray = np.clip(np.rint(ticks), self._min, self._max).astype(np.int64)
        return clamped

    # construction ------------------------------------------------------------------------

    @classmethod
    def identity(
        cls, joint_names: Sequence[str], ids: Sequence[int], bus: str = "feetech"
    ) -> ArmCalibration:
        """No homing, the whole turn, sign +1, offset 0: 2048 ticks is 0 rad."""
        return cls(tuple(joint_names), tuple(JointCalibration(int(i)) for i in ids), bus=bus)

    def with_convention(
        self, signs: Sequence[int] | None = None, offsets_rad: Sequence[float] | None = None
    ) -> ArmCalibration:
        """The same calibration with another joint convention (one value per joint)."""
        count = len(self.joints)
        signs = list(signs) if signs is not None else [j.sign for j in self.joints]
        offsets = (
            list(offsets_rad) if offsets_rad is not None else [j.offset_rad for j in self.joints]
        )
        if len(signs) != count or len(offsets) != count:
            raise CalibrationError(
                f"give one sign and one offset per joint ({count}: {', '.join(self.joint_names)})"
            )
        joints = tuple(
            dataclasses.replace(joint, sign=int(sign), offset_rad=float(offset))
            for joint, sign, offset in zip(self.joints, signs, offsets, strict=True)
        )
        return dataclasses.replace(self, joints=joints)

    def check_matches(self, joint_names: Sequence[str], ids: Sequence[int], source: str) -> None:
        """Fail when the file describes other joints or servos than the driver drives."""
        if tuple(joint_names) != self.joint_names:
            raise CalibrationError(
                f"calibration {source} has joints {list(self.joint_names)} but the embodiment "
                f"has {list(joint_names)}; {RECALIBRATE} or fix the joint names"
            )
        if tuple(ids) != self.ids:
            raise CalibrationError(
                f"calibration {source} has servo ids {list(self.ids)} but driver.ids is "
                f"{list(ids)}; is it the other arm's file? {RECALIBRATE}"
            )

    # files -------------------------------------------------------------------------------

    def to_mapping(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "bus": self.bus,
            "role": self.role,
            "joints": {
                name: dataclasses.asdict(joint)
                for name, joint in zip(self.joint_names, self.joints, strict=True)
            },
        }

    @classmethod
    def from_mapping(cls, data: Any, source: str = "<mapping>") -> ArmCalibration:
        """Validate a parsed file; every error names `source` and the joint."""
        if not isinstance(data, Mapping):
            raise CalibrationError(f"calibration {source}: expected a mapping with 'joints'")
        _reject_unknown(data, ("version", "bus", "role", "joints"), f"calibration {source}")
        if data.get("version", FORMAT_VERSION) != FORMAT_VERSION:
            raise CalibrationError(
                f"calibration {source}: version {data.get('version')!r} is not supported "
                f"(this runtime reads version {FORMAT_VERSION}); {RECALIBRATE}"
            )
        joints = data.get("joints")
        if not isinstance(joints, Mapping) or not joints:
            raise CalibrationError(f"calibration {source}: 'joints' must map joint names to ids")
        names: list[str] = []
        entries: list[JointCalibration] = []
        for name, entry in joints.items():
            where = f"calibration {source}: joint {name!r}"
            if not isinstance(entry, Mapping):
                raise CalibrationError(f"{where}: expected a mapping with id, ranges, sign")
            _reject_unknown(entry, _JOINT_FIELDS, where)
            if "id" not in entry:
                raise CalibrationError(f"{where}: 'id' (the servo id) is missing")
            values: dict[str, Any] = {}
            for key, value in entry.items():
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                if key == "offset_rad" and number:
                    values[key] = float(value)
                elif isinstance(value, int) and number:
                    values[key] = value
                else:
                    kind = "a number" if key == "offset_rad" else "an integer"
                    raise CalibrationError(f"{where}: {key} must be {kind}, got {value!r}")
            try:
                entries.append(JointCalibration(**values))
            except CalibrationError as exc:
                raise CalibrationError(f"{where}: {exc}; {RECALIBRATE}") from None
            names.append(str(name))
        try:
            return cls(
                tuple(names),
                tuple(entries),
                bus=str(data.get("bus", "feetech")),
                role=str(data.get("role", "follower")),
            )
        except CalibrationError as exc:
            raise CalibrationError(f"calibration {source}: {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ArmCalibration:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CalibrationError(
                f"calibration file {path} not found; run `vla-runtime calibrate so100 --port "
                f"PORT --output {path}` first, or fix driver.calibration"
            ) from None
        except OSError as exc:
            raise CalibrationError(f"cannot read calibration file {path}: {exc}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CalibrationError(f"calibration {path} is not valid YAML: {exc}") from None
        return cls.from_mapping(data, str(path))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the file atomically (a crash never leaves half a calibration)."""
        path = Path(path)
        header = (
            "# Servo calibration (vla-runtime calibrate so100). Ticks are positions after the\n"
            "# servo's homing offset, 4096 per turn; q [rad] = sign * (ticks - 2048) * 2*pi/4096"
            " + offset_rad.\n"
        )
        body = yaml.safe_dump(self.to_mapping(), sort_keys=False, default_flow_style=None)
        temporary = path.with_name(path.name + ".tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(header + body, encoding="utf-8")
        os.replace(temporary, path)


def _reject_unknown(data: Mapping[Any, Any], known: Sequence[str], where: str) -> None:
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise CalibrationError(
                f"{where}: unknown key {key!r}; known: {', '.join(known)}.{hint}"
            )
