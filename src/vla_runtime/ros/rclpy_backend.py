"""The rclpy backend: `vla_runtime.ros` names are rclpy's own, so nodes run on any RMW.

Nothing is wrapped: a node written against `vla_runtime.ros` is an rclpy node on a robot. The
only additions paper over differences between Humble and Jazzy.
"""

from __future__ import annotations

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy import (
    create_node,
    get_global_executor,
    init,
    ok,
    shutdown,
    spin,
    spin_once,
    spin_until_future_complete,
    try_shutdown,
)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock
from rclpy.duration import Duration
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    LivelinessPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_parameters,
    qos_profile_sensor_data,
    qos_profile_services_default,
    qos_profile_system_default,
)
from rclpy.task import Future
from rclpy.time import Time

try:  # Jazzy and later
    from rclpy.executors import ExternalShutdownException
except ImportError:  # Humble: spin() simply returns on shutdown, so this is never raised

    class ExternalShutdownException(Exception):  # type: ignore[no-redef]
        """Stand-in for rclpy.executors.ExternalShutdownException on Humble."""


try:
    from rclpy.qos import qos_profile_default
except ImportError:  # Humble
    qos_profile_default = QoSProfile(depth=10)

__all__ = [
    "Clock",
    "Duration",
    "DurabilityPolicy",
    "ExternalShutdownException",
    "Future",
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
    "create_node",
    "get_global_executor",
    "init",
    "ok",
    "qos_profile_default",
    "qos_profile_parameters",
    "qos_profile_sensor_data",
    "qos_profile_services_default",
    "qos_profile_system_default",
    "shutdown",
    "spin",
    "spin_once",
    "spin_until_future_complete",
    "try_shutdown",
]
