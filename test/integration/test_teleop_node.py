"""teleop_node against emulated leader arms, over the zenoh backend.

The leader is a `ServoBusEmulator` (or `DynamixelBusEmulator`) on a pty in this process, so the
test can move it by hand (`set_positions`); teleop_node, driver_node and the follower's emulator
are separate processes. Covered: the leader sources through their real client libraries (SO100
Feetech, GELLO Dynamixel, bimanual YAM on python-can `virtual`, damped or limp), the published
targets following the leader in the follower's joint names, the whole leader → teleop_node →
driver_node → follower chain after /robot/engage_teleop, a leader that is not plugged in (one
error line naming the port, the node keeps running), and a misspelt source (exit code 2).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from graph_helpers import spin_in_background, start_process, stop, teleop_node

from vla_runtime import ros
from vla_runtime.drivers.emulators.damiao import DamiaoMotorSet, EmulatedMotor
from vla_runtime.drivers.emulators.servo_bus import DynamixelBusEmulator, ServoBusEmulator
from vla_runtime.drivers.so100.calibration import RAD_PER_TICK
from vla_runtime.drivers.teleop import TeleopConfig, build_teleop_source
from vla_runtime.drivers.yam.damiao import MotorState
from vla_runtime.ros import convert
from vla_runtime.ros.interfaces import get_message, get_service

pytestmark = pytest.mark.integration
pytest.importorskip("scservo_sdk")

ROOT = Path(__file__).resolve().parents[2]
JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
IDS = (1, 2, 3, 4, 5, 6)
# A leader pose inside the SO100's limits [raw ticks; identity calibration: 2048 = 0 rad].
POSE_TICKS = (2248, 1898, 2148, 2048, 2348, 2098)
SECOND_POSE_TICKS = (1948, 2198, 1998, 2148, 2048, 2198)
Trigger = get_service("std_srvs/srv/Trigger")
String = get_message("std_msgs/msg/String")
JointState = get_message("sensor_msgs/msg/JointState")
DiagnosticArray = get_message("diagnostic_msgs/msg/DiagnosticArray")


def radians(ticks: tuple[int, ...]) -> np.ndarray:
    return (np.array(ticks, dtype=np.float64) - 2048) * RAD_PER_TICK


@pytest.fixture(autouse=True, scope="module")
def quick_thread_switches() -> Iterator[None]:
    # The in-process emulator answers from a thread: with the default 5 ms switch interval a
    # thread busy in this process (an SDK waiting, zenoh callbacks) would delay its answers.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    yield
    sys.setswitchinterval(previous)


@pytest.fixture
def leader() -> Iterator[ServoBusEmulator]:
    with ServoBusEmulator(IDS) as emulator:
        yield emulator


def move(emulator: ServoBusEmulator, ticks: tuple[int, ...]) -> None:
    emulator.set_positions(dict(zip(IDS, ticks, strict=True)))


class Watcher:
    """The test's node: teleop targets, the follower's commands and mode, diagnostics."""

    def __init__(self) -> None:
        self.node = ros.Node("teleop_watcher")
        self.lock = threading.Lock()
        self.targets: list[tuple[int, tuple[str, ...], np.ndarray]] = []
        self.commands: list[np.ndarray] = []
        self.diagnostics: list[Any] = []
        self.mode = ""
        sensor = ros.qos_profile_sensor_data
        self.node.create_subscription(JointState, "/teleop/joint_targets", self._target, sensor)
        self.node.create_subscription(JointState, "/robot/joint_commands", self._command, sensor)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._diagnostics, 10)
        latched = ros.QoSProfile(depth=1, durability=ros.DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(String, "/robot/mode", self._mode, latched)
        self.clients = {
            name: self.node.create_client(Trigger, f"/robot/{name}")
            for name in ("engage_teleop", "release")
        }
        self.thread = spin_in_background(self.node)

    def _target(self, msg: Any) -> None:
        arrays = convert.joint_state_to_numpy(msg)
        with self.lock:
            self.targets.append((arrays.stamp_ns, arrays.names, arrays.position_rad.copy()))

    def _command(self, msg: Any) -> None:
        with self.lock:
            self.commands.append(convert.joint_state_to_numpy(msg).position_rad.copy())

    def _diagnostics(self, msg: Any) -> None:
        with self.lock:
            self.diagnostics.extend(msg.status)

    def _mode(self, msg: Any) -> None:
        self.mode = msg.data

    def latest_target(self) -> np.ndarray | None:
        with self.lock:
            return self.targets[-1][2] if self.targets else None

    def latest_command(self) -> np.ndarray | None:
        with self.lock:
            return self.commands[-1] if self.commands else None

    def call(self, name: str) -> Any:
        client = self.clients[name]
        assert client.wait_for_service(timeout_sec=10.0)
        response = client.call(Trigger.Request(), timeout_sec=10.0)
        assert response is not None
        return response

    def teleop_until(self, pose: np.ndarray, timeout_s: float) -> None:
        """Engage teleop and wait for the follower's commands to reach `pose`.

        A bus stall on a loaded machine (five processes, two of them busy-waiting SDKs) can trip
        the driver's bus-fault HOLD; the operator's answer, release and engage again, is
        applied here and printed, so that a failure shows it.
        """
        deadline = time.monotonic() + timeout_s
        while not near(self.latest_command, pose, 1e-3):
            assert time.monotonic() < deadline, f"commands never reached {pose}"
            if self.mode == "HOLD":
                print(f"driver held: {self.call('release').message}")
            if self.mode == "IDLE":
                response = self.call("engage_teleop")
                assert response.success, response.message
            time.sleep(0.05)


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def near(latest: Callable[[], np.ndarray | None], pose: np.ndarray, atol: float) -> bool:
    value = latest()
    return value is not None and bool(np.allclose(value, pose, atol=atol))


# -- the sources through their real SDKs, in this process ---------------------------------------


def test_leader_sources_read_their_emulated_arms_with_torque_off() -> None:
    so100 = {"embodiment": "so100", "joint_names": list(JOINTS)}
    with ServoBusEmulator(IDS, initial_positions={1: 2048.0}) as feetech:
        parameters = {
            **so100,
            "leader.driver.port": feetech.port,
            "leader.driver.ids": list(IDS),
            "leader.driver.packet_timeout_ms": 50.0,
            "leader.scale": [1.0, -1.0, 1.0, 1.0, 1.0, 1.0],  # a mirrored shoulder_lift
        }
        source = build_teleop_source(TeleopConfig.from_parameters(parameters), parameters)
        source.connect()
        try:
            assert not any(feetech.torque_enabled().values())  # moved by hand
            move(feetech, POSE_TICKS)
            expected = radians(POSE_TICKS) * [1, -1, 1, 1, 1, 1]
            assert source.read() == pytest.approx(expected, abs=1e-9)
        finally:
            source.disconnect()

    with DynamixelBusEmulator(IDS) as dynamixel:
        parameters = {
            **so100,
            "source": "dynamixel_leader",
            "leader.port": dynamixel.port,
            "leader.ids": list(IDS),
            "leader.packet_timeout_ms": 50.0,
            "leader.signs": [1, 1, -1, 1, 1, 1],
            "leader.offset": [0.0, 0.0, 0.0, 0.0, 0.0, 0.1],
        }
        source = build_teleop_source(TeleopConfig.from_parameters(parameters), parameters)
        source.connect()
        try:
            assert not any(dynamixel.torque_enabled().values())
            move(dynamixel, POSE_TICKS)
            expected = radians(POSE_TICKS) * [1, 1, -1, 1, 1, 1] + [0, 0, 0, 0, 0, 0.1]
            assert source.read() == pytest.approx(expected, abs=1e-9)
        finally:
            source.disconnect()


@pytest.mark.parametrize("damped", [True, False])
def test_yam_leader_arms_are_never_driven_and_read_in_follower_order(damped: bool) -> None:
    can = pytest.importorskip("can")
    document = yaml.safe_load((ROOT / "config/embodiments/yam_bimanual.yaml").read_text())
    follower = document["/**"]["ros__parameters"]
    models = ("DM4340",) * 3 + ("DM4310",) * 4
    channels = {arm: f"yam-leader-{arm}-{uuid.uuid4().hex[:8]}" for arm in ("left", "right")}
    handles = {
        arm: DamiaoMotorSet([EmulatedMotor(i, m) for i, m in enumerate(models, start=1)])
        for arm in channels
    }
    for arm, motors in handles.items():
        motors.start()
        motors.attach(can.Bus(interface="virtual", channel=channels[arm]))
    parameters = {
        "embodiment": "yam_bimanual",
        "joint_names": follower["joint_names"],
        "leader.damped": damped,
        "leader.driver.arm_names": ["left", "right"],
        "leader.driver.interface": "virtual",
        "leader.driver.feedback_timeout_s": 0.05,
        "leader.driver.setup_timeout_s": 0.2,
        **{f"leader.driver.{arm}.channel": channel for arm, channel in channels.items()},
    }
    source = build_teleop_source(TeleopConfig.from_parameters(parameters), parameters)
    try:
        source.connect()
        for motors in handles.values():
            snapshots = [motors.snapshot(i) for i in range(1, 8)]
            if damped:  # enabled, then a damping command: kp 0, the arm's kd
                assert all(s.state == MotorState.ENABLED for s in snapshots)
                assert all(s.command is not None and s.command.kp == 0.0 for s in snapshots)
                assert all(s.command is not None and s.command.kd > 0.0 for s in snapshots)
            else:  # never enabled: limp
                assert all(s.state == MotorState.DISABLED for s in snapshots)
        assert source.read() == pytest.approx(np.zeros(14), abs=1e-3)  # feedback of connect
        left = [0.1, -0.2, 0.3, -0.1, 0.2, -0.3, 3.285]  # gripper motor half open
        right = [-0.1, 0.2, -0.3, 0.1, -0.2, 0.3, 0.0]
        handles["left"].set_positions(left)
        handles["right"].set_positions(right)
        reading = source.read()
        assert reading[:6] == pytest.approx(left[:6], abs=1e-3)
        assert reading[6] == pytest.approx(0.04695 / 2, abs=1e-4)  # metres of finger travel
        assert reading[7:13] == pytest.approx(right[:6], abs=1e-3)
        assert reading[13] == pytest.approx(0.0, abs=1e-4)
    finally:
        source.disconnect()
        for motors in handles.values():
            motors.close()


# -- teleop_node as its own process -------------------------------------------------------------


def test_teleop_node_publishes_the_leader_pose_in_follower_joint_names(
    ros_context: None, leader: ServoBusEmulator, processes: list[subprocess.Popen[str]]
) -> None:
    move(leader, POSE_TICKS)
    processes.append(teleop_node(leader.port))
    watcher = Watcher()
    wait_for(lambda: near(watcher.latest_target, radians(POSE_TICKS), 1e-6), 20.0, "targets")
    with watcher.lock:
        stamp_ns, names, _ = watcher.targets[-1]
    assert names == JOINTS
    assert abs(time.time_ns() - stamp_ns) < 2e9  # stamped with the read time

    move(leader, SECOND_POSE_TICKS)  # the operator moves the leader: the targets follow
    wait_for(lambda: near(watcher.latest_target, radians(SECOND_POSE_TICKS), 1e-6), 5.0, "follow")

    def teleop_ok() -> bool:
        with watcher.lock:
            return any(
                s.name == "teleop: leader_arm" and s.message == "reading"
                for s in watcher.diagnostics
            )

    wait_for(teleop_ok, 5.0, "teleop diagnostics")
    assert processes[0].poll() is None


def test_leader_drives_the_follower_through_teleop_and_driver_nodes(
    ros_context: None,
    leader: ServoBusEmulator,
    processes: list[subprocess.Popen[str]],
    tmp_path: Path,
) -> None:
    link = tmp_path / "so100_follower"
    ids = [str(i) for i in IDS]
    module = "vla_runtime.drivers.emulators.servo_bus"
    processes.append(start_process("-m", module, "--ids", *ids, "--link", str(link)))
    wait_for(link.exists, 10.0, "the follower emulator")
    processes.append(
        start_process(
            "-m",
            "vla_runtime.nodes.driver_node",
            "--ros-args",
            "--params-file",
            str(ROOT / "config/embodiments/so100.yaml"),
            "-p",
            f"driver.port:={link}",
            # Five processes share this machine's cores: allow a late answer, not a HOLD.
            "-p",
            "driver.packet_timeout_ms:=100.0",
            "-p",
            "driver.read_retries:=4",
        )
    )
    watcher = Watcher()
    # One node at a time: two SDKs busy-waiting through their connect on a two-core CI machine
    # have been seen to stall both buses for half a second.
    wait_for(lambda: watcher.mode != "", 30.0, "driver_node")
    move(leader, POSE_TICKS)
    processes.append(teleop_node(leader.port))
    wait_for(lambda: watcher.targets != [], 30.0, "teleop_node")
    watcher.teleop_until(radians(POSE_TICKS), 15.0)
    assert watcher.mode == "TELEOP"

    move(leader, SECOND_POSE_TICKS)  # the operator moves the leader; the follower follows
    watcher.teleop_until(radians(SECOND_POSE_TICKS), 15.0)
    assert all(process.poll() is None for process in processes)


def test_a_missing_leader_is_one_error_naming_the_port_and_the_node_keeps_running(
    ros_context: None, processes: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    port = str(tmp_path / "so100_leader_unplugged")
    node = teleop_node(port)
    processes.append(node)
    watcher = Watcher()

    def reported() -> bool:
        with watcher.lock:
            return any(port in s.message for s in watcher.diagnostics)

    wait_for(reported, 20.0, "diagnostics naming the port")
    time.sleep(3.0)  # several retries (0.5, 1, 2 s backoff)
    assert node.poll() is None, "teleop_node exited"
    output = stop(node)
    assert node.returncode == 0
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1, output  # retried several times, said once
    assert port in errors[0] and "cannot connect" in errors[0], errors[0]
    assert "Traceback" not in output


def test_a_misspelt_source_exits_with_one_line_and_code_2(router: str) -> None:
    node = teleop_node("/dev/null", "-p", "source:=leader_armm")
    output, _ = node.communicate(timeout=30)
    assert node.returncode == 2, output
    assert "Did you mean 'leader_arm'" in output and "Traceback" not in output
