"""The rclpy-shaped API every vla_runtime node is written against (DESIGN §2).

    from vla_runtime import ros

    ros.init(args=argv)
    node = ros.Node("talker")
    pub = node.create_publisher(get_message("std_msgs/msg/String"), "chatter", 10)
    ros.spin(node)

On a machine with ROS 2 sourced these names *are* rclpy's (Node, QoSProfile, executors, ...);
elsewhere they come from the embedded zenoh backend, which speaks rmw_zenoh's wire format.
`VLA_RUNTIME_MIDDLEWARE=auto|rclpy|zenoh` chooses. Message classes: `vla_runtime.ros.interfaces`.
"""

from __future__ import annotations

from typing import Any

from vla_runtime.ros.backend import backend_module, backend_name

# Everything the backends export, identical in name and meaning to rclpy's.
__all__ = [
    "Clock",
    "Duration",
    "ExternalShutdownException",
    "Future",
    "DurabilityPolicy",
    "HistoryPolicy",
    "LivelinessPolicy",
    "MultiThreadedExecutor",
    "MutuallyExclusiveCallbackGroup",
    "Node",
    "Parameter",
    "ParameterDescriptor",
    "QoSProfile",
    "ReentrantCallbackGroup",
    "ReliabilityPolicy",
    "SetParametersResult",
    "SingleThreadedExecutor",
    "Time",
    "backend_name",
    "create_node",
    "get_global_executor",
    "init",
    "ok",
    "qos_profile_parameters",
    "qos_profile_sensor_data",
    "qos_profile_services_default",
    "qos_profile_system_default",
    "qos_profile_default",
    "shutdown",
    "spin",
    "spin_once",
    "spin_until_future_complete",
    "try_shutdown",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(backend_module(), name)
    raise AttributeError(f"module 'vla_runtime.ros' has no attribute {name!r}")
