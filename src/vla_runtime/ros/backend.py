"""Choose the middleware backend behind `vla_runtime.ros`.

`VLA_RUNTIME_MIDDLEWARE=auto|rclpy|zenoh` (DESIGN §2). `auto` takes rclpy when it imports (a
machine with ROS 2 sourced), otherwise the embedded zenoh backend. The choice is made once per
process, at first use, so every module sees the same classes.
"""

from __future__ import annotations

import importlib
import os
from functools import cache
from types import ModuleType

ENV_VAR = "VLA_RUNTIME_MIDDLEWARE"
BACKENDS = ("rclpy", "zenoh")


class BackendError(RuntimeError):
    """The requested middleware backend cannot be used."""


@cache
def backend_name() -> str:
    """Return the backend this process uses: 'rclpy' or 'zenoh'."""
    wanted = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if wanted not in ("auto", *BACKENDS):
        raise BackendError(
            f"{ENV_VAR}={wanted!r} is not a middleware; use one of: auto, {', '.join(BACKENDS)}"
        )
    if wanted == "auto":
        try:
            importlib.import_module("rclpy")
        except ImportError:
            return "zenoh"
        return "rclpy"
    if wanted == "rclpy":
        try:
            importlib.import_module("rclpy")
        except ImportError as exc:
            raise BackendError(
                f"{ENV_VAR}=rclpy but rclpy does not import ({exc}); source a ROS 2 install "
                "(e.g. `source /opt/ros/jazzy/setup.bash`) or use the zenoh backend"
            ) from exc
    return wanted


@cache
def backend_module() -> ModuleType:
    """Return the module implementing the rclpy-shaped API for the chosen backend."""
    if backend_name() == "rclpy":
        return importlib.import_module("vla_runtime.ros.rclpy_backend")
    return importlib.import_module("vla_runtime.ros.zenoh.api")
