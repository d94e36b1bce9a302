"""Closing the loop between the world and a device emulator speaking the real protocol.

A coupling runs once per physics chunk, on the world's thread:

    coupling.command(world)   # emulator's commanded positions → world's servo targets
    world.advance(now_ns)
    coupling.report(world)    # world's joint positions → emulator's present positions

so a driver on the emulator's pty (or CAN bus, or topics) sees the arm the world simulates.

- `ServoBusCoupling`: the Feetech/Dynamixel bus emulator (SO100);
- `DamiaoCoupling`: one arm's Damiao motor set (YAM), MIT-mode position targets in, the world's
  positions and velocities out as the motors' feedback;
- `FrankaCoupling`: the franka_ros2 stand-in, its commanded joint positions in, the world's
  joint state out as what it publishes on /franka/joint_states.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from vla_runtime.drivers.base import FloatArray
from vla_runtime.drivers.so100.calibration import CENTRE_TICKS, RAD_PER_TICK
from vla_runtime.drivers.yam.damiao import MotorState
from vla_runtime.sim.world import World

if TYPE_CHECKING:
    from vla_runtime.drivers.emulators.damiao import DamiaoMotorSet


class ServoBus(Protocol):
    """What `ServoBusCoupling` uses of `ServoBusEmulator` (its world hooks)."""

    def goal_positions(self) -> dict[int, float]: ...

    def torque_enabled(self) -> dict[int, bool]: ...

    def set_positions(
        self, ticks: dict[int, float], velocities_ticks_s: dict[int, float] | None = None
    ) -> None: ...


class ServoBusCoupling:
    """Couples a servo-bus emulator (built with `physics_rate_hz=None`) to a world's joints.

    Servo `ids[i]` drives `world.joint_names[i]`. Ticks are raw encoder ticks before homing, so
    this mapping (2048 ticks = 0 rad, 4096 per turn, sign +1) is the identity calibration: a
    driver with `driver.calibration: ""` reads the world's joint positions exactly.

    A servo with torque off holds nothing: the world's target follows the joint where it is
    (the servo's own back-drive friction is not modelled).
    """

    def __init__(self, bus: ServoBus, ids: Sequence[int]) -> None:
        self.bus = bus
        self.ids = tuple(ids)

    def command(self, world: World) -> None:
        if len(self.ids) != len(world.joint_names):
            raise ValueError(f"{len(self.ids)} servo ids for {len(world.joint_names)} joints")
        goals = self.bus.goal_positions()
        torque = self.bus.torque_enabled()
        current = world.joint_positions()
        targets = np.array(
            [
                (goals[i] - CENTRE_TICKS) * RAD_PER_TICK if torque[i] else current[k]
                for k, i in enumerate(self.ids)
            ]
        )
        world.set_joint_targets(targets)

    def report(self, world: World) -> None:
        positions = world.joint_positions() / RAD_PER_TICK + CENTRE_TICKS
        velocities = world.joint_velocities() / RAD_PER_TICK
        self.bus.set_positions(
            {i: float(p) for i, p in zip(self.ids, positions, strict=True)},
            {i: float(v) for i, v in zip(self.ids, velocities, strict=True)},
        )


class DamiaoCoupling:
    """Couples one arm's `DamiaoMotorSet` (built with `internal_physics=False`) to world joints.

    Motor `motors.motor_ids[k]` drives world joint `joints[k]` (names from `world.joint_names`).
    The motor's MIT command becomes the world's position-servo target: the world's servo stands
    in for `kp (p_des - p) + kd (v_des - v) + t_ff` (gains and feed-forward are not modelled).
    A motor that is disabled, damping (watchdog) or enabled with no command (or kp = 0) holds
    nothing: its joint's target follows the joint where it is.

    The gripper motor (`gripper_id`) turns its angle into the world's prismatic finger [m]:
    `m = stroke * (rad - closed) / (open - closed)`, the YAM driver's own mapping, so the
    driver and the world agree with the driver's default `YamConfig`.
    """

    def __init__(
        self,
        motors: DamiaoMotorSet,
        joints: Sequence[str],
        *,
        gripper_id: int | None = None,
        gripper_closed_motor_rad: float = 0.0,
        gripper_open_motor_rad: float = 6.57,
        gripper_stroke_m: float = 0.04695,
    ) -> None:
        if len(joints) != len(motors.motor_ids):
            raise ValueError(f"{len(joints)} joints for {len(motors.motor_ids)} motors")
        self.motors = motors
        self.joints = tuple(joints)
        self._gripper = (
            motors.motor_ids.index(gripper_id) if gripper_id in motors.motor_ids else None
        )
        self._closed = gripper_closed_motor_rad
        self._span = gripper_open_motor_rad - gripper_closed_motor_rad
        self._stroke = gripper_stroke_m
        self._index: npt.NDArray[np.intp] | None = None

    def _indices(self, world: World) -> npt.NDArray[np.intp]:
        if self._index is None:
            try:
                self._index = np.array([world.joint_names.index(j) for j in self.joints])
            except ValueError as exc:
                raise ValueError(f"{self.joints} are not all joints of the world") from exc
        return self._index

    def to_world(self, motor_rad: FloatArray) -> FloatArray:
        """Motor angles [rad] in `motor_ids` order → world joint values (gripper in m)."""
        values = np.array(motor_rad, dtype=np.float64)
        if self._gripper is not None:
            values[self._gripper] = (
                self._stroke * (values[self._gripper] - self._closed) / self._span
            )
        return values

    def to_motors(self, joint_values: FloatArray) -> FloatArray:
        """World joint values (gripper in m) → motor angles [rad] in `motor_ids` order."""
        values = np.array(joint_values, dtype=np.float64)
        if self._gripper is not None:
            values[self._gripper] = (
                self._closed + self._span * values[self._gripper] / self._stroke
            )
        return values

    def command(self, world: World) -> None:
        index = self._indices(world)
        current = self.to_motors(world.joint_positions()[index])
        goals = current.copy()
        for k, motor_id in enumerate(self.motors.motor_ids):
            snapshot = self.motors.snapshot(motor_id)
            command = snapshot.command
            if snapshot.state == MotorState.ENABLED and command is not None and command.kp > 0.0:
                goals[k] = command.position_rad
        targets = world.joint_targets()
        targets[index] = self.to_world(goals)
        world.set_joint_targets(targets)

    def report(self, world: World) -> None:
        index = self._indices(world)
        velocities = world.joint_velocities()[index]
        if self._gripper is not None:
            velocities[self._gripper] *= self._span / self._stroke
        self.motors.set_state(self.to_motors(world.joint_positions()[index]), velocities)


class FrankaArm(Protocol):
    """What `FrankaCoupling` uses of `FrankaRos2Emulator` (its sim hooks)."""

    def attach_world(self) -> None: ...

    def targets(self) -> FloatArray: ...

    def set_positions(
        self, positions: FloatArray, velocities: FloatArray | None = None
    ) -> None: ...


class FrankaCoupling:
    """Couples the franka_ros2 stand-in to a Franka world (8 joints: fr3_joint1..7 [rad], then
    fr3_finger_joint1 [m], the stand-in's own layout).

    The stand-in's targets (last forward position command or trajectory end point, clipped to
    the FR3 limits; held where the arm is after a communication violation) become the world's
    servo targets; the world's joint state is what it publishes as /franka/joint_states and
    /franka_gripper/joint_states.
    """

    def __init__(self, arm: FrankaArm) -> None:
        self.arm = arm
        arm.attach_world()

    def command(self, world: World) -> None:
        if len(world.joint_names) != 8:
            raise ValueError(f"a Franka world has 8 joints, this one {len(world.joint_names)}")
        world.set_joint_targets(self.arm.targets())

    def report(self, world: World) -> None:
        self.arm.set_positions(world.joint_positions(), world.joint_velocities())
