"""latency_monitor in a live graph: driver_node on the SO100 emulator, the test process playing
policy and camera. Each deadline kind is provoked for real: chunks answering old observations,
a camera that stops, a policy whose reported inference time grows, a driver that is descheduled
(its loop overruns), a critical node that leaves the graph. Each trips its rule, the monitor
calls /robot/hold once and says why, and the driver goes to HOLD soon after the breach is
detectable, never before; with auto-release configured it comes back."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from graph_helpers import spin_in_background, start_process, stop, wait_for_path

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
DiagnosticStatus = get_message("diagnostic_msgs/msg/DiagnosticStatus")
KeyValue = get_message("diagnostic_msgs/msg/KeyValue")
Image = get_message("sensor_msgs/msg/Image")
JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
# Generous on a loaded 2-core machine (five processes): the monitor checks on every chunk and
# status, at the moment a time-driven condition becomes true, and at 50 Hz; the hold is one
# service call; the rest is scheduling noise.
HOLD_BOUND_S = 1.5
# The issue's target is one control period (5 ms at the SO100's 200 Hz) plus the hold call's
# round trip. Measured here: see the printed values; asserted with room for a loaded machine.
CONTROL_PERIOD_S = 1 / 200
HOLD_AFTER_LIMIT_S = CONTROL_PERIOD_S + 0.5


@dataclass
class Graph:
    processes: list[subprocess.Popen[str]]  # monitor, driver, emulator

    def output(self, index: int) -> str:
        return stop(self.processes[index])


def _graph(tmp_path: Path, deadlines: dict[str, Any], *driver_args: str) -> Iterator[Graph]:
    link = tmp_path / "so100"
    emulator = start_process(
        "-m",
        "vla_runtime.drivers.emulators.servo_bus",
        "--protocol",
        "feetech",
        "--ids",
        *"123456",
        "--link",
        str(link),
    )
    wait_for_path(link)
    params = str(ROOT / "config/embodiments/so100.yaml")
    driver = start_process(
        "-m",
        "vla_runtime.nodes.driver_node",
        "--ros-args",
        "--params-file",
        params,
        "-p",
        f"driver.port:={link}",
        "-p",
        "driver.packet_timeout_ms:=50.0",
        *driver_args,
    )
    rules = tmp_path / "deadlines.yaml"
    rules.write_text(yaml.safe_dump({"deadlines": deadlines}))
    monitor = start_process(
        "-m",
        "vla_runtime.nodes.latency_monitor",
        "--ros-args",
        "-p",
        "embodiment:=so100",
        "-p",
        f"deadlines:={rules}",
    )
    graph = Graph([monitor, driver, emulator])
    yield graph
    for process in graph.processes:
        stop(process)


@pytest.fixture
def stale_graph(router: str, tmp_path: Path) -> Iterator[Graph]:
    rule = {"kind": "observation_age", "limit_ms": 250.0, "window_s": 0.5}
    yield from _graph(tmp_path, {"stale_observation": rule})


@pytest.fixture
def camera_graph(router: str, tmp_path: Path) -> Iterator[Graph]:
    rule = {"kind": "camera_gap", "limit_ms": 300.0, "release_after_s": 1.0}
    yield from _graph(tmp_path, {"camera_gap": rule})


@pytest.fixture
def policy_graph(router: str, tmp_path: Path) -> Iterator[Graph]:
    rule = {
        "kind": "policy_latency",
        "limit_ms": 500.0,
        "percentile": 99.0,
        "window_s": 3.0,
        "min_samples": 5,
    }
    yield from _graph(tmp_path, {"policy_p99": rule})


@pytest.fixture
def overrun_graph(router: str, tmp_path: Path) -> Iterator[Graph]:
    # 30 % of the ticks: far above what scheduling noise on a loaded machine causes at 200 Hz,
    # far below what a descheduled driver (below) does.
    rule = {"kind": "driver_overrun_rate", "limit_fraction": 0.3, "window_s": 2.0}
    yield from _graph(tmp_path, {"driver_overruns": rule})


@pytest.fixture
def liveliness_graph(router: str, tmp_path: Path) -> Iterator[Graph]:
    rule = {"kind": "liveliness", "nodes": ["camera_node"], "limit_s": 0.5}
    yield from _graph(tmp_path, {"camera_alive": rule})


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
        self.diagnostics = self.node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.engage = self.node.create_client(Trigger, "/robot/engage_policy")
        self.thread = spin_in_background(self.node, 0.02)

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
    # Checked the moment the gap passes its limit (a one-shot timer), not at the next periodic
    # check: HOLD follows within the hold call's round trip and a control period.
    after_limit_s = held_at - stopped - 0.3
    print(f"HOLD {1e3 * after_limit_s:.1f} ms after the gap reached its limit")
    assert after_limit_s < HOLD_AFTER_LIMIT_S
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


def _policy_status(inferences: int, total_ms: float) -> Any:
    """The policy node's /diagnostics row, as far as the monitor reads it (its trace)."""
    values = {"inferences": str(inferences), "total_ms": f"{total_ms:.1f}"}
    status = DiagnosticStatus(
        name="policy",
        message="running",
        hardware_id="policy",
        values=[KeyValue(key=key, value=value) for key, value in values.items()],
    )
    array = DiagnosticArray()
    array.status = [status]
    return array


def test_a_slow_policy_trips_its_percentile_and_holds_the_arm(
    ros_context: None, policy_graph: Graph
) -> None:
    """The rule judges the policy's own trace (total_ms per inference, from its /diagnostics):
    this stand-in policy reports one inference per status, fast, then slower than the limit."""
    op = Operator()
    _, stream = _engage(op)
    total_ms = [120.0]
    inferences = [0]
    first_slow_at: list[float] = []

    def report() -> None:
        inferences[0] += 1
        op.diagnostics.publish(_policy_status(inferences[0], total_ms[0]))
        if total_ms[0] > 500.0 and not first_slow_at:
            first_slow_at.append(time.monotonic())

    reporter = Stream(report, 10.0)
    name = "latency_monitor/deadline/policy_p99"
    stage = "latency_monitor/stage/policy_total"
    op.wait(lambda: int(op.values(stage).get("count", 0)) >= 5, 10.0, "fast policy samples")
    assert op.mode == "POLICY"
    assert op.values(name).get("state") == "ok", op.values(name)
    assert float(op.values(name)["value"]) < 500.0

    total_ms[0] = 800.0  # inference slows down: the window's p99 is now over the limit
    op.wait(lambda: op.mode == "HOLD", 10.0, "HOLD")
    assert first_slow_at
    held_at = op.mode_since("HOLD", first_slow_at[0])
    assert held_at is not None, "HOLD came before the first slow inference was reported"
    assert held_at - first_slow_at[0] < HOLD_BOUND_S
    print(f"HOLD {1e3 * (held_at - first_slow_at[0]):.0f} ms after the first slow inference")
    op.wait(lambda: op.values(name).get("state") == "breached", 5.0, "the breached status")
    message = op.status(name).message
    assert message == "breached: policy_p99: policy p99 800 ms over 3 s (limit 500 ms)", message
    reporter.stop()
    stream.stop()
    time.sleep(1.0)  # still slow in the window, no auto-release: held, no second call
    assert op.mode == "HOLD"
    log = policy_graph.output(0)
    assert log.count("deadline hold: policy_p99") == 1, log
    assert "mode HOLD (operator)" in policy_graph.output(1)  # the monitor's call, not a fault


def test_a_descheduled_driver_overruns_its_loop_and_the_monitor_holds_it(
    ros_context: None, overrun_graph: Graph
) -> None:
    """No fake counters: the driver process is stopped for 30 of every 40 ms (what a starved
    CPU does to it), so its 200 Hz loop misses deadlines and counts them in its diagnostics."""
    op = Operator()
    _, stream = _engage(op)
    name = "latency_monitor/deadline/driver_overruns"
    # The driver's 1 Hz counters reached the monitor (a value, not NaN) and are under the limit.
    op.wait(lambda: op.values(name).get("value", "nan") != "nan", 10.0, "overrun counters")
    assert op.values(name)["state"] == "ok" and op.mode == "POLICY", op.values(name)

    driver = overrun_graph.processes[1]
    load_from = time.monotonic()
    try:
        while op.mode != "HOLD":
            assert time.monotonic() - load_from < 20.0, f"no HOLD: {op.values(name)}"
            os.kill(driver.pid, signal.SIGSTOP)
            time.sleep(0.03)
            os.kill(driver.pid, signal.SIGCONT)
            time.sleep(0.01)
    finally:
        os.kill(driver.pid, signal.SIGCONT)
    held_at = op.mode_since("HOLD", load_from)
    assert held_at is not None
    print(f"HOLD {1e3 * (held_at - load_from):.0f} ms after the driver was first descheduled")
    op.wait(lambda: op.values(name).get("state") == "breached", 5.0, "the breached status")
    message = op.status(name).message
    assert message.startswith("breached: driver_overruns: driver overran "), message
    assert message.endswith("of its ticks over 2 s (limit 30.0%)"), message
    # the overrun rate at the breach, from its reason: `value` is the current window's rate,
    # which falls again once the driver runs freely (the load stops at HOLD)
    overran = message.removeprefix("breached: driver_overruns: driver overran ").split("%")[0]
    assert float(overran) > 30.0, message
    stream.stop()
    log = overrun_graph.output(0)
    assert log.count("deadline hold: driver_overruns") == 1, log
    assert "mode HOLD (operator)" in overrun_graph.output(1)


CAMERA_NODE = """
from vla_runtime import ros
ros.init(args=[])
node = ros.Node("camera_node")
print("ready", flush=True)
ros.spin(node)
"""


def test_a_critical_node_leaving_the_graph_holds_the_arm(
    ros_context: None, liveliness_graph: Graph, spawn: Any
) -> None:
    op = Operator()
    camera_node = spawn(CAMERA_NODE)
    camera_node.wait_for_line("ready", 30.0)
    _, stream = _engage(op)
    name = "latency_monitor/deadline/camera_alive"
    # Seen by the monitor (a value, not NaN: only nodes seen once can be lost), alive.
    op.wait(lambda: op.values(name).get("value", "nan") != "nan", 10.0, "the node seen")
    time.sleep(1.0)
    assert op.values(name)["state"] == "ok" and op.mode == "POLICY", op.values(name)

    camera_node.process.kill()  # gone without a goodbye: the router drops its session
    killed_at = time.monotonic()
    camera_node.process.wait(timeout=10)
    op.wait(lambda: op.mode == "HOLD", 15.0, "HOLD")
    held_at = op.mode_since("HOLD", killed_at)
    assert held_at is not None, "HOLD came before the node left"
    print(f"HOLD {1e3 * (held_at - killed_at):.0f} ms after the node was killed (limit 500 ms)")
    op.wait(lambda: op.values(name).get("state") == "breached", 5.0, "the breached status")
    message = op.status(name).message
    assert message.startswith("breached: camera_alive: node 'camera_node' gone from the graph")
    assert message.endswith("(limit 0.5 s)"), message
    stream.stop()
    log = liveliness_graph.output(0)
    assert log.count("deadline hold: camera_alive") == 1, log
    assert "mode HOLD (operator)" in liveliness_graph.output(1)
