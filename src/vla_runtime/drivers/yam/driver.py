"""i2rt YAM arm driver: six Damiao joints and a Damiao gripper on one CAN bus, MIT mode.

One `YamArm` is one arm on one CAN channel; bimanual YAM is two of them composed by
`MultiArmDriver` (left, then right), each on its own adapter as i2rt wires it
(`can_follower_l`, `can_follower_r`).

Lifecycle: `connect()` opens the bus and asks every motor for its state (refresh frames, no
motion); `enable()` clears tripped motors, enables them and holds the measured pose; every
`write()` is one tick: one MIT position command per motor with the configured gains, and the
feedback those commands provoke; `read()` returns that feedback (or refreshes when nothing was
written since the last read); `disable()` damps (kp 0) rather than cutting torque.

The motors damp after 400 ms without a command (factory watchdog) and report it: the control
loop must keep writing while enabled (250 Hz on YAM), and a tripped arm raises `MotorFault`
until `enable()` again. Commands are never queued: each call sends the newest target, and
feedback is latest-value-wins.

Units: joints in radians at the motor output. The gripper joint is reported in **metres of
finger travel** (0 = closed, `gripper_stroke_m` = fully open), the unit a URDF prismatic finger
joint declares (i2rt's YAM URDFs model the fingers as prismatic joints); the driver maps it
linearly onto the gripper motor's angle between `gripper_closed_motor_rad` and
`gripper_open_motor_rad`. A policy that wants a 0..1 aperture (MolmoAct2's YAM checkpoints)
divides by the stroke in its embodiment transform.
"""

from __future__ import annotations

import dataclasses
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
from vla_runtime.drivers.yam.bus import BusMotor, DamiaoBus, MotorTimeout
from vla_runtime.drivers.yam.damiao import (
    DEFAULT_FEEDBACK_ID_OFFSET,
    KD_MAX,
    KP_MAX,
    MAX_STANDARD_ID,
    MODELS,
    REFRESH_CAN_ID,
    MitCommand,
    MotorFeedback,
    MotorState,
    SpecialCommand,
    motor_model,
    state_name,
)


class MotorFault(DriverError):
    """Motors report a state other than enabled while the arm is enabled."""

    def __init__(self, message: str, states: Mapping[int, int]) -> None:
        super().__init__(message)
        self.states = dict(states)


@dataclass(frozen=True)
class YamConfig:
    """One YAM arm's bus and motors (defaults: i2rt's YAM with the linear_4310 gripper, as in
    urdf/yam_bimanual)."""

    # python-can interface: "socketcan" on the robot, "virtual" or "slcan" against the emulator.
    interface: str = "socketcan"
    # can0, or i2rt's udev names (can_follower_l); the pty path for slcan.
    channel: str = "can0"
    bitrate: int = 1_000_000  # [bit/s] YAM's CAN runs at 1 Mbit/s
    # Motor CAN ids in joint order; DM4340 on 1-3, DM4310 on 4-6, the gripper DM4310 on 7.
    ids: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7)
    models: tuple[str, ...] = ("DM4340",) * 3 + ("DM4310",) * 4
    # MIT gains per motor [N·m/rad], [N·m·s/rad]: i2rt's YAM defaults; gripper 20 / 0.5.
    kp: tuple[float, ...] = (80.0, 80.0, 80.0, 10.0, 10.0, 10.0, 20.0)
    kd: tuple[float, ...] = (5.0, 5.0, 5.0, 1.5, 1.5, 1.5, 0.5)
    # Feedback (master) id = motor id + this offset; i2rt programs YAM motors with 0x10.
    feedback_id_offset: int = DEFAULT_FEEDBACK_ID_OFFSET
    # The motor whose joint is the gripper (reported in metres); None (or 0) for none.
    gripper_id: int | None = 7
    # Gripper motor angle at closed and at fully open fingers [rad]: calibration data per arm.
    # i2rt: linear_4310 turns 6.57 rad over its stroke (zero and sign need its calibration);
    # crank_4310 is 0 (closed) to -2.7 (open).
    gripper_closed_motor_rad: float = 0.0
    gripper_open_motor_rad: float = 6.57
    # One finger's travel at fully open [m]: the URDF gripper joint's upper limit
    # (linear_4310 0.04695 per finger; crank_4310 0.071 of opening).
    gripper_stroke_m: float = 0.04695
    # Time the motors have to answer one tick's commands [s], counted from the last send.
    # 14 frames of ~130 bits occupy ~1.8 ms of a 1 Mbit/s bus, so 2 ms leaves little slack:
    # raise it toward 3 ms (the period is 4 ms at 250 Hz) if ticks time out on the robot.
    feedback_timeout_s: float = 0.002
    # Per-attempt answer time for connect/enable/disable [s], and attempts before giving up.
    setup_timeout_s: float = 0.05
    setup_attempts: int = 3

    def __post_init__(self) -> None:
        n = len(self.ids)
        if n == 0:
            raise ValueError("yam: ids is empty; list the motor CAN ids in joint order")
        for name in ("models", "kp", "kd"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"yam: {name} has {len(getattr(self, name))} entries but ids has {n}; "
                    f"give one per motor"
                )
        if len(set(self.ids)) != n:
            raise ValueError(f"yam: ids {list(self.ids)} repeat a motor id")
        top = MAX_STANDARD_ID - self.feedback_id_offset
        for motor_id in self.ids:
            if not 1 <= motor_id <= top or motor_id == REFRESH_CAN_ID:
                raise ValueError(
                    f"yam: motor id {motor_id} out of range; ids must be 1..{top} so that "
                    f"id + feedback_id_offset fits an 11-bit CAN id"
                )
        feedback_ids = {motor_id + self.feedback_id_offset for motor_id in self.ids}
        if self.feedback_id_offset < 0 or feedback_ids & set(self.ids):
            raise ValueError(
                f"yam: feedback_id_offset {self.feedback_id_offset} makes feedback ids collide "
                f"with command ids {list(self.ids)}; use the master-id offset programmed into "
                f"the motors (i2rt: 16)"
            )
        for model in self.models:
            if model not in MODELS:
                motor_model(model)  # raises with the known names
        for index, (kp, kd) in enumerate(zip(self.kp, self.kd, strict=True)):
            if not (0.0 <= kp <= KP_MAX and 0.0 <= kd <= KD_MAX):
                raise ValueError(
                    f"yam: gains of motor {self.ids[index]} (kp {kp}, kd {kd}) outside the MIT "
                    f"ranges kp 0..{KP_MAX:g}, kd 0..{KD_MAX:g}"
                )
        if self.gripper_id is not None and self.gripper_id not in self.ids:
            raise ValueError(
                f"yam: gripper_id {self.gripper_id} is not one of ids {list(self.ids)}; "
                f"set it to the gripper motor's id, or to null/0 for an arm without gripper"
            )
        if self.gripper_open_motor_rad == self.gripper_closed_motor_rad:
            raise ValueError(
                "yam: gripper_open_motor_rad equals gripper_closed_motor_rad; calibrate the "
                "gripper's motor angle at closed and at fully open fingers"
            )
        if not self.gripper_stroke_m > 0.0:
            raise ValueError(f"yam: gripper_stroke_m must be > 0 m, got {self.gripper_stroke_m}")
        if not 0.0 < self.feedback_timeout_s < 1.0 or not 0.0 < self.setup_timeout_s < 10.0:
            raise ValueError(
                "yam: feedback_timeout_s must be in (0, 1) s and setup_timeout_s in (0, 10) s"
            )
        if self.setup_attempts < 1:
            raise ValueError("yam: setup_attempts must be at least 1")
        if not self.interface or not self.channel:
            raise ValueError("yam: interface and channel must be set (e.g. socketcan, can0)")

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> YamConfig:
        """Build from driver parameters (YAML/ROS values: lists become tuples)."""
        fields = {field.name for field in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        reject_unknown("yam", parameters, fields)
        for key, value in parameters.items():
            values[key] = _CONVERT[key](value)
        return cls(**values)


def _tuple_of(kind: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    return lambda value: tuple(kind(item) for item in value)


def _optional_id(value: Any) -> int | None:
    return None if value is None or int(value) == 0 else int(value)


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "interface": str,
    "channel": str,
    "bitrate": int,
    "ids": _tuple_of(int),
    "models": _tuple_of(str),
    "kp": _tuple_of(float),
    "kd": _tuple_of(float),
    "feedback_id_offset": int,
    "gripper_id": _optional_id,
    "gripper_closed_motor_rad": float,
    "gripper_open_motor_rad": float,
    "gripper_stroke_m": float,
    "feedback_timeout_s": float,
    "setup_timeout_s": float,
    "setup_attempts": int,
}


class YamArm(ArmDriver):
    """One YAM arm (6 joints + gripper) on one CAN channel."""

    def __init__(self, joint_names: Sequence[str], config: YamConfig) -> None:
        if len(joint_names) != len(config.ids):
            raise ValueError(
                f"yam: {len(joint_names)} joint names for {len(config.ids)} motors "
                f"(ids {list(config.ids)}) on {config.channel}"
            )
        self._joint_names = tuple(joint_names)
        self._config = config
        self._ids = config.ids
        self._bus = DamiaoBus(
            config.interface,
            config.channel,
            config.bitrate,
            [
                BusMotor(motor_id, motor_model(model), motor_id + config.feedback_id_offset)
                for motor_id, model in zip(config.ids, config.models, strict=True)
            ],
        )
        # Joint value = motor angle * scale + offset (identity except for the gripper).
        self._scale = np.ones(len(config.ids))
        self._offset = np.zeros(len(config.ids))
        self._gripper_index: int | None = None
        if config.gripper_id is not None:
            index = config.ids.index(config.gripper_id)
            span_rad = config.gripper_open_motor_rad - config.gripper_closed_motor_rad
            self._scale[index] = config.gripper_stroke_m / span_rad
            self._offset[index] = -config.gripper_closed_motor_rad * self._scale[index]
            self._gripper_index = index
        self._enabled = False
        self._fresh = False  # feedback arrived since the last read()

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self._joint_names

    @property
    def config(self) -> YamConfig:
        return self._config

    @property
    def motor_feedback(self) -> Mapping[int, MotorFeedback]:
        """Newest raw feedback per motor id (state nibble, temperatures), for diagnostics."""
        return self._bus.latest

    def connect(self) -> None:
        self._bus.open()
        try:
            self._retry(lambda ids: self._bus.refresh(self._config.setup_timeout_s, ids))
        except DriverError:
            self._bus.close()
            raise
        self._fresh = True

    def enable(self) -> None:
        # Fresh states first: a motor may have tripped since we last heard from it.
        self._retry(lambda ids: self._bus.refresh(self._config.setup_timeout_s, ids))
        latest = self._bus.latest
        faulted = [
            motor_id
            for motor_id in self._ids
            if motor_id in latest
            and latest[motor_id].state not in (MotorState.DISABLED, MotorState.ENABLED)
        ]
        if faulted:
            # A motor that tripped (e.g. its 400 ms watchdog) ignores enable until cleared.
            self._retry(
                lambda ids: self._bus.special(
                    SpecialCommand.CLEAR_ERROR, self._config.setup_timeout_s, ids
                ),
                faulted,
            )
        self._retry(
            lambda ids: self._bus.special(SpecialCommand.ENABLE, self._config.setup_timeout_s, ids)
        )
        self._check_states(self._bus.latest)
        # Hold where the arm is, so it does not sag before the first write().
        hold = {
            motor_id: self._mit(index, self._bus.latest[motor_id].position_rad)
            for index, motor_id in enumerate(self._ids)
        }
        self._bus.command(hold, self._config.setup_timeout_s)
        self._enabled = True
        self._fresh = True

    def disable(self) -> None:
        """Damp every joint (kp 0, the configured kd) and stop commanding.

        Not a torque cut (FD): a YAM without torque drops under gravity, a damped one sinks
        slowly, and can still be moved by hand. Once commands stop, the motors' 400 ms watchdog
        keeps damping (and reports it; `enable()` clears that).
        """
        self._enabled = False
        latest = self._bus.latest
        damp = {
            motor_id: MitCommand(
                position_rad=latest[motor_id].position_rad if motor_id in latest else 0.0,
                kd=self._config.kd[index],
            )
            for index, motor_id in enumerate(self._ids)
        }
        self._retry(
            lambda ids: self._bus.command(
                {motor_id: damp[motor_id] for motor_id in ids}, self._config.setup_timeout_s
            )
        )
        self._fresh = True

    def read(self) -> JointReading:
        if not self._fresh:
            # No write() since the last read (e.g. disabled): ask without commanding.
            self._bus.refresh(self._config.feedback_timeout_s)
        self._fresh = False
        latest = self._bus.latest
        if self._enabled:
            self._check_states(latest)
        feedback = [latest[motor_id] for motor_id in self._ids]
        motor_positions = np.array([f.position_rad for f in feedback])
        velocities = np.array([f.velocity_rad_s for f in feedback]) * self._scale
        efforts = np.array([f.torque_nm for f in feedback])
        if self._gripper_index is not None:
            # Virtual work: F dx = tau dtheta, so F = tau / (dx/dtheta).
            efforts[self._gripper_index] /= self._scale[self._gripper_index]
        return JointReading(
            positions=motor_positions * self._scale + self._offset,
            velocities=velocities,
            efforts=efforts,
            stamp_ns=self._bus.latest_stamp_ns,
        )

    def write(self, positions: FloatArray) -> None:
        targets = np.asarray(positions, dtype=np.float64)
        if targets.shape != (len(self._ids),) or not np.all(np.isfinite(targets)):
            raise ValueError(
                f"yam: write() needs {len(self._ids)} finite positions for "
                f"{', '.join(self._joint_names)}; got {targets!r}"
            )
        if not self._enabled:
            raise DriverError(f"yam {self._config.channel}: write() before enable()")
        motor_targets = (targets - self._offset) / self._scale
        if self._gripper_index is not None:
            # The fingers cannot pass their end stops; a target beyond them only stalls the motor.
            low, high = sorted(
                (self._config.gripper_closed_motor_rad, self._config.gripper_open_motor_rad)
            )
            index = self._gripper_index
            motor_targets[index] = min(max(motor_targets[index], low), high)
        commands = {
            motor_id: self._mit(index, float(motor_targets[index]))
            for index, motor_id in enumerate(self._ids)
        }
        self._bus.command(commands, self._config.feedback_timeout_s)
        self._fresh = True
        self._check_states(self._bus.latest)

    def disconnect(self) -> None:
        self._enabled = False
        self._bus.close()

    def _mit(self, index: int, position_rad: float) -> MitCommand:
        return MitCommand(
            position_rad=position_rad, kp=self._config.kp[index], kd=self._config.kd[index]
        )

    def _retry(
        self,
        exchange: Callable[[list[int]], object],
        motor_ids: Sequence[int] | None = None,
    ) -> None:
        """Run a setup exchange, re-asking only the silent motors, `setup_attempts` times."""
        pending = list(self._ids if motor_ids is None else motor_ids)
        for attempt in range(self._config.setup_attempts):
            try:
                exchange(pending)
                return
            except MotorTimeout as error:
                if attempt + 1 == self._config.setup_attempts:
                    raise
                pending = list(error.motor_ids)

    def _check_states(self, latest: Mapping[int, MotorFeedback]) -> None:
        bad = {
            motor_id: latest[motor_id].state
            for motor_id in self._ids
            if motor_id in latest and latest[motor_id].state != MotorState.ENABLED
        }
        if not bad:
            return
        names = dict(zip(self._ids, self._joint_names, strict=True))
        listed = "; ".join(
            f"motor {motor_id} ({names[motor_id]}): {state_name(state)}"
            for motor_id, state in bad.items()
        )
        hint = (
            " The motors damp after 400 ms without a command; call enable() to resume."
            if MotorState.COMMUNICATION_LOST in bad.values()
            else " Check supply voltage, load and temperature, then enable() again."
        )
        raise MotorFault(f"yam {self._config.channel}: {listed}.{hint}", bad)


def build(joint_names: tuple[str, ...], parameters: Mapping[str, Any]) -> ArmDriver:
    """Registry builder: one `YamArm`, or a `MultiArmDriver` when parameters carry `arms`.

    `arms` is a list of per-arm parameter mappings (left, then right) or a mapping name →
    parameters in that order; top-level keys other than `arms` are defaults for every arm.
    Dotted keys (`arms.left.channel`, as flattened ROS parameters arrive) are nested first.
    Joint names are dealt to the arms in order, `len(ids)` each.
    """
    nested = _nest(parameters)
    arms = nested.pop("arms", None)
    if arms is None:
        return YamArm(joint_names, YamConfig.from_parameters(nested))
    arm_parameters = list(arms.values()) if isinstance(arms, Mapping) else list(arms)
    configs = [YamConfig.from_parameters({**nested, **arm}) for arm in arm_parameters]
    if sum(len(config.ids) for config in configs) != len(joint_names):
        counts = " + ".join(str(len(config.ids)) for config in configs)
        raise ValueError(
            f"yam: {len(joint_names)} joint names for {counts} motors in {len(configs)} arms"
        )
    seen: dict[tuple[str, str], set[int]] = {}
    for config in configs:
        used = seen.setdefault((config.interface, config.channel), set())
        if used & set(config.ids):
            raise ValueError(
                f"yam: two arms use motor ids {sorted(used & set(config.ids))} on "
                f"{config.interface}:{config.channel}; give each arm its own channel"
            )
        used.update(config.ids)
    drivers: list[ArmDriver] = []
    start = 0
    for config in configs:
        names = joint_names[start : start + len(config.ids)]
        drivers.append(YamArm(names, config))
        start += len(config.ids)
    return MultiArmDriver(drivers)


def _nest(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """`{"arms.left.channel": x}` → `{"arms": {"left": {"channel": x}}}` (order kept)."""
    nested: dict[str, Any] = {}
    for key, value in parameters.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = dict(value) if isinstance(value, Mapping) else value
    return nested
