"""The `main()` every node executable shares: init, build, spin, clean shutdown.

A configuration mistake (bad parameter file, wrong parameter type, malformed --ros-args) ends
the process with one clear line on stderr and exit code 2, never a traceback; Ctrl-C and
SIGTERM end it with exit code 0 after the node is torn down.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from vla_runtime import ros

EXIT_CONFIG_ERROR = 2


def _configuration_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = []
    if ros.backend_name() == "zenoh":
        from vla_runtime.ros.zenoh.arguments import RosArgumentError
        from vla_runtime.ros.zenoh.config import ConfigError
        from vla_runtime.ros.zenoh.parameters import ParameterException

        errors += [RosArgumentError, ConfigError, ParameterException]
    else:  # pragma: no cover - needs a ROS 2 install
        from rclpy.exceptions import ParameterException as RclpyParameterException

        errors.append(RclpyParameterException)
    return tuple(errors)


def run_node(name: str, factory: Callable[[], Any], args: list[str] | None = None) -> int:
    """Run the node `factory()` builds until Ctrl-C/SIGTERM; return the process exit code."""
    errors = _configuration_errors()
    try:
        ros.init(args=args)
    except errors as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    node = None
    try:
        node = factory()
        ros.spin(node)
    except errors as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except (KeyboardInterrupt, ros.ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        ros.try_shutdown()
    return 0
