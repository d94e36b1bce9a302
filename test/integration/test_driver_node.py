"""driver_node against each embodiment's device emulator, every one in its own process, over the
zenoh backend (a contract test over the registered embodiments): follow a chunk, hand over
teleop → policy → teleop without a per-tick step above the envelope's limit, HOLD when chunks
stop (local watchdog), recover on release, and reject bad chunks while holding still."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from graph_helpers import spin_in_background, start_process, stop, wait_for_path

from vla_runtime import ros
from vla_runtime.drivers.embodiment import EmbodimentConfig
from vla_runtime.ros import convert
from vla_runtime.ros.interfaces import get_message, get_service
from vla_runtime.ros.zenoh.arguments import load_params_file

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
Trigger = get_service("std_srvs/srv/Trigger")
String = get_message("std_msgs/msg/String")
JointState = get_message("sensor_msgs/msg/JointState")
JointTrajectory = get_message("trajectory_msgs/msg/JointTrajectory")
DAMIAO_MODELS = ["DM4340"] * 3 + ["DM4310"] * 4


@dataclass
class Arm:
    """A running driver_node and what the test needs to know about it."""

    name: str
    process: subprocess.Popen[str]
    joints: tuple[str, ...]
    rate_hz: float
    max_step: np.ndarray  # per joint, one control period


def _emulators(name: str, tmp_path: Path) -> tuple[list[subprocess.Popen[str]], list[str]]:
    """Start the device emulator(s) of `name`; return them and the driver_node overrides."""
    if name == "so100":
        link = tmp_path / "so100"
        process = start_process(
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
        )
        wait_for_path(link)
        return [process], [f"driver.port:={link}", "driver.packet_timeout_ms:=50.0"]
    if name == "yam_bimanual":
        processes, overrides = [], ["driver.interface:=slcan", "driver.feedback_timeout_s:=0.03"]
        for side in ("left", "right"):
            link = tmp_path / f"can_{side}"
            processes.append(
                start_process(
                    "-m",
                    "vla_runtime.drivers.emulators.damiao",
                    "--slcan-link",
                    str(link),
                    "--ids",
                    "1",
                    "2",
                    "3",
                    "4",
                    "5",
                    "6",
                    "7",
                    "--models",
                    *DAMIAO_MODELS,
                    "--positions",
                    "0",
                    "0.5",
                    "0.5",
                    "0",
                    "0",
                    "0",
                    "0",
                )
            )
            wait_for_path(link)
            overrides.append(f"driver.{side}.channel:={link}")
        # Two arms over SLCAN ptys cost ~4 ms a tick here, more on a loaded 2-core machine
        # (the real CAN bus is far faster): run this emulator path at 50 Hz.
        return processes, [*overrides, "control_rate_hz:=50.0", "state_publish_rate_hz:=50.0"]
    assert name == "franka"
    process = start_process("-m", "vla_runtime.drivers.emulators.franka_ros2")
    return [process], []


@pytest.fixture(params=["so100", "yam_bimanual", "franka"])
def arm(request: pytest.FixtureRequest, router: str, tmp_path: Path) -> Iterator[Arm]:
    name = request.param
    emulators, overrides = _emulators(name, tmp_path)
    params_file = ROOT / f"config/embodiments/{name}.yaml"
    parameters = load_params_file(str(params_file), "/driver")
    rate_hz = float(parameters["control_rate_hz"])
    for override in overrides:
        key, _, value = override.partition(":=")
        if key == "control_rate_hz":
            rate_hz = float(value)
    parameters["control_rate_hz"] = parameters["state_publish_rate_hz"] = rate_hz
    config = EmbodimentConfig.from_parameters(parameters)
    args = ["-m", "vla_runtime.nodes.driver_node", "--ros-args", "--params-file", str(params_file)]
    for override in [*overrides, f"state_publish_rate_hz:={rate_hz}"]:
        args += ["-p", override]
    driver = start_process(*args)
    yield Arm(
        name,
        driver,
        config.joint_names,
        rate_hz,
        config.envelope_limits().max_velocity / rate_hz + 1e-6,
    )
    for process in (driver, *emulators):
        stop(process)


class Operator:
    """The test's own node: watches the arm, calls the switches, plays policy and leader."""

    def __init__(self, arm: Arm) -> None:
        self.arm = arm
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
        self.thread = spin_in_background(self.node)

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
            self.arm.joints, rows, np.arange(30) / 30.0, stamp_ns=time.time_ns()
        )
        self.chunks.publish(msg)

    def send_teleop(self, target: np.ndarray) -> None:
        self.teleop.publish(
            convert.numpy_to_joint_state(self.arm.joints, target, stamp_ns=time.time_ns())
        )

    def steps(self) -> np.ndarray:
        """Per-tick command steps, normalised by the ticks between published commands."""
        with self.lock:
            stamps = np.array([stamp for stamp, _ in self.commands], dtype=np.float64)
            values = np.array([value for _, value in self.commands])
        ticks = np.maximum(np.round(np.diff(stamps) / 1e9 * self.arm.rate_hz), 1.0)
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


def offsets(arm: Arm, first: float, second: float, third: float = 0.0) -> np.ndarray:
    delta = np.zeros(len(arm.joints))
    delta[:3] = [first, second, third]
    return delta


def test_follow_handover_watchdog_and_release(ros_context: None, arm: Arm) -> None:
    op = Operator(arm)
    op.wait(lambda: op.mode == "IDLE" and len(op.commands) > 10, 30.0, "the driver to start")
    start = op.latest()

    # Teleop: the leader is 0.2 rad away on two joints; the follower cross-fades there.
    leader_pose = start + offsets(arm, 0.2, 0.2)
    leader = Streamer(op.send_teleop, leader_pose, 50.0)
    time.sleep(0.2)
    response = op.call("engage_teleop")
    assert response.success, response.message
    op.wait(lambda: np.allclose(op.latest(), leader_pose, atol=1e-3), 15.0, "teleop to arrive")
    assert op.mode == "TELEOP"

    # Policy: chunks 0.1 rad from the leader's pose; engage, follow, hand over without a jump.
    policy_pose = leader_pose + offsets(arm, 0.0, 0.0, 0.1)
    policy = Streamer(op.send_chunk, policy_pose, 10.0)
    time.sleep(0.3)
    response = op.call("engage_policy")
    assert response.success, response.message
    op.wait(lambda: np.allclose(op.latest(), policy_pose, atol=1e-3), 15.0, "the policy target")
    assert op.mode == "POLICY"

    # Back to teleop.
    assert op.call("engage_teleop").success
    op.wait(lambda: np.allclose(op.latest(), leader_pose, atol=1e-3), 15.0, "teleop again")

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

    over = op.steps() / arm.max_step
    assert over.max() <= 1.0, f"a per-tick step reached {over.max():.2f}x the envelope's limit"
    assert arm.process.poll() is None


def test_bad_chunks_are_rejected_and_the_arm_holds_still(ros_context: None, arm: Arm) -> None:
    op = Operator(arm)
    op.wait(lambda: op.mode == "IDLE" and len(op.commands) > 10, 30.0, "the driver to start")
    start = op.latest()
    for target in (np.full(len(arm.joints), np.nan), start + 10.0):  # NaN, beyond the limits
        op.send_chunk(target)
    wrong = convert.numpy_to_joint_trajectory(
        ("a", "b", "c"), np.zeros((30, 3)), np.arange(30) / 30.0, stamp_ns=time.time_ns()
    )
    op.chunks.publish(wrong)  # another embodiment's chunk
    stale = convert.numpy_to_joint_trajectory(
        arm.joints,
        np.tile(start, (30, 1)),
        np.arange(30) / 30.0,
        stamp_ns=time.time_ns() - 5 * 10**9,
    )
    op.chunks.publish(stale)
    time.sleep(0.5)
    response = op.call("engage_policy")
    assert not response.success and "policy" in response.message
    assert op.mode == "IDLE"
    assert np.allclose(op.latest(), start, atol=1e-9)
    assert arm.process.poll() is None  # still running
