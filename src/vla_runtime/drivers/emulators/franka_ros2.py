"""A franka_ros2 stand-in: the topics and services our Franka driver uses, on an emulated FR3.

    python -m vla_runtime.drivers.emulators.franka_ros2 --ros-args -p publish_rate_hz:=500.0

What it serves (names are parameters; defaults match `vla_runtime.drivers.franka.FrankaConfig`):

- out `/franka/joint_states` (sensor_msgs/JointState): joint_state_broadcaster, fr3_joint1..7;
- out `/franka_gripper/joint_states` (sensor_msgs/JointState, best effort, 50 Hz):
  franka_gripper_node, both fingers at width / 2;
- in `/joint_position_controller/commands` (std_msgs/Float64MultiArray, 7 values): a
  forward_command_controller on the position interface;
- in `/fr3_arm_controller/joint_trajectory` (trajectory_msgs/JointTrajectory):
  joint_trajectory_controller, simplified to "go to the last point";
- in `/franka_gripper/width_command` (std_msgs/Float64MultiArray, `[width_m]`): the bridge to
  franka_gripper's `move` action that a real robot would need;
- out `/franka/error` (std_msgs/String, transient local, "" = no error): what franka_ros2 reports
  in FrankaRobotState's current_errors;
- service `/franka/error_recovery` (std_srvs/Trigger): franka_ros2's
  `/action_server/error_recovery` action.

Joints follow their targets with first-order dynamics (`time_constant_s`), limited by the FR3
velocity limits and clipped to its position limits, unless a simulated world is attached: then
the world moves them through `set_positions()` (or advances the emulated dynamics with `step()`)
and reads the commanded `targets()`.

libfranka's rule that commands keep flowing is modelled: once a forward position command has
arrived, the controller expects one every 1 ms control cycle; after `missed_command_limit` (20)
consecutive cycles without one the arm stops where it is, `communication_constraints_violation`
is reported on the error topic, and commands are ignored until the recovery service is called.
The check runs at each state tick, so it trips within one publish period of the 20 ms mark.
Trajectory commands do not stream (joint_trajectory_controller interpolates on its own), so they
leave the check disarmed.

The state rate defaults to 250 Hz, not libfranka's 1 kHz: a Python node on a 2-core machine
keeps 250 Hz steadily beside a driver and a router; 1000 Hz is a parameter away where the CPU
allows.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from vla_runtime import ros
from vla_runtime.drivers.base import FloatArray
from vla_runtime.ros.convert import joint_trajectory_to_numpy, numpy_to_joint_state
from vla_runtime.ros.interfaces import get_message, get_service

# FR3 joint limits (frankaemika/docs control-parameters-joint-fr3.csv; Panda's differ).
FR3_POSITION_MIN_RAD = (-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159)
FR3_POSITION_MAX_RAD = (2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159)
FR3_MAX_VELOCITY_RAD_S = (2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26)
# Franka Hand: 0..0.04 m per finger; franka_gripper's default speed is 0.1 m/s of width.
FINGER_MAX_POSITION_M = 0.04
FINGER_MAX_VELOCITY_M_S = 0.05
# franka_ros2's "ready" pose (move_to_start_example_controller, MoveIt's `ready`).
FR3_READY_RAD = (0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4)
COMMUNICATION_VIOLATION = "communication_constraints_violation"


def _parameter(default: Any, description: str) -> Any:
    return field(default=default, metadata={"description": description})


@dataclass(frozen=True)
class FrankaRos2EmulatorConfig:
    """The stand-in's settings; each field is a read-only ROS parameter of the same name."""

    publish_rate_hz: float = _parameter(250.0, "arm joint state rate [Hz] (libfranka: 1000)")
    gripper_publish_rate_hz: float = _parameter(50.0, "gripper joint state rate [Hz]")
    arm_joint_names: tuple[str, ...] = _parameter(
        tuple(f"fr3_joint{i}" for i in range(1, 8)), "the 7 arm joints, in command order"
    )
    gripper_joint_names: tuple[str, ...] = _parameter(
        ("fr3_finger_joint1", "fr3_finger_joint2"), "the 2 finger joints"
    )
    initial_positions: tuple[float, ...] = _parameter(FR3_READY_RAD, "arm start pose [rad]")
    initial_finger_position_m: float = _parameter(FINGER_MAX_POSITION_M, "finger start [m]")
    time_constant_s: float = _parameter(0.05, "first-order time constant of every joint [s]")
    control_period_s: float = _parameter(0.001, "libfranka control cycle [s]")
    missed_command_limit: int = _parameter(
        20, "consecutive control cycles without a position command before the arm stops"
    )
    joint_states_topic: str = _parameter("/franka/joint_states", "arm state out")
    gripper_joint_states_topic: str = _parameter("/franka_gripper/joint_states", "gripper out")
    position_command_topic: str = _parameter(
        "/joint_position_controller/commands", "forward position commands in"
    )
    trajectory_topic: str = _parameter("/fr3_arm_controller/joint_trajectory", "trajectory in")
    gripper_command_topic: str = _parameter("/franka_gripper/width_command", "width [m] in")
    error_topic: str = _parameter("/franka/error", "error reports out ('' = none)")
    error_recovery_service: str = _parameter("/franka/error_recovery", "clears the error")

    def __post_init__(self) -> None:
        for name in ("publish_rate_hz", "gripper_publish_rate_hz"):
            if not 0 < getattr(self, name) <= 1000:
                raise ValueError(f"{name} must be in (0, 1000] Hz, got {getattr(self, name)}")
        for name in ("time_constant_s", "control_period_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 s, got {getattr(self, name)}")
        if self.missed_command_limit < 1:
            raise ValueError(f"missed_command_limit must be >= 1, got {self.missed_command_limit}")
        if len(self.arm_joint_names) != 7 or len(set(self.arm_joint_names)) != 7:
            raise ValueError(f"arm_joint_names needs 7 distinct names, got {self.arm_joint_names}")
        if len(self.gripper_joint_names) != 2:
            raise ValueError(f"gripper_joint_names needs 2 names, got {self.gripper_joint_names}")
        start = np.asarray(self.initial_positions, dtype=np.float64)
        low, high = np.array(FR3_POSITION_MIN_RAD), np.array(FR3_POSITION_MAX_RAD)
        if start.shape != (7,) or np.any(start < low) or np.any(start > high):
            raise ValueError(
                f"initial_positions must be 7 angles inside the FR3 limits {FR3_POSITION_MIN_RAD}"
                f" .. {FR3_POSITION_MAX_RAD} rad, got {self.initial_positions}"
            )
        if not 0 <= self.initial_finger_position_m <= FINGER_MAX_POSITION_M:
            raise ValueError(
                f"initial_finger_position_m must be in [0, {FINGER_MAX_POSITION_M}] m, "
                f"got {self.initial_finger_position_m}"
            )


class FrankaArmModel:
    """The emulated FR3 + hand, free of any middleware: 7 arm joints [rad], then one finger [m].

    Not thread-safe; the node serialises access.
    """

    def __init__(self, config: FrankaRos2EmulatorConfig) -> None:
        self._config = config
        self._low = np.array([*FR3_POSITION_MIN_RAD, 0.0])
        self._high = np.array([*FR3_POSITION_MAX_RAD, FINGER_MAX_POSITION_M])
        self._max_velocity = np.array([*FR3_MAX_VELOCITY_RAD_S, FINGER_MAX_VELOCITY_M_S])
        self.positions: FloatArray = np.array(
            [*config.initial_positions, config.initial_finger_position_m], dtype=np.float64
        )
        self.velocities: FloatArray = np.zeros(8)
        self.targets: FloatArray = self.positions.copy()
        self.error = ""
        self.commands_received = 0
        self.longest_command_gap_ns = 0  # between streamed commands, for rate reports
        self._streaming = False  # a position command arrived: the 1 kHz stream is expected
        self._last_command_ns = 0
        self._period_ns = round(config.control_period_s * 1e9)

    def command_arm(self, targets_rad: FloatArray, now_ns: int, streaming: bool) -> bool:
        """Set the 7 arm targets (clipped to the limits); False when ignored because of an error.

        `streaming` commands (forward position) arm the missed-command check; others disarm it.
        """
        if self.error:
            return False
        if streaming and self._streaming:
            gap_ns = now_ns - self._last_command_ns
            self.longest_command_gap_ns = max(self.longest_command_gap_ns, gap_ns)
        self.commands_received += 1
        self.targets[:7] = np.clip(targets_rad, self._low[:7], self._high[:7])
        self._streaming = streaming
        self._last_command_ns = now_ns
        return True

    def command_finger(self, position_m: float) -> None:
        # The hand is its own device: an arm error does not stop it.
        self.targets[7] = min(max(position_m, 0.0), FINGER_MAX_POSITION_M)

    def step(self, dt_s: float) -> None:
        """Advance every joint by `dt_s` towards its target (exact first-order step, then the
        velocity limit, then the position limits)."""
        if dt_s <= 0:
            return
        alpha = 1.0 - math.exp(-dt_s / self._config.time_constant_s)
        limit = self._max_velocity * dt_s
        delta = np.clip((self.targets - self.positions) * alpha, -limit, limit)
        if self.error:
            delta[:7] = 0.0
        previous = self.positions
        self.positions = np.clip(previous + delta, self._low, self._high)
        self.velocities = (self.positions - previous) / dt_s

    def set_positions(self, positions: FloatArray, velocities: FloatArray | None = None) -> None:
        """Measured state from a simulated world (8 values: arm [rad], finger [m])."""
        self.positions = np.array(positions, dtype=np.float64).reshape(8)
        self.velocities = (
            np.zeros(8) if velocities is None else np.array(velocities, dtype=np.float64)
        )

    def check_command_stream(self, now_ns: int) -> bool:
        """Apply libfranka's missed-command rule at `now_ns`; True when the arm just stopped."""
        if not self._streaming or self.error:
            return False
        missed = (now_ns - self._last_command_ns) // self._period_ns
        if missed < self._config.missed_command_limit:
            return False
        self.error = (
            f"{COMMUNICATION_VIOLATION}: no joint position command for {missed} consecutive "
            f"{self._config.control_period_s * 1e3:g} ms control cycles "
            f"(limit {self._config.missed_command_limit})"
        )
        self._hold()
        return True

    def recover(self) -> str:
        """Clear the error (automatic error recovery); return what was cleared ("" if none)."""
        cleared, self.error = self.error, ""
        self._hold()
        return cleared

    def _hold(self) -> None:
        self._streaming = False
        self.targets[:7] = self.positions[:7]
        self.velocities[:7] = 0.0


# ros.Node is chosen at run time (rclpy or zenoh), so mypy --strict sees a base of type Any.
class FrankaRos2Emulator(ros.Node):  # type: ignore[misc, unused-ignore]
    """The stand-in node (see the module docstring). Sim hooks are safe from any thread."""

    def __init__(
        self,
        config: FrankaRos2EmulatorConfig | None = None,
        node_name: str = "franka_ros2_emulator",
    ) -> None:
        super().__init__(node_name)
        self.config = self._declare(config or FrankaRos2EmulatorConfig())
        config = self.config
        self._lock = threading.Lock()
        self._model: FrankaArmModel = FrankaArmModel(config)
        self._world_attached = False
        self._last_tick_ns = time.monotonic_ns()
        self._string = get_message("std_msgs/msg/String")
        float_array = get_message("std_msgs/msg/Float64MultiArray")
        joint_state = get_message("sensor_msgs/msg/JointState")
        self._state_publisher = self.create_publisher(joint_state, config.joint_states_topic, 10)
        self._gripper_publisher = self.create_publisher(
            joint_state, config.gripper_joint_states_topic, ros.qos_profile_sensor_data
        )
        latched = ros.QoSProfile(depth=1, durability=ros.DurabilityPolicy.TRANSIENT_LOCAL)
        self._error_publisher = self.create_publisher(self._string, config.error_topic, latched)
        self.create_subscription(
            float_array, config.position_command_topic, self._on_position_command, 1
        )
        self.create_subscription(
            get_message("trajectory_msgs/msg/JointTrajectory"),
            config.trajectory_topic,
            self._on_trajectory,
            1,
        )
        self.create_subscription(
            float_array, config.gripper_command_topic, self._on_gripper_command, 1
        )
        self.create_service(
            get_service("std_srvs/srv/Trigger"), config.error_recovery_service, self._on_recovery
        )
        self._error_publisher.publish(self._string(data=""))
        self.create_timer(1.0 / config.publish_rate_hz, self._tick)
        self.create_timer(1.0 / config.gripper_publish_rate_hz, self._publish_gripper)
        self.get_logger().info(
            f"franka_ros2 emulator ready: {config.joint_states_topic} at "
            f"{config.publish_rate_hz:g} Hz, commands on {config.position_command_topic} / "
            f"{config.trajectory_topic}, recovery {config.error_recovery_service}"
        )

    # -- sim hooks ---------------------------------------------------------------------------

    def attach_world(self) -> None:
        """From now on a simulated world moves the joints (`set_positions()` or `step()`)."""
        with self._lock:
            self._world_attached = True

    def step(self, dt_s: float) -> None:
        """Advance the emulated dynamics by `dt_s` (the state timer does this unless a world
        is attached)."""
        with self._lock:
            self._model.step(dt_s)

    def set_positions(self, positions: FloatArray, velocities: FloatArray | None = None) -> None:
        """Measured positions from the world: 7 arm joints [rad], then one finger [m]."""
        with self._lock:
            self._model.set_positions(positions, velocities)

    def positions(self) -> FloatArray:
        """Measured positions now: 7 arm joints [rad], then one finger [m]."""
        with self._lock:
            positions: FloatArray = self._model.positions.copy()
        return positions

    def targets(self) -> FloatArray:
        """Commanded positions now (what a world's actuators should track), same layout."""
        with self._lock:
            targets: FloatArray = self._model.targets.copy()
        return targets

    @property
    def error(self) -> str:
        with self._lock:
            return self._model.error

    # -- middleware --------------------------------------------------------------------------

    def _declare(self, defaults: FrankaRos2EmulatorConfig) -> FrankaRos2EmulatorConfig:
        values: dict[str, Any] = {}
        for item in fields(defaults):
            default = getattr(defaults, item.name)
            descriptor = ros.ParameterDescriptor(
                description=item.metadata["description"], read_only=True
            )
            declared = list(default) if isinstance(default, tuple) else default
            value = self.declare_parameter(item.name, declared, descriptor).value
            values[item.name] = tuple(value) if isinstance(default, tuple) else value
        return FrankaRos2EmulatorConfig(**values)

    def _tick(self) -> None:
        now_ns = time.monotonic_ns()
        with self._lock:
            if not self._world_attached:
                self._model.step((now_ns - self._last_tick_ns) / 1e9)
            self._last_tick_ns = now_ns
            stopped = self._model.check_command_stream(now_ns)
            error = self._model.error
            positions = self._model.positions[:7].copy()
            velocities = self._model.velocities[:7].copy()
        if stopped:
            report = (
                f"{error}; motion stopped until {self.config.error_recovery_service} "
                "(std_srvs/srv/Trigger) is called"
            )
            self.get_logger().error(report)
            self._error_publisher.publish(self._string(data=report))
        self._state_publisher.publish(
            numpy_to_joint_state(
                self.config.arm_joint_names,
                positions,
                velocities,
                np.zeros(7),
                stamp_ns=time.time_ns(),
            )
        )

    def _publish_gripper(self) -> None:
        with self._lock:
            finger_m = float(self._model.positions[7])
            finger_m_s = float(self._model.velocities[7])
        self._gripper_publisher.publish(
            numpy_to_joint_state(
                self.config.gripper_joint_names,
                [finger_m, finger_m],
                [finger_m_s, finger_m_s],
                [0.0, 0.0],
                stamp_ns=time.time_ns(),
            )
        )

    def _on_position_command(self, msg: Any) -> None:
        now_ns = time.monotonic_ns()
        targets = np.asarray(msg.data, dtype=np.float64)
        if targets.shape != (7,) or not np.all(np.isfinite(targets)):
            # forward_command_controller logs and drops a command of the wrong size, too.
            self._complain(f"dropped a position command of {targets.size} values (need 7 finite)")
            return
        with self._lock:
            accepted = self._model.command_arm(targets, now_ns, streaming=True)
        if not accepted:
            self._complain("ignoring commands until the error is recovered")

    def _on_trajectory(self, msg: Any) -> None:
        try:
            trajectory = joint_trajectory_to_numpy(msg)
        except ValueError as exc:
            self._complain(f"dropped a trajectory: {exc}")
            return
        names = self.config.arm_joint_names
        if sorted(trajectory.joint_names) != sorted(names) or len(trajectory.positions) == 0:
            self._complain(
                f"dropped a trajectory for joints {list(trajectory.joint_names)} with "
                f"{len(trajectory.positions)} points: need all of {list(names)}"
            )
            return
        order = [trajectory.joint_names.index(name) for name in names]
        with self._lock:
            accepted = self._model.command_arm(
                trajectory.positions[-1, order], time.monotonic_ns(), streaming=False
            )
        if not accepted:
            self._complain("ignoring commands until the error is recovered")

    def _on_gripper_command(self, msg: Any) -> None:
        width = np.asarray(msg.data, dtype=np.float64)
        if width.shape != (1,) or not 0 <= width[0] <= 2 * FINGER_MAX_POSITION_M:
            self._complain(
                f"dropped a gripper command {width.tolist()}: need [width] in "
                f"[0, {2 * FINGER_MAX_POSITION_M}] m"
            )
            return
        with self._lock:
            self._model.command_finger(float(width[0]) / 2)

    def _on_recovery(self, request: Any, response: Any) -> Any:
        with self._lock:
            cleared = self._model.recover()
        self._error_publisher.publish(self._string(data=""))
        response.success = True
        response.message = f"recovered from {cleared}" if cleared else "no error to recover from"
        self.get_logger().info(response.message)
        return response

    def _complain(self, message: str) -> None:
        self.get_logger().error(message, throttle_duration_sec=1.0)

    def destroy_node(self) -> None:
        with self._lock:
            count, gap_ns = self._model.commands_received, self._model.longest_command_gap_ns
        self.get_logger().info(
            f"accepted {count} arm commands; longest gap between streamed ones "
            f"{gap_ns / 1e6:.1f} ms"
        )
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Run the stand-in until Ctrl-C / SIGTERM; a bad parameter is one line and exit code 2."""
    ros.init(args=args)
    try:
        node = FrankaRos2Emulator()
    except Exception as exc:  # a malformed parameter or an invalid config value
        print(f"franka_ros2_emulator: {exc}", file=sys.stderr)
        ros.try_shutdown()
        return 2
    try:
        ros.spin(node)
    except (KeyboardInterrupt, ros.ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        ros.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
