"""SO100/SO101 arm driver: Feetech STS3215 servos (5 joints + gripper) on one serial bus.

Every tick is two bus transactions: `read()` is one sync read of Present_Position and
Present_Velocity (4 bytes per servo), `write()` one sync write of Goal_Position. A read that
times out or comes back corrupted is retried within the tick (`read_retries`), then raises
`DriverTimeout`; the bus counts retries and failures in `statistics` for the diagnostics.

Lifecycle: `connect()` opens the port, pings every id (a missing servo fails with the port and
the ids), turns torque off, writes the control settings (`FeetechBus.configure`) and the
calibration's homing offsets and position limits where the servos differ from the file.
`enable()` first sets every goal to the present position, then turns torque on, so the arm
holds where it is instead of jumping to a stale goal. `disconnect()` turns torque off unless
`disable_torque_on_disconnect` is false (the arm then keeps holding while nobody commands it).

Units: radians for every joint, the gripper included (its servo angle); see `calibration.py`
for the conversion. Bimanual rigs list their arms under `arms` and get a `MultiArmDriver`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vla_runtime.drivers.base import (
    ArmDriver,
    DriverError,
    FloatArray,
    JointReading,
    MultiArmDriver,
)
from vla_runtime.drivers.parameters import reject_unknown
from vla_runtime.drivers.so100.bus import BusStatistics, FeetechBus
from vla_runtime.drivers.so100.calibration import ArmCalibration

# Rates the SDK's PortHandler accepts (scservo_sdk getCFlagBaud); STS3215 ships at 1 Mbaud.
SUPPORTED_BAUDRATES = (
    4800, 9600, 14400, 19200, 38400, 57600, 115200, 128000, 250000, 500000, 1000000,
)  # fmt: skip


@dataclass(frozen=True)
class So100Config:
    """One SO100/SO101 arm's bus (defaults: LeRobot's SO follower settings)."""

    # Serial device: /dev/ttyACM0, a udev name such as /dev/so100_follower, or a pty.
    port: str = "/dev/ttyACM0"
    # Servo ids in joint order (shoulder_pan .. gripper on the stock arm).
    ids: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    baudrate: int = 1_000_000  # [bit/s]
    # Calibration YAML written by `vla-runtime calibrate so100`; None: identity (2048 = 0 rad).
    calibration: str | None = None
    # Extra attempts of a read within the tick after a timeout or a corrupted status packet.
    read_retries: int = 2
    # Wait for a status packet beyond its wire time [ms]; > 32 for an FTDI adapter whose
    # latency timer is still at its 16 ms default.
    packet_timeout_ms: float = 10.0
    # Acceleration and Maximum_Acceleration registers (254 = as fast as the servo goes).
    acceleration: int = 254
    # Position PID; LeRobot's 16/0/32 avoids the shaking of the factory P = 32.
    p_coefficient: int = 16
    i_coefficient: int = 0
    d_coefficient: int = 32
    disable_torque_on_disconnect: bool = True

    def __post_init__(self) -> None:
        if not self.port:
            raise ValueError("so100: port is empty; set driver.port (e.g. /dev/ttyACM0)")
        if not self.ids:
            raise ValueError("so100: ids is empty; list the servo ids in joint order")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError(f"so100: ids {list(self.ids)} repeat a servo id")
        if any(not 1 <= i <= 252 for i in self.ids):
            raise ValueError(f"so100: servo ids must be in 1..252, got {list(self.ids)}")
        if self.baudrate not in SUPPORTED_BAUDRATES:
            raise ValueError(
                f"so100: baudrate {self.baudrate} is not one the servos support; use 1000000 "
                f"(factory) or one of {', '.join(map(str, SUPPORTED_BAUDRATES))}"
            )
        if not 0 <= self.read_retries <= 10:
            raise ValueError(f"so100: read_retries must be in 0..10, got {self.read_retries}")
        if not 0.5 <= self.packet_timeout_ms <= 1000.0:
            raise ValueError(
                f"so100: packet_timeout_ms must be in 0.5..1000 ms, got {self.packet_timeout_ms}"
            )
        for name in ("acceleration", "p_coefficient", "i_coefficient", "d_coefficient"):
            if not 0 <= getattr(self, name) <= 254:
                raise ValueError(f"so100: {name} must be in 0..254, got {getattr(self, name)}")

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> So100Config:
        """Build from driver parameters (YAML/ROS values: lists become tuples, "" no file)."""
        fields = {field.name for field in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        reject_unknown("so100", parameters, fields | {"arms"})
        for key, value in parameters.items():
            try:
                values[key] = _CONVERT[key](value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"so100: driver parameter {key}={value!r} has the wrong type"
                ) from None
        return cls(**values)


def _optional_path(value: Any) -> str | None:
    return str(value) if value else None


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(value)
    return value


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "port": str,
    "ids": lambda value: tuple(int(i) for i in value),
    "baudrate": int,
    "calibration": _optional_path,
    "read_retries": int,
    "packet_timeout_ms": float,
    "acceleration": int,
    "p_coefficient": int,
    "i_coefficient": int,
    "d_coefficient": int,
    "disable_torque_on_disconnect": _flag,
}


class So100Driver(ArmDriver):
    """One SO100/SO101 arm (see the module docstring).

    Attributes:
        warnings: things the node should log once (identity calibration, unknown servo
            models); no I/O or printing happens here.
    """

    def __init__(
        self,
        joint_names: Sequence[str],
        config: So100Config,
        calibration: ArmCalibration | None = None,
    ) -> None:
        if len(joint_names) != len(config.ids):
            raise ValueError(
                f"so100: {len(joint_names)} joint names for {len(config.ids)} servos "
                f"(ids {list(config.ids)}) on {config.port}"
            )
        self._joint_names = tuple(joint_names)
        self.config = config
        self.warnings: list[str] = []
        if calibration is None:
            calibration = ArmCalibration.identity(self._joint_names, config.ids)
            self.warnings.append(
                f"so100 on {config.port}: no calibration file, using the identity calibration "
                f"(2048 ticks = 0 rad, no homing, full turn); run `vla-runtime calibrate so100 "
                f"--port {config.port} --output FILE` and set driver.calibration"
            )
        else:
            calibration.check_matches(self._joint_names, config.ids, config.calibration or "")
            if calibration.bus != "feetech":
                raise ValueError(
                    f"so100: calibration {config.calibration} is for a {calibration.bus} bus; "
                    f"an SO100 needs one written for its Feetech servos"
                )
        self._calibration = calibration
        self._calibrated = config.calibration is not None
        self._enabled = False
        self.bus = FeetechBus(
            config.port,
            config.ids,
            baudrate=config.baudrate,
            read_retries=config.read_retries,
            packet_timeout_ms=config.packet_timeout_ms,
            acceleration=config.acceleration,
            p_coefficient=config.p_coefficient,
            i_coefficient=config.i_coefficient,
            d_coefficient=config.d_coefficient,
        )

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self._joint_names

    @property
    def calibration(self) -> ArmCalibration:
        return self._calibration

    @property
    def statistics(self) -> BusStatistics:
        """Transactions, retries and failures since connect() (for /diagnostics)."""
        return self.bus.statistics

    def connect(self) -> None:
        models = self.bus.open()
        try:
            for servo_id, model in models.items():
                if model not in FeetechBus.MODEL_NUMBERS:
                    self.warnings.append(
                        f"so100 on {self.config.port}: servo {servo_id} reports model number "
                        f"{model}, not an STS3215 (777); its control table may differ"
                    )
            self.bus.set_torque(False)  # EEPROM writes below need torque off and Lock 0
            self._enabled = False
            self.bus.configure()
            if self._calibrated:
                self._write_calibration()
        except DriverError:
            self.bus.close()
            raise

    def enable(self) -> None:
        present = self.bus.sync_read_positions()
        low = np.array([j.range_min_ticks for j in self._calibration.joints])
        high = np.array([j.range_max_ticks for j in self._calibration.joints])
        self.bus.sync_write_positions(np.clip(present, low, high))
        self.bus.set_torque(True)
        self._enabled = True

    def disable(self) -> None:
        self.bus.set_torque(False)
        self._enabled = False

    def read(self) -> JointReading:
        positions, velocities = self.bus.sync_read_state()
        return JointReading(
            positions=self._calibration.ticks_to_rad(positions),
            velocities=self._calibration.velocities_to_rad_s(velocities),
            stamp_ns=time.time_ns(),
        )

    def write(self, positions: FloatArray) -> None:
        try:
            ticks = self._calibration.rad_to_ticks(positions)
        except ValueError as exc:
            raise DriverError(f"so100 on {self.config.port}: {exc}; nothing sent") from exc
        self.bus.sync_write_positions(ticks)

    def disconnect(self) -> None:
        if not self.bus.is_open:
            return
        try:
            if self.config.disable_torque_on_disconnect:
                self.bus.set_torque(False)
                self._enabled = False
        except DriverError:
            pass  # the bus is gone: nothing left to switch off
        finally:
            self.bus.close()

    def _write_calibration(self) -> None:
        """Bring homing offsets and position limits in line with the file (EEPROM writes
        only where the servos differ, to spare their flash)."""
        bus = self.bus
        for joint in self._calibration.joints:
            wanted = (
                (bus.homing_offset, joint.homing_offset_ticks),
                (bus.min_position_limit, joint.range_min_ticks),
                (bus.max_position_limit, joint.range_max_ticks),
            )
            for register, value in wanted:
                if bus.read_register(joint.id, register) != value:
                    bus.write_register(joint.id, register, value)


def build(joint_names: tuple[str, ...], parameters: Mapping[str, Any]) -> ArmDriver:
    """The registry's builder: one arm, or with `arms` one `So100Driver` per arm, joint names
    split among them in order (shared keys apply to every arm unless the arm overrides them).
    """
    if "arms" not in parameters:
        return _arm(joint_names, So100Config.from_parameters(parameters))
    arms = parameters["arms"]
    if not isinstance(arms, Sequence) or not arms or not all(isinstance(a, Mapping) for a in arms):
        raise ValueError("so100: arms must be a list of per-arm parameter mappings")
    shared = {key: value for key, value in parameters.items() if key != "arms"}
    configs = [So100Config.from_parameters({**shared, **arm}) for arm in arms]
    ports = [config.port for config in configs]
    if len(set(ports)) != len(ports):
        raise ValueError(f"so100: arms share a port ({', '.join(ports)}); give each its own")
    count = sum(len(config.ids) for config in configs)
    if count != len(joint_names):
        raise ValueError(
            f"so100: the arms have {count} servos in all but the embodiment has "
            f"{len(joint_names)} joints; list every arm's ids in joint order"
        )
    drivers: list[ArmDriver] = []
    start = 0
    for config in configs:
        drivers.append(_arm(joint_names[start : start + len(config.ids)], config))
        start += len(config.ids)
    return MultiArmDriver(drivers)


def _arm(joint_names: tuple[str, ...], config: So100Config) -> So100Driver:
    calibration = ArmCalibration.load(config.calibration) if config.calibration else None
    return So100Driver(joint_names, config, calibration)
