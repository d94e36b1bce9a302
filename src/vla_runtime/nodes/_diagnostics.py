"""One DiagnosticStatus from a core object's (level, message, key-values): shared by nodes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vla_runtime.ros.interfaces import get_message

_ARRAY = get_message("diagnostic_msgs/msg/DiagnosticArray")
_STATUS = get_message("diagnostic_msgs/msg/DiagnosticStatus")
_KEY_VALUE = get_message("diagnostic_msgs/msg/KeyValue")
# Class constants, not literals: rclpy's byte fields are bytes, the zenoh backend's ints.
LEVELS = {"OK": _STATUS.OK, "WARN": _STATUS.WARN, "ERROR": _STATUS.ERROR}


def diagnostic_array(
    node: Any, name: str, hardware_id: str, level: str, message: str, values: Mapping[str, str]
) -> Any:
    """A DiagnosticArray with one status, stamped with the node's clock."""
    array = _ARRAY()
    array.header.stamp = node.get_clock().now().to_msg()
    array.status = [
        _STATUS(
            level=LEVELS[level],
            name=name,
            message=message,
            hardware_id=hardware_id,
            values=[_KEY_VALUE(key=key, value=value) for key, value in values.items()],
        )
    ]
    return array
