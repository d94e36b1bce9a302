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
