"""The Franka driver in this process against the franka_ros2 stand-in in another, over zenoh.

Each test starts the stand-in as its own process (`python -m`-style `main()`), so the driver's
real topics, QoS and services are what is exercised. Tests that are not about libfranka's
missed-command rule give the stand-in a looser limit, so a scheduling hiccup on a loaded CI
machine cannot trip it; the rule itself is tested with the real 20 cycles.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from vla_runtime import ros
from vla_runtime.drivers.base import DriverError, DriverTimeout, JointReading
from vla_runtime.drivers.emulators.franka_ros2 import FrankaRos2Emulator, FrankaRos2EmulatorConfig
from vla_runtime.drivers.franka import FrankaDriver, build
from vla_runtime.drivers.registry import build_driver
from vla_runtime.ros.interfaces import get_service

pytestmark = pytest.mark.integration

JOINTS = (*(f"fr3_joint{i}" for i in range(1, 8)), "fr3_finger_joint1")
READY = np.array([0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4, 0.04])
EMULATOR = """
import sys
from vla_runtime.drivers.emulators.franka_ros2 import main
sys.exit(main(sys.argv))
"""
# Loose enough that only a stopped stream, never CI jitter, trips it (250 ms).
RELAXED = {"missed_command_limit": 250}


def start_emulator(spawn: Any, **parameters: object) -> Any:
    args = ["--ros-args"]
    for name, value in parameters.items():
        args += ["-p", f"{name}:={value}"]
    child = spawn(EMULATOR, *args)
    child.wait_for_line("franka_ros2 emulator ready")
    return child


@pytest.fixture
def drivers() -> Iterator[Callable[..., FrankaDriver]]:
    made: list[FrankaDriver] = []

    def make(**parameters: Any) -> FrankaDriver:
        driver = build(JOINTS, {"connect_timeout_s": 10.0, **parameters})
        assert isinstance(driver, FrankaDriver)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        driver.disconnect()


def stream(
    driver: FrankaDriver,
    target: np.ndarray,
    rate_hz: float,
    duration_s: float,
    until: Callable[[JointReading], bool] | None = None,
) -> bool:
    """Write `target` at `rate_hz` (steady clock) until `until(reading)` or the time is up."""
    period_ns = round(1e9 / rate_hz)
    next_ns = time.monotonic_ns()
    end_ns = next_ns + round(duration_s * 1e9)
    while time.monotonic_ns() < end_ns:
        driver.write(target)
        if until is not None and until(driver.read()):
            return True
        next_ns += period_ns
        time.sleep(max(0.0, (next_ns - time.monotonic_ns()) / 1e9))
    return False


def wait_for(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


def near(target: np.ndarray, tolerance: float = 1e-3) -> Callable[[JointReading], bool]:
    return lambda reading: bool(np.abs(reading.positions - target).max() < tolerance)


def test_connect_read_write_converges(router: str, spawn: Any) -> None:
    emulator = start_emulator(spawn, **RELAXED)
    driver = build_driver("franka", JOINTS, {"connect_timeout_s": 10.0})  # through the registry
    assert isinstance(driver, FrankaDriver)
    driver.connect()
    try:
        reading = driver.read()
        np.testing.assert_allclose(reading.positions, READY, atol=1e-9)
        assert reading.velocities is not None and reading.efforts is not None
        assert abs(reading.stamp_ns - time.time_ns()) < 1e9
        driver.enable()
        target = READY + np.array([0.3, -0.2, 0.25, 0.3, -0.4, 0.2, 0.5, 0.0])
        target[7] = 0.015  # finger opening [m]: the hand closes to a 3 cm width
        assert stream(driver, target, 250.0, 5.0, until=near(target))
        assert driver.error == ""
    finally:
        driver.disconnect()
    assert ros.ok() is False  # the driver opened the middleware context, so it closed it
    output = emulator.stop()
    assert emulator.process.returncode == 0, output  # SIGTERM is a clean stop
    assert "accepted" in output and "arm commands" in output


def test_trajectory_interface_converges_without_a_command_stream(
    router: str, spawn: Any, drivers: Any
) -> None:
    start_emulator(spawn)  # the real 20-cycle rule: trajectories must not arm it
    driver = drivers(command_interface="trajectory", trajectory_point_time_s=0.02)
    driver.connect()
    driver.enable()
    target = READY + np.array([-0.3, 0.2, 0.0, -0.3, 0.3, 0.4, -0.5, -0.03])
    assert stream(driver, target, 50.0, 5.0, until=near(target))
    time.sleep(0.2)  # no commands for 200 cycles: fine for joint_trajectory_controller
    assert driver.error == ""
    np.testing.assert_allclose(driver.read().positions, target, atol=1e-3)


def test_absent_franka_ros2_names_the_topic_and_the_launch(router: str, drivers: Any) -> None:
    driver = drivers(connect_timeout_s=0.5)
    with pytest.raises(DriverError) as error:
        driver.connect()
    message = str(error.value)
    assert "/franka/joint_states" in message
    assert "ros2 launch franka_bringup" in message and "joint_position_controller" in message
    assert ros.ok() is False  # a failed connect leaves nothing open
    with pytest.raises(DriverError, match="not connected"):
        driver.read()


def test_inactive_controller_is_named(router: str, spawn: Any, drivers: Any) -> None:
    start_emulator(spawn, **RELAXED)
    driver = drivers(
        connect_timeout_s=1.0, position_command_topic="/joint_impedance_controller/commands"
    )
    with pytest.raises(DriverError) as error:
        driver.connect()
    message = str(error.value)
    assert "/joint_impedance_controller/commands" in message
    assert "spawner joint_impedance_controller" in message


def test_stopped_command_stream_stops_the_arm_until_recovery(
    ros_context: None, spawn: Any, drivers: Any
) -> None:
    start_emulator(spawn)  # libfranka's rule: 20 missed 1 ms cycles
    driver = drivers()
    driver.connect()
    driver.enable()
    far = READY.copy()
    far[0] += 2.0  # about a second at joint 1's 2.62 rad/s limit
    stream(driver, far, 250.0, 0.15)
    # The stream stops mid-motion (as if the driver hung).
    assert wait_for(lambda: "communication_constraints_violation" in driver.error, 2.0)
    assert "/franka/error_recovery" in driver.error
    stopped = driver.read().positions
    time.sleep(0.3)
    np.testing.assert_allclose(driver.read().positions, stopped, atol=1e-9)
    assert abs(stopped[0] - far[0]) > 0.5  # it stopped where it was, not at the target
    with pytest.raises(DriverError, match="communication_constraints_violation"):
        driver.write(far)

    node = ros.Node("operator")
    trigger = get_service("std_srvs/srv/Trigger")
    client = node.create_client(trigger, "/franka/error_recovery")
    assert client.wait_for_service(timeout_sec=5.0)
    response = client.call(trigger.Request(), 5.0)
    assert response is not None and response.success
    assert "communication_constraints_violation" in response.message
    assert wait_for(lambda: driver.error == "", 2.0)
    assert stream(driver, far, 250.0, 5.0, until=near(far))


def test_stale_joint_states_raise_driver_timeout(router: str, spawn: Any, drivers: Any) -> None:
    emulator = start_emulator(spawn, **RELAXED)
    driver = drivers(state_timeout_s=0.1)
    driver.connect()
    driver.read()
    os.kill(emulator.process.pid, signal.SIGSTOP)  # franka_ros2 hangs
    try:
        time.sleep(0.3)
        with pytest.raises(DriverTimeout, match=r"joint_states is \d+ ms old"):
            driver.read()
    finally:
        os.kill(emulator.process.pid, signal.SIGCONT)

    def fresh() -> bool:
        try:
            driver.read()
        except DriverTimeout:
            return False
        return True

    assert wait_for(fresh, 5.0)


def test_an_attached_world_moves_the_joints(ros_context: None, drivers: Any) -> None:
    # In-process stand-in, as the simulated world would host it; this test pauses the command
    # stream on purpose, so the missed-command rule is effectively off.
    emulator = FrankaRos2Emulator(FrankaRos2EmulatorConfig(missed_command_limit=100_000))
    executor = ros.SingleThreadedExecutor()
    executor.add_node(emulator)
    spinning = threading.Event()
    spinning.set()

    def spin() -> None:
        while spinning.is_set():
            executor.spin_once(timeout_sec=0.05)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        emulator.attach_world()
        pose = READY + np.array([0.1, 0.1, -0.1, 0.2, 0.0, 0.3, -0.2, -0.02])
        emulator.set_positions(pose)
        driver = drivers()
        driver.connect()
        np.testing.assert_allclose(driver.read().positions, pose, atol=1e-12)
        driver.enable()
        target = pose + np.array([0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.01])
        driver.write(target)
        assert wait_for(lambda: np.allclose(emulator.targets(), target), 2.0)
        time.sleep(0.1)  # the world did not step: the joints stay where it put them
        np.testing.assert_allclose(driver.read().positions, pose, atol=1e-12)
        emulator.step(1.0)  # or the world lets the emulated dynamics run in its time
        driver.write(target)
        assert wait_for(lambda: near(target)(driver.read()), 2.0)
    finally:
        spinning.clear()
        thread.join(timeout=2.0)
        executor.shutdown()
        emulator.destroy_node()
