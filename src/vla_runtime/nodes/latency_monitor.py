"""`latency_monitor`: per-stage latency, observation chains and deadlines for a running graph.

    latency_monitor --ros-args -p embodiment:=so100

Subscribes to the pipeline's topics (/cameras/<cam>/image_raw for the embodiment's cameras,
/think/scene, /policy/action_chunk, /policy/depth_tokens, /robot/joint_states,
/robot/joint_commands, /robot/mode) and /diagnostics (the policy's trace, the driver's loop
counters and applied chunk). Computes from stamps and traces only (core/latency_monitor.py), so
it works across machines and on rclpy. On a deadline breach (config/deadlines/<embodiment>.yaml)
calls /robot/hold once and logs why; on auto-release calls /robot/release. Time-driven rules
(camera gap, liveliness) are checked by a one-shot timer at the moment their condition would
become true, not only by the periodic check. Publishes its
summaries on /diagnostics at 1 Hz (format: docs/latency.md).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from vla_runtime import ros
from vla_runtime.core.deadlines import Action, DeadlineConfigError, load_rules
from vla_runtime.core.latency_monitor import PREFIX, LatencyMonitor, StatusRow
from vla_runtime.nodes._diagnostics import LEVELS
from vla_runtime.nodes._runner import EXIT_CONFIG_ERROR, run_node
from vla_runtime.policy.transforms import TransformConfigError, load_transform_config
from vla_runtime.resources import resolve
from vla_runtime.ros import convert
from vla_runtime.ros.interfaces import get_message, get_service
from vla_runtime.ros.zenoh.arguments import RosArgumentError, load_params_file

Image = get_message("sensor_msgs/msg/Image")
JointState = get_message("sensor_msgs/msg/JointState")
JointTrajectory = get_message("trajectory_msgs/msg/JointTrajectory")
String = get_message("std_msgs/msg/String")
DiagnosticArray = get_message("diagnostic_msgs/msg/DiagnosticArray")
DiagnosticStatus = get_message("diagnostic_msgs/msg/DiagnosticStatus")
KeyValue = get_message("diagnostic_msgs/msg/KeyValue")
Trigger = get_service("std_srvs/srv/Trigger")

PARAMETERS: dict[str, tuple[Any, str]] = {
    "embodiment": ("so100", "config/embodiments/<name>.yaml: its policy cameras"),
    "deadlines": (
        "",
        "a deadline file or a name in config/deadlines/; empty = <embodiment>.yaml there",
    ),
    "window_s": (10, "rolling window of the stage statistics [s]"),
    "evaluate_rate_hz": (
        50.0,
        "periodic deadline checks per second, a backstop: rules are also checked on every "
        "chunk and status, and exactly when a camera gap or a node's absence reaches its limit",
    ),
}


def _command_period_s(embodiment: str) -> float:
    """Expected /robot/joint_commands interval: the driver publishes every k-th tick."""
    path = resolve("config", f"embodiments/{embodiment}.yaml")
    driver = load_params_file(str(path), "/driver")
    control_hz = float(driver.get("control_rate_hz", 100.0))
    every = max(1, round(control_hz / float(driver.get("state_publish_rate_hz", control_hz))))
    return every / control_hz


class LatencyMonitorConfigError(ValueError):
    """Parameters or a deadline file the monitor cannot use (message says what to change)."""


class LatencyMonitorNode(ros.Node):
    def __init__(self) -> None:
        super().__init__("latency_monitor")
        for name, (default, description) in PARAMETERS.items():
            descriptor = ros.ParameterDescriptor(description=description, read_only=True)
            self.declare_parameter(name, default, descriptor)
        value = {name: self.get_parameter(name).value for name in PARAMETERS}
        embodiment = str(value["embodiment"])
        try:
            cameras = list(load_transform_config(embodiment).cameras)
            name = str(value["deadlines"]) or embodiment
            is_path = "/" in name or name.endswith((".yaml", ".yml"))
            path = name if is_path else str(resolve("config", f"deadlines/{name}.yaml"))
            rules = load_rules(path)
            command_period_s = _command_period_s(embodiment)
        except (TransformConfigError, DeadlineConfigError, RosArgumentError, OSError) as exc:
            raise LatencyMonitorConfigError(str(exc)) from exc
        self.declare_parameter(
            "cameras",
            cameras,
            ros.ParameterDescriptor(description="camera names to watch", read_only=True),
        )
        cameras = [str(c) for c in self.get_parameter("cameras").value]
        self.monitor = LatencyMonitor(cameras, rules, int(value["window_s"]), command_period_s)

        sensor = ros.qos_profile_sensor_data
        monitor = self.monitor
        stamped: list[tuple[Any, str, Any, Any]] = [
            (Image, f"/cameras/{camera}/image_raw", self._on_image(camera), sensor)
            for camera in cameras
        ]
        stamped += [
            (Image, "/think/scene", monitor.on_scene, sensor),
            (Image, "/policy/depth_tokens", monitor.on_depth_tokens, 10),
            (JointState, "/robot/joint_states", monitor.on_joint_state, sensor),
            (JointState, "/robot/joint_commands", monitor.on_joint_command, sensor),
        ]
        for message, topic, handler, qos in stamped:
            self.create_subscription(message, topic, self._stamped(handler), qos)
        self.create_subscription(JointTrajectory, "/policy/action_chunk", self._on_chunk, 10)
        latched = ros.QoSProfile(depth=1, durability=ros.DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(String, "/robot/mode", self._on_mode, latched)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._clients = {
            request: self.create_client(Trigger, f"/robot/{request}")
            for request in ("hold", "release")
        }
        self._due_timer: Any = None
        self._due_ns: int | None = None
        self.create_timer(1.0 / float(value["evaluate_rate_hz"]), self._evaluate)
        self.create_timer(1.0, self._publish)
        self.get_logger().info(
            f"watching {embodiment} (cameras {cameras}); deadlines from {path}: "
            f"{', '.join(r.name for r in rules) or 'none'}"
        )

    # -- inputs ---------------------------------------------------------------------------

    @staticmethod
    def _stamped(handler: Any) -> Any:
        def on_message(msg: Any) -> None:
            handler(convert.stamp_to_ns(msg.header.stamp), time.time_ns())

        return on_message

    def _on_image(self, camera: str) -> Any:
        def on_image(stamp_ns: int, now_ns: int) -> None:
            self.monitor.on_image(camera, stamp_ns, now_ns)
            self._schedule()  # a camera seen for the first time: its gap is now watched

        return on_image

    def _on_chunk(self, msg: Any) -> None:
        now_ns = time.time_ns()
        self.monitor.on_chunk(convert.stamp_to_ns(msg.header.stamp), now_ns)
        self._act(self.monitor.evaluate(now_ns))  # an old chunk holds before it is executed

    def _on_mode(self, msg: Any) -> None:
        self.monitor.on_mode(str(msg.data), time.time_ns())

    def _on_diagnostics(self, msg: Any) -> None:
        now_ns = time.time_ns()
        for status in msg.status:
            name = str(status.name)
            if name.startswith(f"{PREFIX}/"):
                continue  # our own
            values = {str(kv.key): str(kv.value) for kv in status.values}
            if name == "policy":
                self.monitor.on_policy_status(values, now_ns)
            elif name.startswith("driver"):
                self.monitor.on_driver_status(values, now_ns)
        self._act(self.monitor.evaluate(now_ns))  # a slow policy or an overrunning driver

    # -- outputs --------------------------------------------------------------------------

    def _evaluate(self) -> None:
        now_ns = time.time_ns()
        self.monitor.on_nodes(self.get_node_names(), now_ns)  # liveliness at the check's rate
        self._act(self.monitor.evaluate(now_ns))
        self._schedule()

    def _schedule(self) -> None:
        """Arm a one-shot timer for the next time-driven change (core: next_due_ns). Frames
        only move a gap's due time later, so an armed timer earlier than that is kept: it fires,
        finds the rule clear, and re-arms for the new time (once per limit, not per frame)."""
        due_ns = self.monitor.next_due_ns()
        if due_ns is None or (self._due_ns is not None and self._due_ns <= due_ns):
            return
        if self._due_timer is not None:
            self._due_timer.cancel()
            self.destroy_timer(self._due_timer)
        self._due_ns = due_ns
        delay_s = max((due_ns - time.time_ns()) / 1e9, 1e-4)
        self._due_timer = self.create_timer(delay_s, self._on_due)

    def _on_due(self) -> None:
        if self._due_timer is not None:
            self._due_timer.cancel()
            self.destroy_timer(self._due_timer)
        self._due_timer, self._due_ns = None, None
        self._evaluate()

    def _act(self, actions: list[Action]) -> None:
        for action in actions:
            log = self.get_logger().error if action.request == "hold" else self.get_logger().info
            log(f"deadline {action.request}: {action.reason}")
            future = self._clients[action.request].call_async(Trigger.Request())
            future.add_done_callback(self._answered(action.request))

    def _answered(self, request: str) -> Any:
        def done(future: Any) -> None:
            try:
                response = future.result()
            except Exception as exc:  # no driver, or it failed: say so, keep monitoring
                self.get_logger().error(f"/robot/{request} failed: {exc}")
                return
            if response is not None and not response.success:
                self.get_logger().warning(f"/robot/{request} refused: {response.message}")

        return done

    def _publish(self) -> None:
        now_ns = time.time_ns()
        self.monitor.on_nodes(self.get_node_names(), now_ns)
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [self._status(row) for row in self.monitor.report(now_ns)]
        self._diagnostics.publish(array)

    @staticmethod
    def _status(row: StatusRow) -> Any:
        return DiagnosticStatus(
            level=LEVELS[row.level],
            name=row.name,
            message=row.message,
            hardware_id="latency_monitor",
            values=[KeyValue(key=key, value=value) for key, value in row.values.items()],
        )


def main(args: list[str] | None = None) -> int:
    try:
        return run_node("latency_monitor", LatencyMonitorNode, args)
    except LatencyMonitorConfigError as exc:  # run_node has already shut the middleware down
        print(f"latency_monitor: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR


if __name__ == "__main__":
    sys.exit(main())
