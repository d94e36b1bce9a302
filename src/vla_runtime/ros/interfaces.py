"""Message and service classes for the active backend, by ROS 2 type name.

Node code never imports `sensor_msgs.msg` directly (it does not exist without ROS 2); it asks
here. On rclpy these are the generated rosidl classes; on zenoh they are default-constructible
dataclasses over the rosbags type store, built to behave the same for construction and access.

    from vla_runtime.ros.interfaces import get_message, get_service
    Image = get_message("sensor_msgs/msg/Image")   # "sensor_msgs/Image" also accepted
    Trigger = get_service("std_srvs/srv/Trigger")  # Trigger.Request, Trigger.Response
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from vla_runtime.ros.backend import backend_name


class UnknownTypeError(LookupError):
    """A ROS 2 interface type name that the backend does not know."""


def normalize_type_name(name: str, kind: str = "msg") -> str:
    """Return the canonical 'pkg/kind/Name' form of 'pkg/Name', 'pkg/kind/Name' or 'pkg.kind.Name'.

    Args:
        name: the type name as a user or a config file wrote it.
        kind: 'msg' or 'srv', used when the name has no kind part.
    """
    parts = [p for p in name.replace(".", "/").replace("::", "/").split("/") if p]
    if len(parts) == 2:
        parts = [parts[0], kind, parts[1]]
    if len(parts) != 3 or parts[1] not in ("msg", "srv", "action"):
        raise UnknownTypeError(
            f"{name!r} is not a ROS 2 type name; write it as pkg/{kind}/Name, e.g. "
            + ("std_msgs/msg/String" if kind == "msg" else "std_srvs/srv/Trigger")
        )
    return "/".join(parts)


@cache
def get_message(name: str) -> Any:
    """Return the message class for `name` on the active backend."""
    full = normalize_type_name(name, "msg")
    if backend_name() == "rclpy":
        return _rosidl_class(full)
    from vla_runtime.ros.zenoh import typesupport

    return typesupport.message_class(full)


@cache
def get_service(name: str) -> Any:
    """Return the service class (with `.Request` and `.Response`) for `name`."""
    full = normalize_type_name(name, "srv")
    if backend_name() == "rclpy":
        return _rosidl_class(full)
    from vla_runtime.ros.zenoh import typesupport

    return typesupport.service_class(full)


def type_name_of(msg_or_class: Any) -> str:
    """Return 'pkg/msg/Name' for a message (or service) instance or class of either backend."""
    cls = msg_or_class if isinstance(msg_or_class, type) else type(msg_or_class)
    name = getattr(cls, "__msgtype__", None) or getattr(cls, "__srvtype__", None)
    if name:
        return str(name)
    # rosidl classes: module 'sensor_msgs.msg._image', class 'Image'.
    pkg, kind = cls.__module__.split(".")[:2]
    return f"{pkg}/{kind}/{cls.__name__}"


def _rosidl_class(full: str) -> Any:
    pkg, kind, cls_name = full.split("/")
    try:
        module = importlib.import_module(f"{pkg}.{kind}")
        return getattr(module, cls_name)
    except (ImportError, AttributeError) as exc:
        raise UnknownTypeError(f"{full}: not found in the sourced ROS 2 install ({exc})") from exc
