"""`driver_node`: one embodiment's arm (or arms) on a fixed-rate loop, behind the safety envelope.

Parameters come from `config/embodiments/<name>.yaml` (see drivers/embodiment.py). Topics and
services are DESIGN §3's: chunks in on /policy/action_chunk, teleop targets on
/teleop/joint_targets; state out on /robot/joint_states, /robot/joint_commands, /robot/mode
(latched) and /diagnostics; handover switches /robot/{engage_policy,engage_teleop,hold,release}.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from vla_runtime import ros
from vla_runtime.core.chunk_executor import ActionChunk
from vla_runtime.drivers.control_loop import DriverLoop, TickReport
from vla_runtime.drivers.embodiment import EmbodimentConfig
from vla_runtime.drivers.registry import build_driver
from vla_runtime.nodes._diagnostics import diagnostic_array
from vla_runtime.nodes._runner import run_node
from vla_runtime.ros import convert
from vla_runtime.ros.interfaces import get_message, get_service

String = get_message("std_msgs/msg/String")
JointState = get_message("sensor_msgs/msg/JointState")
JointTrajectory = get_message("trajectory_msgs/msg/JointTrajectory")
DiagnosticArray = get_message("diagnostic_msgs/msg/DiagnosticArray")
Trigger = get_service("std_srvs/srv/Trigger")
# Class constants, not literals: rclpy's byte fields are bytes, the zenoh backend's ints.


class DriverNode(ros.Node):
    def __init__(self) -> None:
        super().__init__("driver", automatically_declare_parameters_from_overrides=True)
        parameters = {name: p.value for name, p in self.get_parameters_by_prefix("").items()}
        self.config = EmbodimentConfig.from_parameters(parameters)
        driver = build_driver(self.config.name, self.config.joint_names, self.config.driver)
        self.loop = DriverLoop(self.config, driver, self._on_tick, self._on_error)
        self._every = max(
            1, round(self.config.control_rate_hz / self.config.state_publish_rate_hz)
        )
        self._mode = ""
        sensor = ros.qos_profile_sensor_data
        self._states = self.create_publisher(JointState, "/robot/joint_states", sensor)
        self._commands = self.create_publisher(JointState, "/robot/joint_commands", sensor)
        latched = ros.QoSProfile(depth=1, durability=ros.DurabilityPolicy.TRANSIENT_LOCAL)
        self._mode_pub = self.create_publisher(String, "/robot/mode", latched)
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(JointTrajectory, "/policy/action_chunk", self._on_chunk, 10)
        self.create_subscription(JointState, "/teleop/joint_targets", self._on_teleop, sensor)
        for request in ("engage_policy", "engage_teleop", "hold", "release"):
            self.create_service(Trigger, f"/robot/{request}", self._service(request))
        self.create_timer(1.0, self._publish_diagnostics)
        self.loop.start()
        self.get_logger().info(
            f"{self.config.name}: {len(self.config.joint_names)} joints at "
            f"{self.config.control_rate_hz:.0f} Hz"
        )

    # -- inputs ---------------------------------------------------------------------------

    def _on_chunk(self, msg: Any) -> None:
        try:
            arrays = convert.joint_trajectory_to_numpy(msg)
        except ValueError as exc:
            self.get_logger().error(f"action chunk rejected: {exc}", throttle_duration_sec=1.0)
            return
        chunk = ActionChunk(
            arrays.positions, arrays.time_from_start_s, arrays.stamp_ns, arrays.joint_names
        )
        result = self.loop.submit_chunk(chunk)
        if not result.accepted:
            self.get_logger().warning(
                f"action chunk rejected: {result.reason}", throttle_duration_sec=1.0
            )

    def _on_teleop(self, msg: Any) -> None:
        names = list(msg.name)
        try:
            order = [names.index(joint) for joint in self.config.joint_names]
            target = np.asarray(msg.position, dtype=np.float64)[order]
        except (ValueError, IndexError):
            target = np.full(len(self.config.joint_names), np.nan)  # counted as rejected
        problem = self.loop.set_teleop_target(target)
        if problem:
            self.get_logger().warning(
                f"teleop target rejected: {problem}", throttle_duration_sec=1.0
            )

    def _service(self, request: str) -> Any:
        def handle(_request: Any, response: Any) -> Any:
            transition = self.loop.request(request)
            response.success, response.message = transition.success, transition.message
            return response

        return handle

    # -- outputs (the loop thread) --------------------------------------------------------

    def _on_tick(self, report: TickReport) -> None:
        mode = report.output.mode.value
        if mode != self._mode:
            self._mode = mode
            self._mode_pub.publish(String(data=mode))
            reason = f" ({report.output.hold_reason})" if report.output.hold_reason else ""
            self.get_logger().info(f"mode {mode}{reason}")
        if report.timing.index % self._every:
            return
        names = self.config.joint_names
        if report.reading is not None:
            self._states.publish(
                convert.numpy_to_joint_state(
                    names,
                    report.reading.positions,
                    report.reading.velocities,
                    report.reading.efforts,
                    report.reading.stamp_ns or report.stamp_ns,
                )
            )
        self._commands.publish(
            convert.numpy_to_joint_state(names, report.output.command, stamp_ns=report.stamp_ns)
        )

    def _on_error(self, message: str) -> None:
        self.get_logger().error(message, throttle_duration_sec=2.0)

    def _publish_diagnostics(self) -> None:
        level, message, values = self.loop.diagnostics()
        self._diagnostics.publish(
            diagnostic_array(
                self, f"driver: {self.config.name}", self.config.name, level, message, values
            )
        )

    def destroy_node(self) -> None:
        self.loop.stop()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node("driver_node", DriverNode, args)


if __name__ == "__main__":
    sys.exit(main())
