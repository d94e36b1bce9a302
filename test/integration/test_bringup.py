"""The bringup graphs run: each `<embodiment>_sim` graph under `vla-runtime launch` reaches
chunks on /policy/action_chunk, a connected driver ticking its loop and the latency monitor's
stage statistics; `vla-runtime demo` writes its report and says where; the help texts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from graph_helpers import child_env, free_port, spin_in_background, stop, wait_port

from vla_runtime import ros
from vla_runtime.launch.graph import load_graph
from vla_runtime.ros.interfaces import get_message

pytest.importorskip("vla_runtime.sim.world", reason="needs mujoco")

pytestmark = pytest.mark.integration

DiagnosticArray = get_message("diagnostic_msgs/msg/DiagnosticArray")
JointTrajectory = get_message("trajectory_msgs/msg/JointTrajectory")
# Six Python processes (torch, MuJoCo) start on a small machine: the policy's first chunk can
# take 15 s when the cores are shared.
READY_TIMEOUT_S = 45.0


class Watcher:
    """This test as a node: the newest status per name on /diagnostics, chunks counted."""

    def __init__(self) -> None:
        self.node = ros.Node("bringup_test")
        self.lock = threading.Lock()
        self.statuses: dict[str, Any] = {}
        self.chunks = 0
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self.node.create_subscription(JointTrajectory, "/policy/action_chunk", self._on_chunk, 10)
        spin_in_background(self.node)

    def _on_diagnostics(self, msg: Any) -> None:
        with self.lock:
            for status in msg.status:
                level = status.level
                level = int.from_bytes(level, "little") if isinstance(level, bytes) else level
                values = {kv.key: kv.value for kv in status.values}
                self.statuses[str(status.name)] = (int(level), values)

    def _on_chunk(self, _msg: Any) -> None:
        with self.lock:
            self.chunks += 1

    def missing(self, embodiment: str) -> list[str]:
        """What the graph has not shown yet."""
        with self.lock:
            driver = self.statuses.get(f"driver: {embodiment}")
            stages = [n for n in self.statuses if n.startswith("latency_monitor/stage/")]
            chunks = self.chunks
        missing = []
        if not chunks:
            missing.append("a chunk on /policy/action_chunk")
        # Connected (ERROR means the bus is not) and ticking; IDLE or a monitor HOLD both run.
        if driver is None or driver[0] >= 2 or int(driver[1].get("ticks", "0")) <= 0:
            missing.append(f"a running driver (status: {driver})")
        if not stages:
            missing.append("latency_monitor/stage/* statuses")
        return missing


def _launch(graph: str, tmp_path: Path, endpoint: str) -> subprocess.Popen[str]:
    spec = load_graph(graph)
    links = {
        argument.name: str(tmp_path / argument.name)
        for argument in spec.arguments
        if argument.name.endswith("_link")
    }
    command = [sys.executable, "-m", "vla_runtime.cli", "launch", graph]
    command += ["--router-listen", endpoint, "--duration", "120"]
    command += [f"{name}:={value}" for name, value in links.items()]
    command += ["camera_width:=160", "camera_height:=120"]
    return subprocess.Popen(
        command, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.parametrize("embodiment", ["so100", "yam_bimanual", "franka"])
def test_sim_graph_reaches_chunks_a_running_driver_and_monitor_statistics(
    embodiment: str, tmp_path: Path
) -> None:
    port = free_port()
    endpoint = f"tcp/127.0.0.1:{port}"
    launcher = _launch(f"{embodiment}_sim", tmp_path, endpoint)
    previous = os.environ.get("VLA_RUNTIME_ROUTER")
    os.environ["VLA_RUNTIME_ROUTER"] = endpoint
    output = ""
    try:
        wait_port(port, timeout_s=15.0)
        ros.init(args=[])
        watcher = Watcher()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while (missing := watcher.missing(embodiment)) and time.monotonic() < deadline:
            assert launcher.poll() is None, "the graph stopped on its own"
            time.sleep(0.2)
        watcher.node.destroy_node()
        launcher.send_signal(signal.SIGINT)  # the operator's Ctrl-C
        output = stop(launcher, timeout_s=15.0)
        assert not missing, f"after {READY_TIMEOUT_S:g} s still no {', '.join(missing)}"
        assert launcher.returncode == 0
        assert "[launch] all processes stopped" in output
    finally:
        ros.try_shutdown()
        output = output or stop(launcher)
        print(output)  # shown when the test fails
        if previous is None:
            os.environ.pop("VLA_RUNTIME_ROUTER", None)
        else:
            os.environ["VLA_RUNTIME_ROUTER"] = previous


def test_demo_runs_the_so100_sim_graph_and_writes_its_report(tmp_path: Path) -> None:
    output = tmp_path / "run"
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vla_runtime.cli",
            "demo",
            "--duration",
            "20",
            "--output",
            str(output),
        ],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    print(result.stdout, result.stderr)
    assert result.returncode == 0
    report = output / "report.html"
    assert f"report: {report.resolve()}" in result.stdout.replace("\n", "")
    assert report.stat().st_size > 10_000 and (output / "run.mcap").stat().st_size > 0
    assert "[launch] all processes stopped" in (output / "launch.log").read_text()
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("result: success: ")
    assert time.monotonic() - started < 60.0  # 20 s, then a bounded shutdown and report


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["demo", "--help"], ["--duration S", "--policy", "--embodiment", "--gui", "--output"]),
        (["launch", "so100_sim", "--show-args"], ["policy (default: tiny_so100)", "bus_link"]),
        (["launch", "franka", "--show-args"], ["exterior_serial", "policy"]),
    ],
)
def test_help_texts(command: list[str], expected: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vla_runtime.cli", *command],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    for text in expected:
        assert text in result.stdout
