"""Helpers for multi-process graph tests: loopback ports, child node processes.

Processes: `start_process(*args)` runs `python *args` (a node, an emulator) with its output
captured; `stop(process)` ends it (terminate, then kill) and returns that output; the
`processes` fixture (conftest.py) stops the ones a test started and prints their output, which
pytest shows when the test fails."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SRC = str(REPO / "src")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Child:
    """A Python snippet run as a separate node process."""

    def __init__(self, code: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), *args],
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_for_line(self, needle: str, timeout_s: float = 10.0) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout_s
        seen = []
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            seen.append(line)
            if needle in line:
                return line
        raise AssertionError(f"child never printed {needle!r}; output:\n{''.join(seen)}")

    def stop(self) -> str:
        self.process.terminate()
        try:
            out, _ = self.process.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        return out or ""


def start_process(*args: str) -> subprocess.Popen[str]:
    """`python *args` with this checkout on its path, stdout and stderr captured together."""
    return subprocess.Popen(
        [sys.executable, *args],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(process: subprocess.Popen[str], timeout_s: float = 15.0) -> str:
    """Terminate `process` if it still runs (kill after `timeout_s`); its output so far."""
    if process.poll() is None:
        process.terminate()
    try:
        out, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    except ValueError:  # already communicated: its output was read then
        out = ""
    return out or ""


def wait_for_path(path: Path, timeout_s: float = 15.0) -> None:
    """Until `path` exists (an emulator's pty link)."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def spin_in_background(node: Any, period_s: float = 0.05) -> threading.Thread:
    """Spin `node` with its own single-threaded executor on a daemon thread until shutdown."""
    from vla_runtime import ros

    executor = ros.SingleThreadedExecutor()
    executor.add_node(node)

    def spin() -> None:
        while ros.ok():
            executor.spin_once(timeout_sec=period_s)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    return thread


def teleop_node(port: str, *extra: str) -> subprocess.Popen[str]:
    """teleop_node following an SO100 leader on `port` (the SO100 follower's limits)."""
    return start_process(
        "-m",
        "vla_runtime.nodes.teleop_node",
        "--ros-args",
        "--params-file",
        str(REPO / "config/embodiments/so100.yaml"),
        "--params-file",
        str(REPO / "config/embodiments/so100_leader.yaml"),
        "-p",
        f"leader.driver.port:={port}",
        "-p",
        "leader.driver.packet_timeout_ms:=50.0",  # answers come from a thread of the test
        *extra,
    )


def start_router() -> tuple[subprocess.Popen[bytes], str]:
    """A Zenoh router (`vla-runtime router`) on a free loopback port, accepting connections,
    and its endpoint. Its output is discarded."""
    port = free_port()
    endpoint = f"tcp/127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "vla_runtime.cli", "router", "--listen", endpoint],
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
    except BaseException:
        process.kill()
        raise
    return process, endpoint
