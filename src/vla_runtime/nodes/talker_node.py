"""`talker_node`: publishes std_msgs/String on `chatter` at `rate_hz` (demo graph, smoke tests)."""

from __future__ import annotations

import sys

from vla_runtime import ros
from vla_runtime.nodes._runner import run_node
from vla_runtime.ros.interfaces import get_message


class TalkerNode(ros.Node):
    def __init__(self) -> None:
        super().__init__("talker")
        descriptor = ros.ParameterDescriptor
        self.declare_parameter(
            "rate_hz", 2.0, descriptor(description="publish rate [Hz]", read_only=True)
        )
        self.declare_parameter(
            "message", "hello", descriptor(description="text before the counter")
        )
        self._string = get_message("std_msgs/msg/String")
        self._publisher = self.create_publisher(self._string, "chatter", 10)
        self._count = 0
        rate_hz = self.get_parameter("rate_hz").value
        self.create_timer(1.0 / rate_hz, self._tick)
        self.get_logger().info(f"publishing on {self._publisher.topic_name} at {rate_hz} Hz")

    def _tick(self) -> None:
        self._count += 1
        text = f"{self.get_parameter('message').value} {self._count}"
        self._publisher.publish(self._string(data=text))
        self.get_logger().info(f"sent: {text}")


def main(args: list[str] | None = None) -> int:
    return run_node("talker_node", TalkerNode, args)


if __name__ == "__main__":
    sys.exit(main())
