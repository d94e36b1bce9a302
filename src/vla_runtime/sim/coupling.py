"""Closing the loop between the world and a device emulator speaking the real protocol.

A coupling runs once per physics chunk, on the world's thread:

    coupling.command(world)   # emulator's commanded positions → world's servo targets
    world.advance(now_ns)
    coupling.report(world)    # world's joint positions → emulator's present positions

so a driver on the emulator's pty (or CAN bus, or topics) sees the arm the world simulates.
`ServoBusCoupling` does this for the Feetech/Dynamixel bus emulator (SO100). The same two calls
fit the other families: the Damiao emulator (YAM) exposes each motor's MIT-mode target and takes
its position back, and the franka_ros2 stand-in takes the commanded joint positions from its
controller topic and publishes the world's as /franka/joint_states.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from vla_runtime.drivers.so100.calibration import CENTRE_TICKS, RAD_PER_TICK
from vla_runtime.sim.world import World


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
