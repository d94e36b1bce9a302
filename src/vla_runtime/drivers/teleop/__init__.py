"""Teleoperation sources: a leader arm or a keyboard, read at a fixed rate for `teleop_node`.

A `TeleopSource` yields joint targets in the **follower's** joint order and units; the driver
(`driver_node`) checks them against its limits and owns the handover, so a source only reads
and maps. Sources are registered by name in `TELEOP_SOURCES` (STYLE: explicit registries):

- `leader_arm`: any registry `ArmDriver` (`leader.embodiment`, default the follower's), disabled
  after connect (a Feetech leader is torque off, free to move by hand; a YAM leader with
  `leader.damped` damps), mapped joint by joint with `leader.scale` / `leader.offset`.
- `dynamixel_leader`: a GELLO-style arm of Dynamixel X servos read with one sync read per tick.
- `keyboard`: single-key joint jogging from a terminal (Franka has no leader arm).

`TeleopLoop` reads a source on its own thread, paced on the monotonic clock, and hands each
reading to a callback. Latest value wins: nothing is queued, a slow read or a slow consumer
skips ticks instead of bursting through a backlog (i2rt's minimum_gello follower once "fell
seconds behind the leader" draining a FIFO). A missing or vanished device is retried with
backoff and reported once per distinct error, so the node keeps running and never crash-loops.

Parameters (flat ROS names, as teleop_node reads them; mapping: follower = scale·leader + offset):

    source: leader_arm            # leader_arm | dynamixel_leader | keyboard
    rate_hz: 100.0
    embodiment, joint_names       # the follower's, from its config/embodiments/<name>.yaml
    leader.embodiment             # leader_arm: driver stack of the leader (default: follower's)
    leader.joint_names            # leader_arm: the leader's joints (default: follower's)
    leader.driver.*               # leader_arm: that stack's driver parameters (port, ids, ...)
    leader.damped                 # leader_arm: enable before disabling (Damiao: damping mode)
    leader.port, leader.ids, leader.baudrate, leader.signs, leader.read_retries,
    leader.packet_timeout_ms      # dynamixel_leader
    leader.scale, leader.offset   # both leaders: one per follower joint (default 1 and 0)
    keyboard.start_pose           # keyboard: one per follower joint [rad or m]
    keyboard.step                 # keyboard: jog step, one value or one per joint [rad or m]
"""

from vla_runtime.drivers.teleop.keyboard import KEY_MAP, KeyboardJog, build_keyboard
from vla_runtime.drivers.teleop.loop import TeleopLoop, TeleopReading, TeleopStatus
from vla_runtime.drivers.teleop.registry import (
    TELEOP_SOURCES,
    TeleopSourceBuilder,
    build_teleop_source,
)
from vla_runtime.drivers.teleop.sources import (
    DynamixelLeader,
    JointMapping,
    LeaderArm,
    TeleopConfig,
    TeleopConfigError,
    TeleopSource,
    build_dynamixel_leader,
    build_leader_arm,
)

__all__ = [
    "TeleopConfigError",
    "TeleopSource",
    "TeleopConfig",
    "JointMapping",
    "LeaderArm",
    "build_leader_arm",
    "DynamixelLeader",
    "build_dynamixel_leader",
    "KEY_MAP",
    "KeyboardJog",
    "build_keyboard",
    "TeleopSourceBuilder",
    "TELEOP_SOURCES",
    "build_teleop_source",
    "TeleopReading",
    "TeleopStatus",
    "TeleopLoop",
]
