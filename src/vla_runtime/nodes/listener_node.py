"""`listener_node`: logs every std_msgs/String on `chatter` (demo graph, smoke tests)."""

from __future__ import annotations

import sys
from typing import Any

from vla_runtime import ros
from vla_runtime.nodes._runner import run_node
from vla_runtime.ros.interfaces import get_message


class ListenerNode(ros.Node):
    def __init__(self) -> None:
        super().__init__("listener")
        self.create_subscription(get_message("std_msgs/msg/String"), "chatter", self._on_msg, 10)

    def _on_msg(self, msg: Any) -> None:
        self.get_logger().info(f"heard: {msg.data}")


def main(args: list[str] | None = None) -> int:
    return run_node("listener_node", ListenerNode, args)


if __name__ == "__main__":
    sys.exit(main())
