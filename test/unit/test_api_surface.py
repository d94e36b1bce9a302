"""`vla_runtime.ros` promises rclpy's names; the zenoh backend must provide every one of them."""

from __future__ import annotations

import importlib

from vla_runtime import ros


def test_zenoh_backend_exports_the_whole_api() -> None:
    api = importlib.import_module("vla_runtime.ros.zenoh.api")
    missing = [name for name in ros.__all__ if name != "backend_name" and not hasattr(api, name)]
    assert missing == []


def test_names_resolve_through_the_package() -> None:
    assert ros.backend_name() == "zenoh"
    node_class = ros.Node
    assert node_class.__name__ == "Node"
    assert ros.QoSProfile(depth=3).depth == 3
    assert ros.ParameterDescriptor(read_only=True).read_only is True
