"""driver_node against the SO100 servo-bus emulator, each in its own process, over the zenoh
backend: follow a chunk, hand over teleop → policy → teleop without a step above the limit,
HOLD when chunks stop (local watchdog), recover on release."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from graph_helpers import child_env

from vla_runtime import ros
from vla_runtime.ros import convert
from vla_runtime.ros.interfaces import get_message, get_service

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
RATE_HZ = 200.0
# URDF velocity limit 4.71 rad/s x velocity_scale 0.6 x one 5 ms period, plus rounding.
MAX_STEP = 4.71 * 0.6 / RATE_HZ + 1e-6
Trigger = get_service("std_srvs/srv/Trigger")
String = get_message("std_msgs/msg/String")
JointState = get_message("sensor_msgs/msg/JointState")
JointTrajectory = get_message("trajectory_msgs/msg/JointTrajectory")


@pytest.fixture
def so100_driver(router: str, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    link = tmp_path / "so100_follower"
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vla_runtime.drivers.emulators.servo_bus",
            "--protocol",
            "feetech",
            "--ids",
            "1",
            "2",
            "3",
            "4",
            "5",
            "6",
            "--link",
            str(link),
        ],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 10
    while not link.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vla_runtime.nodes.driver_node",
            "--ros-args",
            "--params-file",
            str(ROOT / "config/embodiments/so100.yaml"),
            "-p",
            f"driver.port:={link}",
            "-p",
            "driver.packet_timeout_ms:=50.0",
            "-p",
            f"state_publish_rate_hz:={RATE_HZ}",
        ],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield driver
    for process in (driver, emulator):
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


class Operator:
    """The test's own node: watches the arm, calls the switches, plays policy and leader."""

    def __init__(self) -> None:
        self.node = ros.Node("operator")
        self.mode = ""
        self.commands: list[tuple[int, np.ndarray]] = []
        self.lock = threading.Lock()
        latched = ros.QoSProfile(depth=1, durability=ros.DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(String, "/robot/mode", self._on_mode, latched)
        self.node.create_subscription(
            JointState, "/robot/joint_commands", self._on_command, ros.qos_profile_sensor_data
        )
        self.chunks = self.node.create_publisher(JointTrajectory, "/policy/action_chunk", 10)
        self.teleop = self.node.create_publisher(
            JointState, "/teleop/joint_targets", ros.qos_profile_sensor_data
        )
        self.clients = {
            name: self.node.create_client(Trigger, f"/robot/{name}")
            for name in ("engage_policy", "engage_teleop", "hold", "release")
        }
        self.executor = ros.SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while ros.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def _on_mode(self, msg: Any) -> None:
        self.mode = msg.data

    def _on_command(self, msg: Any) -> None:
        arrays = convert.joint_state_to_numpy(msg)
        with self.lock:
            self.commands.append((arrays.stamp_ns, arrays.position_rad.copy()))

    def wait(self, predicate: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)

    def call(self, name: str) -> Any:
        client = self.clients[name]
        assert client.wait_for_service(timeout_sec=10.0)
        response = client.call(Trigger.Request(), timeout_sec=10.0)
        assert response is not None
        return response

    def latest(self) -> np.ndarray:
        with self.lock:
            return self.commands[-1][1]

    def send_chunk(self, target: np.ndarray) -> None:
        rows = np.tile(target, (30, 1))
        msg = convert.numpy_to_joint_trajectory(
            JOINTS, rows, np.arange(30) / 30.0, stamp_ns=time.time_ns()
        )
        self.chunks.publish(msg)

    def send_teleop(self, target: np.ndarray) -> None:
        self.teleop.publish(convert.numpy_to_joint_state(JOINTS, target, stamp_ns=time.time_ns()))

    def steps(self) -> np.ndarray:
        """Per-tick command steps, normalised by the ticks between published commands."""
        with self.lock:
            stamps = np.array([stamp for stamp, _ in self.commands], dtype=np.float64)
            values = np.array([value for _, value in self.commands])
        ticks = np.maximum(np.round(np.diff(stamps) / 1e9 * RATE_HZ), 1.0)
        return np.abs(np.diff(values, axis=0)) / ticks[:, None]


class Streamer:
    """Publishes a target at a fixed rate on a thread (a leader arm or a policy)."""

    def __init__(self, send: Any, target: np.ndarray, rate_hz: float) -> None:
        self.target = target
        self._send, self._period = send, 1.0 / rate_hz
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._send(self.target)
            self._stop.wait(self._period)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def test_follow_handover_watchdog_and_release(ros_context: None, so100_driver: Any) -> None:
    op = Operator()
    op.wait(lambda: op.mode == "IDLE" and len(op.commands) > 10, 20.0, "the driver to start")
    start = op.latest()

    # Teleop: the leader is 0.3 rad away on two joints; the follower cross-fades there.
    leader_pose = start + np.array([0.3, -0.3, 0.0, 0.0, 0.0, 0.0])
    leader = Streamer(op.send_teleop, leader_pose, 50.0)
    time.sleep(0.2)
    assert op.call("engage_teleop").success
    op.wait(lambda: np.allclose(op.latest(), leader_pose, atol=1e-3), 5.0, "teleop to arrive")
    assert op.mode == "TELEOP"

    # Policy: chunks 0.1 rad from the leader's pose; engage, follow, hand over without a jump.
    policy_pose = leader_pose + np.array([0.0, 0.0, 0.1, 0.0, 0.0, 0.0])
    policy = Streamer(op.send_chunk, policy_pose, 10.0)
    time.sleep(0.3)
    response = op.call("engage_policy")
    assert response.success, response.message
    op.wait(lambda: np.allclose(op.latest(), policy_pose, atol=1e-3), 5.0, "the policy target")
    assert op.mode == "POLICY"

    # Back to teleop.
    assert op.call("engage_teleop").success
    op.wait(lambda: np.allclose(op.latest(), leader_pose, atol=1e-3), 5.0, "teleop again")

    # Policy again, then the policy stops: the local watchdog holds within the chunk's length.
    assert op.call("engage_policy").success
    op.wait(lambda: op.mode == "POLICY", 2.0, "POLICY")
    policy.stop()
    op.wait(lambda: op.mode == "HOLD", 2.5, "the watchdog HOLD")
    held = op.latest()
    time.sleep(0.3)
    assert np.allclose(op.latest(), held, atol=0.05)  # decelerates and stays

    # The policy comes back; release resumes POLICY.
    policy = Streamer(op.send_chunk, policy_pose, 10.0)
    time.sleep(0.3)
    assert "POLICY" in op.call("release").message
    op.wait(lambda: op.mode == "POLICY", 2.0, "POLICY after release")
    policy.stop()
    leader.stop()

    steps = op.steps()
    assert steps.max() <= MAX_STEP, f"largest per-tick step {steps.max():.4f} > {MAX_STEP:.4f}"


def test_bad_chunks_are_rejected_and_the_arm_holds_still(
    ros_context: None, so100_driver: Any
) -> None:
    op = Operator()
    op.wait(lambda: op.mode == "IDLE" and len(op.commands) > 10, 20.0, "the driver to start")
    start = op.latest()
    bad = [
        np.full(6, np.nan),  # NaN
        start + 10.0,  # far outside the joint limits
    ]
    for target in bad:
        op.send_chunk(target)
    wrong = convert.numpy_to_joint_trajectory(
        ("a", "b", "c"), np.zeros((30, 3)), np.arange(30) / 30.0, stamp_ns=time.time_ns()
    )
    op.chunks.publish(wrong)  # another embodiment's chunk
    stale = convert.numpy_to_joint_trajectory(
        JOINTS, np.tile(start, (30, 1)), np.arange(30) / 30.0, stamp_ns=time.time_ns() - 5 * 10**9
    )
    op.chunks.publish(stale)
    time.sleep(0.5)
    response = op.call("engage_policy")
    assert not response.success and "policy" in response.message
    assert op.mode == "IDLE"
    assert np.allclose(op.latest(), start, atol=1e-9)
    assert so100_driver.poll() is None  # still running
