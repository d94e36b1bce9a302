"""Fixtures for multi-process graphs: a private Zenoh router per test module, on loopback."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from graph_helpers import Child, start_router, stop

from vla_runtime import ros


@pytest.fixture(scope="module")
def router() -> Iterator[str]:
    """A router on a free loopback port; nodes (this process and children) connect to it."""
    process, endpoint = start_router()
    previous = os.environ.get("VLA_RUNTIME_ROUTER")
    os.environ["VLA_RUNTIME_ROUTER"] = endpoint
    try:
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=5)
        if previous is None:
            os.environ.pop("VLA_RUNTIME_ROUTER", None)
        else:
            os.environ["VLA_RUNTIME_ROUTER"] = previous


@pytest.fixture
def ros_context(router: str) -> Iterator[None]:
    """This test process as a ROS participant (init/shutdown around the test)."""
    ros.init(args=[])
    try:
        yield
    finally:
        ros.try_shutdown()


@pytest.fixture
def spawn(router: str) -> Iterator[type[Child]]:
    children: list[Child] = []

    class Tracked(Child):
        def __init__(self, code: str, *args: str) -> None:
            super().__init__(code, *args)
            children.append(self)

    yield Tracked
    for child in children:
        if child.process.poll() is None:
            child.stop()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts (append them): stopped last-started first, output printed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in reversed(started):
        output = stop(process)
        print(f"--- {' '.join(map(str, process.args[1:3]))}:\n{output}")  # shown on failure
