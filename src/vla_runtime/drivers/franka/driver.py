"""`franka`: an FR3 (or Panda) arm and Franka Hand, driven through franka_ros2's topics.

The driver is a middleware client. `connect()` creates a small node of its own, spun by its own
single-threaded executor on a background thread (the same code runs on rclpy and on the zenoh
backend), and talks to franka_ros2 through standard-typed topics only:

- in `/franka/joint_states` (sensor_msgs/JointState): franka_bringup's joint_state_broadcaster
  (remapped there by `franka.launch.py`), fr3_joint1..7;
- in `/franka_gripper/joint_states` (sensor_msgs/JointState, best effort): franka_gripper_node,
  50 Hz, each finger at width / 2;
- out `/joint_position_controller/commands` (std_msgs/Float64MultiArray, 7 values): a
  forward_command_controller on the `position` interface (`command_interface: forward_position`);
- out `/fr3_arm_controller/joint_trajectory` (trajectory_msgs/JointTrajectory, one point): a
  joint_trajectory_controller (`command_interface: trajectory`);
- out `/franka_gripper/width_command` (std_msgs/Float64MultiArray, `[width_m]`): see "Gripper";
- in `/franka/error` (std_msgs/String, transient local): error reports, "" when there is none.

franka_bringup's stock controllers.yaml declares no forward position controller; add one:

    controller_manager:
      ros__parameters:
        joint_position_controller:
          type: forward_command_controller/ForwardCommandController
    joint_position_controller:
      ros__parameters: {joints: [fr3_joint1, ..., fr3_joint7], interface_name: position}

Its `joints` list must be in this driver's arm joint order (Float64MultiArray carries no names).
A forward controller writes each command straight to the 1 kHz position interface, so stream at
the driver's tick (100-1000 Hz) with targets that respect the FR3 acceleration and jerk limits;
`trajectory` instead lets joint_trajectory_controller interpolate from the current state to one
point `trajectory_point_time_s` ahead (suits 100 Hz and below).

Gripper: the joint is `fr3_finger_joint1`, one finger's opening in metres (0 closed, 0.04 open;
the hand's width is twice that), as franka_gripper publishes it. franka_gripper itself only offers
actions (`move`, `grasp`, control_msgs `gripper_action`), which this middleware API does not
carry, so the driver publishes the target *width* on a standard-typed topic, only when the finger
target moves by more than `gripper_deadband_m` (a hand move is a blocking action that takes
0.1-1 s; it must not be re-sent at 1 kHz). The franka_ros2 stand-in serves that topic; on a
real robot a small bridge has to turn each width into a `franka_msgs/action/Move {width, speed}`
goal (or a `control_msgs/action/GripperCommand` goal with position = width / 2 for opening,
`Grasp` for closing on an object).

Errors: a silent state topic at connect names the topic and the launch command; a command topic
nobody subscribes to names the controller to activate; a state older than `state_timeout_s`
raises DriverTimeout; an error reported on `error_topic` (e.g. libfranka's
`communication_constraints_violation` after 20 missed 1 ms commands) makes `write()` raise
DriverError until it is cleared.
"""

from __future__ import annotations

import array
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from vla_runtime import ros
from vla_runtime.drivers.base import (
    ArmDriver,
    DriverError,
    DriverTimeout,
    FloatArray,
    JointReading,
)
from vla_runtime.drivers.parameters import reject_unknown
from vla_runtime.ros.convert import joint_state_to_numpy, numpy_to_joint_trajectory
from vla_runtime.ros.interfaces import get_message

FR3_ARM_JOINTS = tuple(f"fr3_joint{index}" for index in range(1, 8))
FR3_GRIPPER_JOINT = "fr3_finger_joint1"
# Franka Hand: each finger opens 0..0.04 m (franka_description's finger joint limit; the hand's
# maximum width is 0.08 m). franka_gripper publishes width / 2 for each finger.
FINGER_MAX_POSITION_M = 0.04
ARM_JOINT_COUNT = 7

COMMAND_INTERFACES = ("forward_position", "trajectory")
_CONTROLLER_TYPES = {
    "forward_position": "forward_command_controller/ForwardCommandController (position)",
    "trajectory": "joint_trajectory_controller/JointTrajectoryController",
}
_NODE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOPIC_NAME = re.compile(r"^/?[A-Za-z_~][A-Za-z0-9_~]*(/[A-Za-z_][A-Za-z0-9_]*)*$")
_LAUNCH_HINT = "ros2 launch franka_bringup franka.launch.py robot_type:=fr3 robot_ip:=<robot-ip>"
_POLL_S = 0.01


@dataclass(frozen=True)
class FrankaConfig:
    """How to reach franka_ros2; every field is a `driver.*` parameter except `joint_names`."""

    # Embodiment joint names in command order: 7 arm joints, then optionally the gripper joint
    # (one finger's opening, metres). They must be the names franka_ros2 publishes.
    joint_names: tuple[str, ...] = (*FR3_ARM_JOINTS, FR3_GRIPPER_JOINT)
    # Measured arm state (joint_state_broadcaster, remapped by franka_bringup).
    joint_states_topic: str = "/franka/joint_states"
    # Measured gripper state (franka_gripper_node); only used with a gripper joint.
    gripper_joint_states_topic: str = "/franka_gripper/joint_states"
    # "forward_position" (Float64MultiArray to a forward_command_controller) or "trajectory"
    # (one-point JointTrajectory to a joint_trajectory_controller).
    command_interface: str = "forward_position"
    position_command_topic: str = "/joint_position_controller/commands"
    trajectory_topic: str = "/fr3_arm_controller/joint_trajectory"
    # time_from_start of the single trajectory point [s]: about one driver tick.
    trajectory_point_time_s: float = 0.01
    # Gripper width command [m] as Float64MultiArray [width]; see the module docstring.
    gripper_command_topic: str = "/franka_gripper/width_command"
    # Re-send the gripper target only when the finger target moves by more than this [m].
    gripper_deadband_m: float = 0.0005
    # std_msgs/String error reports ("" = none); "" disables. Real franka_ros2 reports errors
    # in franka_msgs/FrankaRobotState instead, so there this topic simply stays silent.
    error_topic: str = "/franka/error"
    # connect() waits this long for the first joint states and the controller's subscription.
    connect_timeout_s: float = 5.0
    # read() raises DriverTimeout when the newest state of any joint is older than this [s].
    state_timeout_s: float = 0.1
    # Name of the driver's own middleware node.
    node_name: str = "franka_driver"

    def __post_init__(self) -> None:
        names = self.joint_names
        if len(names) not in (ARM_JOINT_COUNT, ARM_JOINT_COUNT + 1):
            raise ValueError(
                f"franka driver needs 7 arm joint names plus optionally 1 gripper joint, got "
                f"{len(names)}: {list(names)}; e.g. {[*FR3_ARM_JOINTS, FR3_GRIPPER_JOINT]}"
            )
        if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"joint_names must be distinct non-empty strings, got {list(names)}")
        if self.command_interface not in COMMAND_INTERFACES:
            raise ValueError(
                f"command_interface {self.command_interface!r} is not one of "
                f"{', '.join(COMMAND_INTERFACES)}"
            )
        topics = ["joint_states_topic", "position_command_topic", "trajectory_topic"]
        if self.gripper_joint is not None:
            topics += ["gripper_joint_states_topic", "gripper_command_topic"]
        for name in [*topics, "error_topic"]:
            value = getattr(self, name)
            if (value or name != "error_topic") and not _TOPIC_NAME.match(value):
                raise ValueError(
                    f"{name} {value!r} is not a ROS topic name (e.g. '/franka/joint_states')"
                )
        for name in ("connect_timeout_s", "state_timeout_s", "trajectory_point_time_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 s, got {getattr(self, name)}")
        if not 0 <= self.gripper_deadband_m < FINGER_MAX_POSITION_M:
            raise ValueError(
                f"gripper_deadband_m must be in [0, {FINGER_MAX_POSITION_M}) m, "
                f"got {self.gripper_deadband_m}"
            )
        if not _NODE_NAME.match(self.node_name):
            raise ValueError(
                f"node_name {self.node_name!r}: letters, digits and '_', not starting with a digit"
            )

    @property
    def arm_joint_names(self) -> tuple[str, ...]:
        return self.joint_names[:ARM_JOINT_COUNT]

    @property
    def gripper_joint(self) -> str | None:
        return self.joint_names[ARM_JOINT_COUNT] if len(self.joint_names) > 7 else None

    @property
    def command_topic(self) -> str:
        if self.command_interface == "trajectory":
            return self.trajectory_topic
        return self.position_command_topic

    @property
    def controller_name(self) -> str:
        """The controller that owns the command topic (`/<controller>/commands`)."""
        parts = self.command_topic.strip("/").split("/")
        return parts[-2] if len(parts) >= 2 else parts[0]

    @classmethod
    def from_parameters(
        cls, joint_names: tuple[str, ...], parameters: Mapping[str, Any]
    ) -> FrankaConfig:
        """Build from the embodiment's `driver.*` parameters; unknown or mistyped keys fail."""
        known = {f.name: f for f in fields(cls) if f.name != "joint_names"}
        values: dict[str, Any] = {}
        reject_unknown("franka", parameters, known)
        for key, value in parameters.items():
            default = getattr(cls, key)
            if isinstance(default, float) and type(value) is int:
                value = float(value)
            if type(value) is not type(default):
                raise ValueError(
                    f"franka driver parameter {key!r} must be a {type(default).__name__}, "
                    f"got {value!r}"
                )
            values[key] = value
        return cls(joint_names=tuple(joint_names), **values)


def build(joint_names: tuple[str, ...], parameters: Mapping[str, Any]) -> ArmDriver:
    """Registry entry point: a FrankaDriver from the embodiment's joints and `driver.*`."""
    return FrankaDriver(FrankaConfig.from_parameters(joint_names, parameters))


class _JointStateTable:
    """Newest measured value of each joint, merged from several JointState topics."""

    def __init__(self, joint_names: tuple[str, ...]) -> None:
        count = len(joint_names)
        self._index = {name: i for i, name in enumerate(joint_names)}
        self.positions = np.full(count, np.nan)
        self.velocities = np.full(count, np.nan)
        self.efforts = np.full(count, np.nan)
        self.received_ns = np.zeros(count, dtype=np.int64)  # monotonic; 0 = never
        self.stamp_ns = 0
        self.seen_names: dict[str, tuple[str, ...]] = {}  # topic -> names it last carried
        self._maps: dict[tuple[str, ...], tuple[list[int], list[int]]] = {}

    def update(self, topic: str, msg: Any, received_ns: int) -> None:
        state = joint_state_to_numpy(msg)
        self.seen_names[topic] = state.names
        mapping = self._maps.get(state.names)
        if mapping is None:
            pairs = [(i, self._index[n]) for i, n in enumerate(state.names) if n in self._index]
            mapping = ([p[0] for p in pairs], [p[1] for p in pairs])
            self._maps[state.names] = mapping
        source, target = mapping
        if not target or state.position_rad.size == 0:
            return
        self.positions[target] = state.position_rad[source]
        for values, into in ((state.velocity, self.velocities), (state.effort, self.efforts)):
            into[target] = values[source] if values.size else np.nan
        self.received_ns[target] = received_ns
        # A zero header stamp (some publishers leave it) falls back to the arrival time.
        self.stamp_ns = max(self.stamp_ns, state.stamp_ns or time.time_ns())


class FrankaDriver(ArmDriver):
    """ArmDriver over franka_ros2 topics (see the module docstring for the topic contract)."""

    def __init__(self, config: FrankaConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._table = _JointStateTable(config.joint_names)
        self._topic_of_joint = {name: config.joint_states_topic for name in config.arm_joint_names}
        if config.gripper_joint is not None:
            self._topic_of_joint[config.gripper_joint] = config.gripper_joint_states_topic
        self._error = ""
        self._enabled = False
        self._node: Any = None
        self._executor: Any = None
        self._spin_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._owns_context = False
        self._command_publisher: Any = None
        self._gripper_publisher: Any = None
        self._last_finger_m: float | None = None

    @property
    def config(self) -> FrankaConfig:
        return self._config

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self._config.joint_names

    @property
    def error(self) -> str:
        """The error franka_ros2 reports on `error_topic` now; "" when there is none."""
        with self._lock:
            return self._error

    # -- lifecycle ---------------------------------------------------------------------------

    def connect(self) -> None:
        """Join the graph, wait for joint states and the controller; DriverError names what
        is missing and how to start it."""
        if self._node is not None:
            return
        if not ros.ok():
            # A standalone user (script, notebook) gets a context; a node process has one.
            ros.init(args=[])
            self._owns_context = True
        try:
            self._open()
            self._wait_until_ready(time.monotonic() + self._config.connect_timeout_s)
        except BaseException:
            self.disconnect()
            raise

    def enable(self) -> None:
        """Allow write(); franka_ros2's active controller holds the arm until commands come."""
        self._require_connected()
        self._enabled = True

    def disable(self) -> None:
        """Refuse write(). The command stream stops: with a forward position controller active,
        franka_ros2 then stops the arm (libfranka's 20-missed-commands rule); deactivate the
        controller (`ros2 control switch_controllers --deactivate ...`) for a quiet stop."""
        self._enabled = False

    def read(self) -> JointReading:
        self._require_connected()
        now_ns = time.monotonic_ns()
        with self._lock:
            positions = self._table.positions.copy()
            velocities = self._table.velocities.copy()
            efforts = self._table.efforts.copy()
            received_ns = self._table.received_ns.copy()
            stamp_ns = self._table.stamp_ns
        stalest = int(np.argmin(received_ns))
        age_s = (now_ns - int(received_ns[stalest])) / 1e9
        if age_s > self._config.state_timeout_s:
            joint = self._config.joint_names[stalest]
            raise DriverTimeout(
                f"joint state of {joint} on {self._topic_of_joint[joint]} is {age_s * 1e3:.0f} "
                f"ms old (limit {self._config.state_timeout_s * 1e3:.0f} ms): franka_ros2 "
                "stopped publishing or the link to it is down"
            )
        return JointReading(
            positions=positions,
            velocities=None if np.isnan(velocities).any() else velocities,
            efforts=None if np.isnan(efforts).any() else efforts,
            stamp_ns=stamp_ns,
        )

    def write(self, positions: FloatArray) -> None:
        """Publish arm targets [rad] (and the gripper width when it changed) now."""
        self._require_connected()
        if not self._enabled:
            raise DriverError("franka driver is not enabled: call enable() before write()")
        targets = np.asarray(positions, dtype=np.float64)
        if targets.shape != (len(self._config.joint_names),):
            raise ValueError(
                f"write() needs {len(self._config.joint_names)} positions "
                f"({', '.join(self._config.joint_names)}), got shape {targets.shape}"
            )
        if not np.all(np.isfinite(targets)):
            raise ValueError(f"write() got non-finite targets {targets.tolist()}")
        error = self.error
        if error:
            raise DriverError(
                f"franka_ros2 reports an error and ignores commands: {error}. Recover "
                "(franka_ros2: the /action_server/error_recovery action, then reactivate "
                f"{self._config.controller_name}) before writing again"
            )
        self._command_publisher.publish(self._arm_command(targets[:ARM_JOINT_COUNT]))
        if self._gripper_publisher is not None:
            # The hand refuses widths outside 0..max_width (the goal aborts): clip instead.
            finger_m = min(max(float(targets[ARM_JOINT_COUNT]), 0.0), FINGER_MAX_POSITION_M)
            last = self._last_finger_m
            if last is None or abs(finger_m - last) > self._config.gripper_deadband_m:
                command = get_message("std_msgs/msg/Float64MultiArray")()
                command.data = _float_sequence(command.data, np.array([2.0 * finger_m]))
                self._gripper_publisher.publish(command)
                self._last_finger_m = finger_m

    def disconnect(self) -> None:
        self._enabled = False
        self._stop.set()
        if self._spin_thread is not None:
            self._spin_thread.join(timeout=2.0)
            self._spin_thread = None
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None
        if self._node is not None:
            self._node.destroy_node()
            self._node = None
        self._command_publisher = self._gripper_publisher = None
        self._last_finger_m = None
        if self._owns_context:
            ros.try_shutdown()
            self._owns_context = False

    # -- internals ---------------------------------------------------------------------------

    def _open(self) -> None:
        config = self._config
        joint_state = get_message("sensor_msgs/msg/JointState")
        # Best effort subscriptions match reliable (joint_state_broadcaster) and best-effort
        # (franka_gripper's SensorDataQoS) publishers alike; only the newest state matters.
        state_qos = ros.QoSProfile(depth=1, reliability=ros.ReliabilityPolicy.BEST_EFFORT)
        command_qos = ros.QoSProfile(depth=1)  # ros2_controllers subscribe reliable
        self._stop.clear()
        self._node = node = ros.Node(config.node_name)
        for topic in dict.fromkeys(self._topic_of_joint.values()):
            node.create_subscription(
                joint_state, topic, lambda msg, t=topic: self._on_joint_state(t, msg), state_qos
            )
        if config.error_topic:
            latched = ros.QoSProfile(depth=1, durability=ros.DurabilityPolicy.TRANSIENT_LOCAL)
            node.create_subscription(
                get_message("std_msgs/msg/String"), config.error_topic, self._on_error, latched
            )
        command_type = (
            "trajectory_msgs/msg/JointTrajectory"
            if config.command_interface == "trajectory"
            else "std_msgs/msg/Float64MultiArray"
        )
        self._command_publisher = node.create_publisher(
            get_message(command_type), config.command_topic, command_qos
        )
        if config.gripper_joint is not None:
            self._gripper_publisher = node.create_publisher(
                get_message("std_msgs/msg/Float64MultiArray"),
                config.gripper_command_topic,
                command_qos,
            )
        self._executor = ros.SingleThreadedExecutor()
        self._executor.add_node(node)
        self._spin_thread = threading.Thread(
            target=self._spin, args=(self._executor,), name="franka-driver-spin", daemon=True
        )
        self._spin_thread.start()

    def _spin(self, executor: Any) -> None:
        while not self._stop.is_set() and ros.ok():
            try:
                executor.spin_once(timeout_sec=0.05)
            except Exception:  # the executor or the context was shut down under us
                return

    def _on_joint_state(self, topic: str, msg: Any) -> None:
        received_ns = time.monotonic_ns()
        with self._lock:
            self._table.update(topic, msg, received_ns)

    def _on_error(self, msg: Any) -> None:
        with self._lock:
            self._error = str(msg.data)

    def _wait_until_ready(self, deadline: float) -> None:
        config = self._config
        while True:
            with self._lock:
                missing = [
                    name
                    for name, received in zip(
                        config.joint_names, self._table.received_ns, strict=True
                    )
                    if received == 0
                ]
            if not missing:
                break
            if time.monotonic() >= deadline:
                raise DriverError(self._silent_state_message(missing))
            time.sleep(_POLL_S)
        publishers = [(self._command_publisher, config.controller_name)]
        if self._gripper_publisher is not None:
            publishers.append((self._gripper_publisher, ""))
        for publisher, controller in publishers:
            while publisher.get_subscription_count() == 0:
                if time.monotonic() >= deadline:
                    message = self._no_controller_message(publisher.topic_name, controller)
                    raise DriverError(message)
                time.sleep(_POLL_S)

    def _silent_state_message(self, missing: list[str]) -> str:
        config = self._config
        topic = self._topic_of_joint[missing[0]]
        with self._lock:
            seen = self._table.seen_names.get(topic)
        if seen is not None:
            return (
                f"{topic} carries joints {list(seen)} but not {missing}: set the embodiment's "
                "joint names to the ones franka_ros2 publishes (robot_type / arm_prefix)"
            )
        if topic == config.gripper_joint_states_topic and config.gripper_joint is not None:
            source = "franka_gripper_node publishes it; add load_gripper:=true"
        else:
            source = "its joint_state_broadcaster publishes it"
        return (
            f"no sensor_msgs/msg/JointState on {topic} within {config.connect_timeout_s:g} s: "
            f"franka_ros2 is not running or not reachable (same ROS_DOMAIN_ID / Zenoh router?). "
            f"Start it with `{_LAUNCH_HINT}` ({source}) and activate {config.controller_name} "
            f"(`ros2 run controller_manager spawner {config.controller_name}`)"
        )

    def _no_controller_message(self, topic: str, controller: str) -> str:
        wait = f"{self._config.connect_timeout_s:g} s"
        if not controller:
            return (
                f"nothing subscribes to {topic} after {wait}: franka_gripper only offers "
                "actions; run a bridge that turns this width topic into franka_gripper `move`/"
                "`grasp` goals (or the franka_ros2 stand-in), or drop the gripper joint"
            )
        controller_type = _CONTROLLER_TYPES[self._config.command_interface]
        return (
            f"nothing subscribes to {topic} after {wait}: the controller {controller} "
            f"({controller_type}) is not active. Load and activate it: "
            f"`ros2 run controller_manager spawner {controller}`"
        )

    def _arm_command(self, arm_targets: FloatArray) -> Any:
        config = self._config
        if config.command_interface == "trajectory":
            # Zero header stamp: joint_trajectory_controller starts the point "now".
            return numpy_to_joint_trajectory(
                config.arm_joint_names, arm_targets[None, :], [config.trajectory_point_time_s]
            )
        command = get_message("std_msgs/msg/Float64MultiArray")()
        command.data = _float_sequence(command.data, arm_targets)
        return command

    def _require_connected(self) -> None:
        if self._node is None:
            raise DriverError("franka driver is not connected: call connect() first")


def _float_sequence(field_value: Any, values: FloatArray) -> Any:
    """A float64[] field value: numpy on the zenoh backend, array.array('d') on rclpy."""
    if isinstance(field_value, np.ndarray):
        return np.array(values, dtype=np.float64)
    return array.array("d", values.tolist())
