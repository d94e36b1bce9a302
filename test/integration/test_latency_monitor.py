"""latency_monitor in a live graph: driver_node on the SO100 emulator, the test process playing
policy and camera. A deliberately slow stage (chunks answering old observations; a camera that
stops) trips the right deadline, the monitor calls /robot/hold and the driver goes to HOLD soon
after the breach is detectable, never before; with auto-release configured it comes back."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from graph_helpers import child_env

from vla_runtime import ros
from vla_runtime.ros import convert
from vla_runtime.ros.interfaces import get_message, get_service

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
Trigger = get_service("std_srvs/srv/Trigger")
String = get_message("std_msgs/msg/String")
JointState = get_message("sensor_msgs/msg/JointState")
JointTrajectory = get_message("trajectory_msgs/msg/JointTrajectory")
DiagnosticArray = get_message("diagnostic_msgs/msg/DiagnosticArray")
Image = get_message("sensor_msgs/msg/Image")
JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
# Generous on a loaded 2-core machine (five processes): the monitor checks at 50 Hz and on
# every chunk, the hold is one service call; the rest is scheduling noise.
HOLD_BOUND_S = 1.5


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@dataclass
class Graph:
    processes: list[subprocess.Popen[str]]

    def output(self, index: int) -> str:
        process = self.processes[index]
        process.terminate()
        try:
            out, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
        return out or ""


def _graph(tmp_path: Path, deadlines: dict[str, Any]) -> Iterator[Graph]:
    link = tmp_path / "so100"
    emulator = _start(
        [
            "-m",
            "vla_runtime.drivers.emulators.servo_bus",
            "--protocol",
            "feetech",
            "--ids",
            *"123456",
            "--link",
            str(link),
        ]
    )
    deadline = time.monotonic() + 15
    while not link.exists():
        assert time.monotonic() < deadline, "the emulator never made its pty"
        time.sleep(0.05)
    params = str(ROOT / "config/embodiments/so100.yaml")
    driver = _start(
        [
            "-m",
            "vla_runtime.nodes.driver_node",
            "--ros-args",
            "--params-file",
            params,
            "-p",
            f"driver.port:={link}",
            "-p",
            "driver.packet_timeout_ms:=50.0",
        ]
    )
    rules = tmp_path / "deadlines.yaml"
    rules.write_text(yaml.safe_dump({"deadlines": deadlines}))
    monitor = _start(
        [
            "-m",
            "vla_runtime.nodes.latency_monitor",
            "--ros-args",
            "-p",
            "embodiment:=so100",
            "-p",
            f"deadlines:={rules}",
        ]
    )
    graph = Graph([monitor, driver, emulator])
    yield graph
    for process in graph.processes:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def stale_graph(router: str, tmp_path: Path) -> Iterator[Graph]:
    rule = {"kind": "observation_age", "limit_ms": 250.0, "window_s": 0.5}
    yield from _graph(tmp_path, {"stale_observation": rule})


@pytest.fixture
def camera_graph(router: str, tmp_path: Path) -> Iterator[Graph]:
    rule = {"kind": "camera_gap", "limit_ms": 300.0, "release_after_s": 1.0}
    yield from _graph(tmp_path, {"camera_gap": rule})


class Operator:
    """The test's node: policy (chunks), camera (frames), watcher of mode and diagnostics."""

    def __init__(self) -> None:
        self.node = ros.Node("operator")
        self.modes: list[tuple[float, str]] = []
        self.statuses: dict[str, Any] = {}
        self.commands: list[np.ndarray] = []
        self.lock = threading.Lock()
        latched = ros.QoSProfile(depth=1, durability=ros.DurabilityPolicy.TRANSIENT_LOCAL)
        sensor = ros.qos_profile_sensor_data
        self.node.create_subscription(String, "/robot/mode", self._on_mode, latched)
        self.node.create_subscription(JointState, "/robot/joint_commands", self._on_cmd, sensor)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.chunks = self.node.create_publisher(JointTrajectory, "/policy/action_chunk", 10)
        self.camera = self.node.create_publisher(Image, "/cameras/third_person/image_raw", sensor)
        self.engage = self.node.create_client(Trigger, "/robot/engage_policy")
        self.executor = ros.SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while ros.ok():
            self.executor.spin_once(timeout_sec=0.02)

    def _on_mode(self, msg: Any) -> None:
        with self.lock:
            self.modes.append((time.monotonic(), str(msg.data)))

    def _on_cmd(self, msg: Any) -> None:
        with self.lock:
            self.commands.append(convert.joint_state_to_numpy(msg).position_rad.copy())

    def _on_diag(self, msg: Any) -> None:
        with self.lock:
            for status in msg.status:
                self.statuses[str(status.name)] = status

    @property
    def mode(self) -> str:
        with self.lock:
            return self.modes[-1][1] if self.modes else ""

    def mode_since(self, mode: str, after: float) -> float | None:
        with self.lock:
            return next((t for t, m in self.modes if m == mode and t >= after), None)

    def wait(self, predicate: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.01)

    def status(self, name: str) -> Any:
        with self.lock:
            return self.statuses.get(name)

    def values(self, name: str) -> dict[str, str]:
        status = self.status(name)
        return {kv.key: kv.value for kv in status.values} if status is not None else {}


class Stream:
    """Calls `send()` at `rate_hz` on a thread until stopped."""

    def __init__(self, send: Any, rate_hz: float) -> None:
        self._send, self._period = send, 1.0 / rate_hz
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._send()
            except Exception:  # the test ended (and shut the session down) first
                return
            self._stop.wait(self._period)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Policy:
    """Chunks holding the arm's pose; `age_s` is how old the observation they answer is."""

    def __init__(self, op: Operator, pose: np.ndarray) -> None:
        self.op, self.pose, self.age_s = op, pose, 0.02
        self.first_old_at: float | None = None

    def send(self) -> None:
        age_s = self.age_s
        msg = convert.numpy_to_joint_trajectory(
            JOINTS,
            np.tile(self.pose, (30, 1)),
            np.arange(30) / 30.0,
            stamp_ns=time.time_ns() - round(age_s * 1e9),
        )
        self.op.chunks.publish(msg)
        if age_s > 0.25 and self.first_old_at is None:
            self.first_old_at = time.monotonic()


def _engage(op: Operator) -> tuple[Policy, Stream]:
    op.wait(lambda: op.mode == "IDLE" and len(op.commands) > 10, 30.0, "the driver to start")
    op.wait(lambda: op.status("latency_monitor/clock") is not None, 20.0, "the monitor")
    policy = Policy(op, op.commands[-1])
    stream = Stream(policy.send, 20.0)
    time.sleep(0.3)
    assert op.engage.wait_for_service(timeout_sec=10.0)
    response = op.engage.call(Trigger.Request(), timeout_sec=10.0)
    assert response is not None and response.success, response
    op.wait(lambda: op.mode == "POLICY", 5.0, "POLICY")
    return policy, stream


def test_old_observations_trip_the_deadline_and_hold_the_arm(
    ros_context: None, stale_graph: Graph
) -> None:
    op = Operator()
    policy, stream = _engage(op)
    time.sleep(1.0)  # fresh chunks: no breach
    assert op.mode == "POLICY"
    name = "latency_monitor/deadline/stale_observation"
    op.wait(lambda: op.status(name) is not None, 5.0, "the deadline status")
    assert op.values(name)["state"] == "ok"

    policy.age_s = 0.45  # the policy falls behind: its chunks answer 450 ms old observations
    op.wait(lambda: op.mode == "HOLD", 10.0, "HOLD")
    assert policy.first_old_at is not None
    held_at = op.mode_since("HOLD", policy.first_old_at)
    assert held_at is not None, "HOLD came before the breach was detectable"
    assert held_at - policy.first_old_at < HOLD_BOUND_S
    print(f"HOLD {1e3 * (held_at - policy.first_old_at):.0f} ms after the first old chunk")

    op.wait(lambda: op.values(name).get("state") == "breached", 5.0, "the breached status")
    status = op.status(name)
    assert status.message.startswith("breached: stale_observation: ")
    assert "ms old (limit 250 ms)" in status.message
    stages = op.values("latency_monitor/stage/chunk_age")
    assert set(stages) == {"p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "count", "rate_hz"}
    assert int(stages["count"]) > 0 and float(stages["max_ms"]) > 400.0
    # The chain's last hop: the driver reports which chunk it applies since when (1 Hz).
    reaction = "latency_monitor/stage/reaction"
    op.wait(lambda: int(op.values(reaction).get("count", 0)) > 0, 5.0, "a reaction sample")
    assert 0.0 < float(op.values(reaction)["p50_ms"]) < 1000.0
    # No auto-release configured: the arm stays held although chunks are fresh again.
    policy.age_s = 0.02
    time.sleep(2.0)
    assert op.mode == "HOLD"
    stream.stop()
    log = stale_graph.output(0)
    assert log.count("deadline hold: stale_observation") == 1, log  # once per breach


def test_a_silent_camera_holds_the_arm_and_auto_release_resumes(
    ros_context: None, camera_graph: Graph
) -> None:
    op = Operator()
    frame = np.zeros((8, 8, 3), dtype=np.uint8)
    last_frame = [0.0]

    def send_frame() -> None:
        op.camera.publish(convert.numpy_to_image(frame, "rgb8", stamp_ns=time.time_ns()))
        last_frame[0] = time.monotonic()

    camera = Stream(send_frame, 30.0)
    _, stream = _engage(op)
    time.sleep(1.0)
    assert op.mode == "POLICY"
    gap = op.values("latency_monitor/stage/camera_gap/third_person")
    assert int(gap["count"]) > 0 and float(gap["p50_ms"]) < 300.0

    camera.stop()  # the camera goes silent
    stopped = last_frame[0]
    op.wait(lambda: op.mode == "HOLD", 10.0, "HOLD")
    held_at = op.mode_since("HOLD", stopped)
    assert held_at is not None
    assert held_at - stopped >= 0.3, "HOLD before the gap reached its limit"
    assert held_at - stopped < 0.3 + HOLD_BOUND_S
    print(f"HOLD {1e3 * (held_at - stopped - 0.3):.0f} ms after the gap reached its limit")
    name = "latency_monitor/deadline/camera_gap"
    op.wait(lambda: op.values(name).get("state") == "breached", 5.0, "the breached status")
    assert "'third_person'" in op.status(name).message

    camera = Stream(send_frame, 30.0)  # back: clear for release_after_s -> released
    resumed = time.monotonic()
    op.wait(lambda: op.mode_since("POLICY", held_at) is not None, 10.0, "POLICY again")
    released_at = op.mode_since("POLICY", held_at)
    assert released_at is not None and released_at - resumed >= 1.0  # the hysteresis held
    op.wait(lambda: op.values(name).get("state") == "released", 5.0, "the released status")
    camera.stop()
    stream.stop()
    log = camera_graph.output(0)
    assert "deadline hold: camera_gap" in log and "deadline release: camera_gap" in log, log
