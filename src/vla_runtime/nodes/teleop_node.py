"""`teleop_node`: a leader arm (or a keyboard) read at a fixed rate → /teleop/joint_targets.

    teleop_node --ros-args --params-file config/embodiments/so100.yaml \
        --params-file config/embodiments/so100_leader.yaml

The follower's parameter file gives `embodiment` and `joint_names` (the targets carry the
follower's names); the teleop file gives `source`, `rate_hz` and `leader.*` / `keyboard.*`
(see drivers/teleop/). Targets go out as sensor_msgs/JointState with sensor-data QoS,
`header.stamp` = read time; driver_node checks them against its limits and owns the handover
(/robot/engage_teleop). /diagnostics at 1 Hz. A missing leader is one error line naming the
port, then retries with backoff: the node keeps running.
"""

from __future__ import annotations

import sys

from vla_runtime import ros
from vla_runtime.drivers.teleop import (
    TeleopConfig,
    TeleopConfigError,
    TeleopLoop,
    TeleopReading,
    build_teleop_source,
)
from vla_runtime.nodes._diagnostics import diagnostic_array
from vla_runtime.nodes._runner import EXIT_CONFIG_ERROR, run_node
from vla_runtime.ros import convert
from vla_runtime.ros.interfaces import get_message

JointState = get_message("sensor_msgs/msg/JointState")
DiagnosticArray = get_message("diagnostic_msgs/msg/DiagnosticArray")
# Class constants, not literals: rclpy's byte fields are bytes, the zenoh backend's ints.


class TeleopNode(ros.Node):
    def __init__(self) -> None:
        super().__init__("teleop", automatically_declare_parameters_from_overrides=True)
        parameters = {name: p.value for name, p in self.get_parameters_by_prefix("").items()}
        self.config = TeleopConfig.from_parameters(parameters)
        source = build_teleop_source(self.config, parameters)
        self._targets = self.create_publisher(
            JointState, "/teleop/joint_targets", ros.qos_profile_sensor_data
        )
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._announce = True  # log the first reading after start or after an error
        self.loop = TeleopLoop(source, self.config.rate_hz, self._on_reading, self._on_error)
        self.create_timer(1.0, self._publish_diagnostics)
        for warning in source.warnings:
            self.get_logger().warning(warning)
        if source.instructions:
            self.get_logger().info(source.instructions)
        self.loop.start()

    def _on_reading(self, reading: TeleopReading) -> None:
        self._targets.publish(
            convert.numpy_to_joint_state(
                self.config.joint_names, reading.positions, stamp_ns=reading.stamp_ns
            )
        )
        if self._announce:
            self._announce = False
            self.get_logger().info(
                f"{self.config.source}: publishing {self.config.embodiment} targets at "
                f"{self.config.rate_hz:.0f} Hz"
            )

    def _on_error(self, message: str) -> None:
        self._announce = True
        self.get_logger().error(f"{self.config.source}: {message}", throttle_duration_sec=1.0)

    def _publish_diagnostics(self) -> None:
        level, message, values = self.loop.diagnostics()
        self._diagnostics.publish(
            diagnostic_array(
                self,
                f"teleop: {self.config.source}",
                self.config.embodiment,
                level,
                message,
                values,
            )
        )

    def destroy_node(self) -> None:
        self.loop.stop()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    try:
        return run_node("teleop_node", TeleopNode, args)
    except TeleopConfigError as exc:  # run_node has already shut the middleware down
        print(f"teleop_node: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR


if __name__ == "__main__":
    sys.exit(main())
