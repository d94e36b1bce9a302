"""`vla-runtime sim so100`: rendered frames, joint states and task state reach a subscriber."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from graph_helpers import child_env, spin_in_background, start_process, wait_for_path

from vla_runtime import ros
from vla_runtime.ros import convert
from vla_runtime.ros.interfaces import get_message, get_service

pytest.importorskip("vla_runtime.sim.world", reason="needs mujoco")

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
JointState = get_message("sensor_msgs/msg/JointState")
Image = get_message("sensor_msgs/msg/Image")


def test_sim_publishes_frames_joint_states_and_task_state(
    ros_context: None, processes: list[subprocess.Popen[str]]
) -> None:
    node = ros.Node("sim_test")
    frames: dict[str, list[Any]] = {"third_person": [], "wrist": []}
    states: list[Any] = []
    statuses: list[Any] = []
    sensor = ros.qos_profile_sensor_data
    for camera, received in frames.items():
        node.create_subscription(
            get_message("sensor_msgs/msg/Image"),
            f"/cameras/{camera}/image_raw",
            lambda msg, received=received: received.append((msg, time.time_ns())),
            sensor,
        )
    node.create_subscription(
        get_message("sensor_msgs/msg/JointState"), "/sim/joint_states", states.append, sensor
    )
    node.create_subscription(
        get_message("diagnostic_msgs/msg/DiagnosticArray"),
        "/diagnostics",
        lambda msg: statuses.extend(s for s in msg.status if s.name == "sim: so100"),
        10,
    )
    command = [sys.executable, "-m", "vla_runtime.cli", "sim", "so100", "--duration", "8"]
    command += ["--width", "160", "--height", "120", "--servo-bus"]
    processes.append(
        subprocess.Popen(
            command, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    )
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline and not (
        all(len(f) >= 10 for f in frames.values()) and states and statuses
    ):
        ros.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    for camera, received in frames.items():
        assert len(received) >= 10, f"{camera}: {len(received)} frames"
        msg, arrival_ns = received[-1]
        pixels = convert.image_to_numpy(msg)
        assert pixels.shape == (120, 160, 3) and pixels.std() > 5.0
        # Stamped with the render time: shortly before arrival.
        assert 0 <= arrival_ns - convert.stamp_to_ns(msg.header.stamp) < 1_000_000_000
    assert tuple(states[-1].name) == (
        "shoulder_pan",
        "shoulder_lift",
        "elbow_flex",
        "wrist_flex",
        "wrist_roll",
        "gripper",
    )
    values = {kv.key: kv.value for kv in statuses[-1].values}
    assert values["success"] == "false" and "red_cube.position" in values


def test_driver_node_closes_the_loop_through_the_simulated_servo_bus(
    ros_context: None, processes: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    """Teleop moves shoulder_pan through driver_node → Feetech pty → world: joints and image."""
    link = tmp_path / "so100"
    sim = ["-m", "vla_runtime.cli", "sim", "so100", "--servo-bus", "--link", str(link)]
    processes.append(start_process(*sim, "--width", "160", "--height", "120", "--duration", "60"))
    wait_for_path(link, timeout_s=30.0)
    params = str(ROOT / "config/embodiments/so100.yaml")
    driver = ["-m", "vla_runtime.nodes.driver_node", "--ros-args", "--params-file", params]
    processes.append(
        start_process(
            *driver, "-p", f"driver.port:={link}", "-p", "driver.packet_timeout_ms:=50.0"
        )
    )
    node = ros.Node("sim_operator")
    latest: dict[str, Any] = {}
    first_images: list[np.ndarray] = []

    def on_image(msg: Any) -> None:
        latest["image"] = convert.image_to_numpy(msg).astype(np.int16)
        if not first_images:
            first_images.append(latest["image"])

    sensor = ros.qos_profile_sensor_data
    node.create_subscription(Image, "/cameras/third_person/image_raw", on_image, sensor)
    node.create_subscription(
        JointState, "/sim/joint_states", lambda m: latest.__setitem__("sim", m), sensor
    )
    node.create_subscription(
        JointState, "/robot/joint_states", lambda m: latest.__setitem__("robot", m), sensor
    )
    teleop = node.create_publisher(JointState, "/teleop/joint_targets", sensor)
    trigger = get_service("std_srvs/srv/Trigger")
    engage = node.create_client(trigger, "/robot/engage_teleop")
    spin_in_background(node)

    def wait(predicate: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    wait(lambda: {"image", "sim", "robot"} <= set(latest), 30.0, "sim and driver topics")
    names = tuple(latest["sim"].name)
    target = np.zeros(len(names))
    target[0] = 0.3  # shoulder_pan [rad]
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            teleop.publish(convert.numpy_to_joint_state(names, target, stamp_ns=time.time_ns()))
            stop.wait(0.02)

    leader = threading.Thread(target=stream, daemon=True)
    leader.start()
    try:
        time.sleep(0.2)
        assert engage.wait_for_service(timeout_sec=10.0)
        response = engage.call(trigger.Request(), timeout_sec=10.0)
        assert response is not None and response.success, response
        wait(
            lambda: abs(latest["sim"].position[0] - 0.3) < 0.02,
            20.0,
            "the simulated shoulder_pan to reach 0.3 rad",
        )
        wait(lambda: abs(latest["robot"].position[0] - 0.3) < 0.02, 5.0, "the driver to see it")
        time.sleep(0.3)  # a frame rendered after the move
        changed = np.abs(latest["image"] - first_images[0]).sum(axis=2) > 30
        assert changed.mean() > 0.005
    finally:
        stop.set()
        leader.join()
        node.destroy_node()


class WorldThread:
    """The world stepping in real time on its own thread, with couplings, as `vla-runtime sim`."""

    def __init__(self, world: Any, *couplings: Any) -> None:
        self.world = world
        self.couplings = couplings
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                for coupling in self.couplings:
                    coupling.command(self.world)
                self.world.advance(time.monotonic_ns())
                for coupling in self.couplings:
                    coupling.report(self.world)
            self._stop.wait(0.005)

    def __enter__(self) -> WorldThread:
        with self.lock:
            for coupling in self.couplings:  # the emulators start where the world is
                coupling.report(self.world)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.world.close()

    def positions(self) -> np.ndarray:
        with self.lock:
            return np.asarray(self.world.joint_positions())


def test_yam_driver_moves_the_world_through_the_damiao_emulators() -> None:
    """The real YAM driver (python-can) → Damiao MIT frames → world servos → motor feedback."""
    import uuid

    import can

    from vla_runtime.drivers.emulators.damiao import DamiaoMotorSet
    from vla_runtime.drivers.registry import build_driver
    from vla_runtime.drivers.yam.driver import YamConfig
    from vla_runtime.sim.coupling import DamiaoCoupling
    from vla_runtime.sim.world import WorldConfig, build_world

    world = build_world(WorldConfig("yam_bimanual", 64, 48))
    names = world.joint_names
    defaults = YamConfig()
    channels = {side: f"sim-yam-{side}-{uuid.uuid4().hex[:6]}" for side in ("left", "right")}
    motor_sets, couplings = [], []
    for side in ("left", "right"):
        motors = DamiaoMotorSet.from_models(defaults.ids, defaults.models, internal_physics=False)
        motors.attach(can.Bus(interface="virtual", channel=channels[side]))
        motor_sets.append(motors)
        couplings.append(
            DamiaoCoupling(motors, [n for n in names if n.startswith(f"{side}_")], gripper_id=7)
        )
    parameters = {"interface": "virtual", "feedback_timeout_s": 0.05, "setup_timeout_s": 0.2}
    parameters |= {f"arms.{side}.channel": channel for side, channel in channels.items()}
    driver = build_driver("yam_bimanual", names, parameters)
    try:
        with WorldThread(world, *couplings) as running:
            driver.connect()
            start = driver.read().positions
            assert start == pytest.approx(running.positions(), abs=2e-3)
            driver.enable()
            target = start.copy()
            target[0] += 0.3  # left_joint1 [rad]
            target[9] += 0.2  # right_joint3
            target[13] = 0.02  # right_gripper [m]
            deadline = time.monotonic() + 15.0
            while time.monotonic() < deadline:
                driver.write(target)
                if np.allclose(running.positions(), target, atol=0.01):
                    break
                time.sleep(0.004)
            simulated = running.positions()
            assert simulated == pytest.approx(target, abs=0.01)
            assert driver.read().positions == pytest.approx(simulated, abs=0.01)
            left, right = motor_sets
            assert left.positions()[0] == pytest.approx(target[0], abs=0.01)
            assert right.positions()[2] == pytest.approx(target[9], abs=0.01)
            assert right.positions()[6] == pytest.approx(6.57 * 0.02 / 0.04695, abs=0.03)
    finally:
        driver.disconnect()
        for motors in motor_sets:
            motors.close()


def test_franka_driver_moves_the_world_through_the_franka_ros2_stand_in(
    ros_context: None,
) -> None:
    """Our Franka driver → the stand-in's command topic → world servos → /franka/joint_states."""
    from vla_runtime.drivers.emulators.franka_ros2 import (
        FrankaRos2Emulator,
        FrankaRos2EmulatorConfig,
    )
    from vla_runtime.drivers.franka import build
    from vla_runtime.sim.coupling import FrankaCoupling
    from vla_runtime.sim.world import WorldConfig, build_world

    world = build_world(WorldConfig("franka", 64, 48))
    emulator = FrankaRos2Emulator(
        FrankaRos2EmulatorConfig(
            initial_positions=tuple(float(p) for p in world.joint_positions()[:7]),
            missed_command_limit=250,
        )
    )
    spin_in_background(emulator)
    driver = build(world.joint_names, {"connect_timeout_s": 10.0})
    try:
        with WorldThread(world, FrankaCoupling(emulator)) as running:
            driver.connect()
            start = driver.read().positions
            assert start[:7] == pytest.approx(running.positions()[:7], abs=0.01)
            driver.enable()
            target = start.copy()
            target[0] += 0.3
            target[3] += 0.2
            deadline = time.monotonic() + 15.0
            while time.monotonic() < deadline:
                driver.write(target)
                if np.allclose(running.positions()[:7], target[:7], atol=0.01):
                    break
                time.sleep(0.004)
            settle = time.monotonic() + 0.5  # keep streaming while the arm settles
            while time.monotonic() < settle:
                driver.write(target)
                time.sleep(0.004)
            simulated = running.positions()
            assert simulated[:7] == pytest.approx(target[:7], abs=0.01)
            assert driver.read().positions[:7] == pytest.approx(simulated[:7], abs=0.01)
            assert emulator.positions()[:7] == pytest.approx(simulated[:7], abs=0.01)
    finally:
        driver.disconnect()
        emulator.destroy_node()


def test_yam_driver_closes_the_loop_through_sim_can_ptys(
    ros_context: None, processes: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    """`vla-runtime sim yam_bimanual --can`: the YAM driver over SLCAN moves the world's arm."""
    from vla_runtime.drivers.yam.driver import YamArm, YamConfig

    links = tmp_path / "can"
    sim = ["-m", "vla_runtime.cli", "sim", "yam_bimanual", "--can", "--link", str(links)]
    processes.append(start_process(*sim, "--width", "64", "--height", "48", "--duration", "60"))
    wait_for_path(links / "can_follower_r", timeout_s=30.0)
    node = ros.Node("sim_yam_test")
    latest: dict[str, Any] = {}
    node.create_subscription(
        JointState,
        "/sim/joint_states",
        lambda m: latest.__setitem__("sim", m),
        ros.qos_profile_sensor_data,
    )
    spin_in_background(node)
    names = (*(f"joint{i}" for i in range(1, 7)), "gripper")
    config = YamConfig(
        interface="slcan",
        channel=str(links / "can_follower_r"),
        feedback_timeout_s=0.05,
        setup_timeout_s=0.2,
    )
    arm = YamArm(names, config)
    try:
        arm.connect()
        start = arm.read().positions
        arm.enable()
        target = start.copy()
        target[0] += 0.3  # right_joint1 [rad]
        target[6] = 0.03  # right_gripper [m]
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            arm.write(target)
            if np.allclose(arm.read().positions, target, atol=0.01):
                break
            time.sleep(0.004)
        assert arm.read().positions == pytest.approx(target, abs=0.01)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            arm.write(target)
            state = latest.get("sim")
            if state is not None and abs(state.position[7] - target[0]) < 0.01:
                break
            time.sleep(0.004)
        state = latest["sim"]
        assert tuple(state.name[7:]) == tuple(f"right_{n}" for n in names)
        assert np.asarray(state.position[7:]) == pytest.approx(target, abs=0.01)
    finally:
        arm.disconnect()
        node.destroy_node()


def test_franka_driver_closes_the_loop_through_sim_franka_ros2_and_camera_info(
    ros_context: None, processes: list[subprocess.Popen[str]]
) -> None:
    """`vla-runtime sim franka --franka-ros2`: our Franka driver moves the world; camera_info
    comes with every image, stamped alike."""
    from vla_runtime.drivers.franka import build

    sim = ["-m", "vla_runtime.cli", "sim", "franka", "--franka-ros2", "--duration", "60"]
    processes.append(start_process(*sim, "--width", "160", "--height", "120"))
    node = ros.Node("sim_franka_test")
    latest: dict[str, Any] = {}
    sensor = ros.qos_profile_sensor_data
    images: dict[int, Any] = {}
    infos: list[Any] = []
    node.create_subscription(
        JointState, "/sim/joint_states", lambda m: latest.__setitem__("sim", m), sensor
    )
    node.create_subscription(
        Image,
        "/cameras/wrist/image_raw",
        lambda m: images.__setitem__(convert.stamp_to_ns(m.header.stamp), m),
        sensor,
    )
    node.create_subscription(
        get_message("sensor_msgs/msg/CameraInfo"),
        "/cameras/wrist/camera_info",
        infos.append,
        sensor,
    )
    spin_in_background(node)
    driver = build(
        (*(f"fr3_joint{i}" for i in range(1, 8)), "fr3_finger_joint1"), {"connect_timeout_s": 30.0}
    )
    try:
        driver.connect()
        start = driver.read().positions
        driver.enable()
        target = start.copy()
        target[0] += 0.3
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            driver.write(target)
            state = latest.get("sim")
            if state is not None and abs(state.position[0] - target[0]) < 0.01:
                break
            time.sleep(0.004)
        assert latest["sim"].position[0] == pytest.approx(target[0], abs=0.01)
        assert driver.read().positions[0] == pytest.approx(target[0], abs=0.02)
    finally:
        driver.disconnect()
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and not any(
        convert.stamp_to_ns(i.header.stamp) in images for i in infos
    ):
        time.sleep(0.05)
    node.destroy_node()
    info = next(i for i in infos if convert.stamp_to_ns(i.header.stamp) in images)
    assert (info.width, info.height) == (160, 120)
    fx, fy, cx, cy = info.k[0], info.k[4], info.k[2], info.k[5]
    assert fx == pytest.approx(fy) and fy > 0
    assert (cx, cy) == pytest.approx((80.0, 60.0))
    assert info.header.frame_id == images[convert.stamp_to_ns(info.header.stamp)].header.frame_id
