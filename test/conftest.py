"""Test tiers (see test/README.md): unit (no sockets), integration (loopback graphs over the
zenoh backend), hardware (deselected unless `-m hardware`), ros (need rclpy; skipped without)."""

from __future__ import annotations

import importlib.util
import os

import pytest

# Tests exercise the embedded backend unless a test says otherwise; children inherit this.
os.environ.setdefault("VLA_RUNTIME_MIDDLEWARE", "zenoh")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    markexpr = config.getoption("-m") or ""
    have_rclpy = importlib.util.find_spec("rclpy") is not None
    for item in items:
        if "hardware" in item.keywords and "hardware" not in markexpr:
            item.add_marker(pytest.mark.skip(reason="hardware test: run with -m hardware"))
        if "ros" in item.keywords and not have_rclpy:
            item.add_marker(pytest.mark.skip(reason="needs a ROS 2 install (rclpy)"))
