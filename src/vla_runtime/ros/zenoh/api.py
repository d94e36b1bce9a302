"""The zenoh backend's module-level API: what `vla_runtime.ros` exports, shaped like rclpy."""

from __future__ import annotations

from typing import Any

from vla_runtime.ros.interfaces import get_message
from vla_runtime.ros.zenoh.callback_groups import (
    MutuallyExclusiveCallbackGroup,
    ReentrantCallbackGroup,
)
from vla_runtime.ros.zenoh.context import Context, default_context, install_signal_handlers
from vla_runtime.ros.zenoh.executors import (
    Executor,
    ExternalShutdownException,
    MultiThreadedExecutor,
    SingleThreadedExecutor,
    get_global_executor,
)
from vla_runtime.ros.zenoh.futures import Future, Task
from vla_runtime.ros.zenoh.node import Node
from vla_runtime.ros.zenoh.parameters import Parameter
from vla_runtime.ros.zenoh.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    LivelinessPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_default,
    qos_profile_parameters,
    qos_profile_sensor_data,
    qos_profile_services_default,
    qos_profile_system_default,
)
from vla_runtime.ros.zenoh.time import Clock, Duration, Time

__all__ = [
    "Clock",
    "Duration",
    "DurabilityPolicy",
    "Executor",
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
    "Task",
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


def __getattr__(name: str) -> Any:
    # rcl_interfaces messages, resolved on first use like rclpy's imports of them.
    if name == "ParameterDescriptor":
        return get_message("rcl_interfaces/msg/ParameterDescriptor")
    if name == "SetParametersResult":
        return get_message("rcl_interfaces/msg/SetParametersResult")
    raise AttributeError(name)


def init(
    *,
    args: list[str] | None = None,
    context: Context | None = None,
    domain_id: int | None = None,
    signal_handler_options: Any = None,
) -> None:
    """Open the middleware session (rclpy.init)."""
    context = context or default_context()
    context.init(args, domain_id)
    if signal_handler_options is None or signal_handler_options:
        install_signal_handlers(context)


def ok(*, context: Context | None = None) -> bool:
    return (context or default_context()).ok()


def shutdown(*, context: Context | None = None, uninstall_handlers: bool | None = None) -> None:
    (context or default_context()).shutdown()


def try_shutdown(*, context: Context | None = None) -> None:
    (context or default_context()).try_shutdown()


def create_node(node_name: str, **kwargs: Any) -> Node:
    return Node(node_name, **kwargs)


def _with_executor(node: Node, executor: Executor | None) -> Executor:
    executor = executor or get_global_executor()
    executor.add_node(node)
    return executor


def spin(node: Node, executor: Executor | None = None) -> None:
    executor = _with_executor(node, executor)
    try:
        executor.spin()
    finally:
        executor.remove_node(node)


def spin_once(
    node: Node, *, executor: Executor | None = None, timeout_sec: float | None = None
) -> None:
    executor = _with_executor(node, executor)
    try:
        executor.spin_once(timeout_sec=timeout_sec)
    finally:
        executor.remove_node(node)


def spin_until_future_complete(
    node: Node, future: Future, executor: Executor | None = None, timeout_sec: float | None = None
) -> None:
    executor = _with_executor(node, executor)
    try:
        executor.spin_until_future_complete(future, timeout_sec)
    finally:
        executor.remove_node(node)
