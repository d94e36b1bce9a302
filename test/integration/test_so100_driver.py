"""SO100 driver, Feetech and Dynamixel buses against the servo-bus emulator on a pty.

The real `scservo_sdk` / `dynamixel_sdk` talk to `ServoBusEmulator` through a pseudo-terminal,
in this process (emulator threads) or, in one test, with the emulator as its own process.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from graph_helpers import child_env

from vla_runtime.drivers.base import DriverError, DriverTimeout, MultiArmDriver
from vla_runtime.drivers.emulators.servo_bus import DynamixelBusEmulator, ServoBusEmulator
from vla_runtime.drivers.registry import build_driver
from vla_runtime.drivers.so100 import calibrate
from vla_runtime.drivers.so100.bus import FeetechBus
from vla_runtime.drivers.so100.calibrate import CalibrationProcedure
from vla_runtime.drivers.so100.calibration import RAD_PER_TICK, ArmCalibration
from vla_runtime.drivers.so100.driver import So100Driver
from vla_runtime.drivers.so100.dynamixel_bus import DynamixelBus

pytestmark = pytest.mark.integration
pytest.importorskip("scservo_sdk")

# Answers come from threads of this (or another) process on a possibly busy CI machine: allow
# 50 ms per status packet instead of the 10 ms default, so that only injected faults time out.
TIMING = {"packet_timeout_ms": 50.0}
JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
IDS = [1, 2, 3, 4, 5, 6]


@pytest.fixture(autouse=True, scope="module")
def quick_thread_switches() -> Iterator[None]:
    # The SDKs busy-wait for status packets while holding the GIL; with the default 5 ms
    # switch interval the emulator's threads in this process would answer 5 ms late.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    yield
    sys.setswitchinterval(previous)


@pytest.fixture
def emulator() -> Iterator[ServoBusEmulator]:
    with ServoBusEmulator(IDS) as bus:
        yield bus


@pytest.fixture
def driver(emulator: ServoBusEmulator) -> Iterator[So100Driver]:
    arm = build_driver("so100", JOINTS, {"port": emulator.port, "ids": IDS, **TIMING})
    assert isinstance(arm, So100Driver)
    arm.connect()
    yield arm
    arm.disconnect()


def wait_until(condition: Callable[[], bool], timeout_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_connect_configures_the_servos(emulator: ServoBusEmulator, driver: So100Driver) -> None:
    for servo_id in IDS:
        assert emulator.read_register(servo_id, 7, 1) == 0  # Return_Delay_Time: 2 µs
        assert emulator.read_register(servo_id, 41, 1) == 254  # Acceleration
        assert emulator.read_register(servo_id, 85, 1) == 254  # Maximum_Acceleration
        pid = [emulator.read_register(servo_id, a, 1) for a in (21, 23, 22)]
        assert pid == [16, 0, 32]
    assert not any(emulator.torque_enabled().values())
    assert driver.bus.models == dict.fromkeys(IDS, 777)


def test_write_a_target_and_the_joints_converge(
    emulator: ServoBusEmulator, driver: So100Driver
) -> None:
    driver.enable()
    assert all(emulator.torque_enabled().values())
    assert driver.read().positions == pytest.approx(np.zeros(6), abs=RAD_PER_TICK)
    target = np.array([0.5, -0.4, 0.3, -0.2, 1.0, 0.1])
    driver.write(target)

    def converged() -> bool:
        return bool(np.allclose(driver.read().positions, target, atol=2 * RAD_PER_TICK))

    assert wait_until(converged)
    reading = driver.read()
    assert reading.velocities is not None and reading.stamp_ns > 0
    assert driver.statistics.failures == 0


def test_enable_holds_the_present_pose(emulator: ServoBusEmulator) -> None:
    # The arm rests away from the servos' stale Goal_Position (2048): enabling must not jump.
    emulator.set_positions({1: 1000.0, 6: 3000.0})
    arm = build_driver("so100", JOINTS, {"port": emulator.port, **TIMING})
    arm.connect()
    try:
        arm.enable()
        time.sleep(0.2)
        positions = emulator.positions()
        assert positions[1] == pytest.approx(1000, abs=1) and positions[6] == pytest.approx(
            3000, abs=1
        )
    finally:
        arm.disconnect()
    assert not any(emulator.torque_enabled().values())  # disconnect switched torque off


def test_a_simulated_world_moves_the_joints() -> None:
    # No internal dynamics: the "world" (this test) reads goals and torque, writes positions.
    with ServoBusEmulator(IDS, physics_rate_hz=None) as emulator:
        arm = build_driver("so100", JOINTS, {"port": emulator.port, **TIMING})
        arm.connect()
        try:
            arm.enable()
            arm.write(np.full(6, 0.25))
            time.sleep(0.05)
            assert emulator.positions()[1] == 2048.0  # nothing moves on its own
            goals, torque = emulator.goal_positions(), emulator.torque_enabled()
            assert all(torque.values())
            emulator.set_positions({i: goals[i] for i in IDS}, {i: 100.0 for i in IDS})
            reading = arm.read()
            assert reading.positions == pytest.approx(np.full(6, 0.25), abs=RAD_PER_TICK)
            assert reading.velocities == pytest.approx(np.full(6, 100 * RAD_PER_TICK))
        finally:
            arm.disconnect()


def test_torque_off_stops_motion(emulator: ServoBusEmulator, driver: So100Driver) -> None:
    driver.enable()
    driver.write(np.full(6, 2.0))
    time.sleep(0.05)
    driver.disable()
    stopped = emulator.positions()
    assert stopped[1] > 2048 + 20  # it was on its way
    time.sleep(0.2)
    assert emulator.positions() == stopped
    assert not any(emulator.torque_enabled().values())


def test_a_missing_servo_fails_connect_naming_port_and_id() -> None:
    with ServoBusEmulator(IDS, missing_ids=[4]) as emulator:
        arm = build_driver("so100", JOINTS, {"port": emulator.port, **TIMING})
        with pytest.raises(DriverError) as caught:
            arm.connect()
        message = str(caught.value)
        assert emulator.port in message and "id(s) 4 " in message
        assert "answering: 1, 2, 3, 5, 6" in message


def test_a_port_that_does_not_exist_says_what_to_check(tmp_path: Path) -> None:
    port = str(tmp_path / "ttyACM0")
    arm = build_driver("so100", JOINTS, {"port": port})
    with pytest.raises(DriverError, match="dialout group") as caught:
        arm.connect()
    assert f"cannot open {port}" in str(caught.value)


@pytest.mark.parametrize("fault", ["drop_probability", "corrupt_probability"])
def test_every_answer_lost_raises_timeout_after_retries(
    emulator: ServoBusEmulator, driver: So100Driver, fault: str
) -> None:
    emulator.set_faults(**{fault: 1.0})
    with pytest.raises(DriverTimeout) as caught:
        driver.read()
    assert emulator.port in str(caught.value) and "3 attempts" in str(caught.value)
    assert driver.statistics.retries == 2 and driver.statistics.failures == 1
    emulator.set_faults(**{fault: 0.0})
    assert driver.read().positions.shape == (6,)  # the bus recovers


@pytest.mark.parametrize("fault", ["drop_probability", "corrupt_probability"])
def test_one_answer_in_five_lost_is_absorbed_by_retries(
    emulator: ServoBusEmulator, fault: str
) -> None:
    arm = build_driver("so100", JOINTS, {"port": emulator.port, "read_retries": 4, **TIMING})
    assert isinstance(arm, So100Driver)
    arm.connect()
    try:
        emulator.set_faults(**{fault: 0.2})
        for _ in range(60):
            arm.read()
        assert arm.statistics.retries > 0 and arm.statistics.failures == 0
    finally:
        emulator.set_faults(**{fault: 0.0})
        arm.disconnect()


def test_a_vanished_device_is_a_driver_error(
    emulator: ServoBusEmulator, driver: So100Driver
) -> None:
    driver.enable()
    port = emulator.port
    emulator.stop()
    with pytest.raises(DriverError, match=port):
        driver.read()
    driver.disconnect()  # nothing left to switch off, but no exception either
    driver.disconnect()


def calibrate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    calibrate.add_arguments(parser)
    parser.set_defaults(packet_timeout_ms=TIMING["packet_timeout_ms"])
    return parser


def sweep_through(emulator: ServoBusEmulator, low: int, high: int) -> calibrate.Sweep:
    """A scripted operator: moves every joint (raw ticks) from `low` to `high` and back."""

    def sweep(procedure: CalibrationProcedure) -> None:
        for raw in [*range(2048, low, -150), *range(low, high, 150), high]:
            emulator.set_positions(dict.fromkeys(IDS, float(raw)))
            procedure.sample()

    return sweep


def test_calibration_procedure_then_driver(emulator: ServoBusEmulator, tmp_path: Path) -> None:
    emulator.set_positions({i: 1500.0 + 100 * i for i in IDS})  # the operator's mid pose
    prompts: list[str] = []
    bus = FeetechBus(emulator.port, IDS, **TIMING)
    bus.open()
    try:

        def sweep(procedure: CalibrationProcedure) -> None:
            for delta in (-600, 0, 700):
                emulator.set_positions({i: 1500.0 + 100 * i + delta for i in IDS})
                procedure.sample()

        procedure = CalibrationProcedure(bus, JOINTS, ask=prompts.append, say=lambda _: None)
        result = procedure.run(sweep)
    finally:
        bus.close()
    assert "middle of its range" in prompts[0]
    for index, servo_id in enumerate(IDS):
        joint = result.joints[index]
        assert joint.homing_offset_ticks == 1500 + 100 * servo_id - 2048
        if JOINTS[index] == "wrist_roll":
            assert (joint.range_min_ticks, joint.range_max_ticks) == (0, 4095)
        else:
            assert (joint.range_min_ticks, joint.range_max_ticks) == (2048 - 600, 2048 + 700)
        assert emulator.read_register(servo_id, 11, 2) == joint.range_max_ticks
    path = tmp_path / "so100.yaml"
    result.with_convention(offsets_rad=[0.0, 1.0, 0, 0, 0, 0]).save(path)

    parameters = {"port": emulator.port, "calibration": str(path), **TIMING}
    arm = build_driver("so100", JOINTS, parameters)
    assert isinstance(arm, So100Driver) and not arm.warnings
    emulator.set_positions({i: 1500.0 + 100 * i for i in IDS})  # back to the mid pose
    arm.connect()
    try:
        assert arm.read().positions == pytest.approx([0.0, 1.0, 0, 0, 0, 0], abs=RAD_PER_TICK)
        arm.enable()
        arm.write(np.array([5.0, 1.0, 0, 0, 0, 0]))  # beyond the range: clamped
        assert wait_until(lambda: abs(emulator.positions()[1] - (1600 + 700)) < 2)
    finally:
        arm.disconnect()


def test_connect_rewrites_a_calibration_the_servos_lost(
    emulator: ServoBusEmulator, tmp_path: Path
) -> None:
    path = tmp_path / "so100.yaml"
    ArmCalibration.identity(JOINTS, IDS).save(path)
    text = path.read_text().replace("homing_offset_ticks: 0", "homing_offset_ticks: -100", 1)
    path.write_text(text)
    parameters = {"port": emulator.port, "calibration": str(path), **TIMING}
    arm = build_driver("so100", JOINTS, parameters)
    arm.connect()
    arm.disconnect()
    assert emulator.read_register(1, 31, 2) == 100 | 1 << 11  # sign-magnitude −100


def test_calibrate_command_with_scripted_operator(
    emulator: ServoBusEmulator, tmp_path: Path
) -> None:
    parser = calibrate_parser()
    output = tmp_path / "arm.yaml"
    args = parser.parse_args(
        [
            "--port",
            emulator.port,
            "--output",
            str(output),
            "--signs",
            "1",
            "-1",
            "1",
            "1",
            "1",
            "1",
        ]
    )
    said: list[str] = []
    code = calibrate.run(
        args, ask=lambda _: "", say=said.append, sweep=sweep_through(emulator, 1000, 3000)
    )
    assert code == 0, said
    written = ArmCalibration.load(output)
    assert [j.sign for j in written.joints] == [1, -1, 1, 1, 1, 1]
    assert written["elbow_flex"].range_min_ticks == 1000 and written.role == "follower"
    # A recalibration without --signs keeps the file's convention.
    args = parser.parse_args(["--port", emulator.port, "--output", str(output), "--leader"])
    assert (
        calibrate.run(
            args, ask=lambda _: "", say=said.append, sweep=sweep_through(emulator, 1200, 2900)
        )
        == 0
    )
    again = ArmCalibration.load(output)
    assert [j.sign for j in again.joints] == [1, -1, 1, 1, 1, 1] and again.role == "leader"


def test_interactive_sweep_samples_until_enter(emulator: ServoBusEmulator, tmp_path: Path) -> None:
    def operator(prompt: str) -> str:
        if "whole range" in prompt:  # move the joints by hand, then press Enter
            for raw in (1800.0, 1200.0, 2600.0, 2048.0):
                emulator.set_positions(dict.fromkeys(IDS, raw))
                time.sleep(0.1)
        return ""

    args = calibrate_parser().parse_args(
        ["--port", emulator.port, "--output", str(tmp_path / "a.yaml")]
    )
    assert calibrate.run(args, ask=operator, say=lambda _: None) == 0
    recorded = ArmCalibration.load(tmp_path / "a.yaml")["shoulder_pan"]
    assert (recorded.range_min_ticks, recorded.range_max_ticks) == (1200, 2600)


def test_calibrate_command_rejects_an_unswept_joint(
    emulator: ServoBusEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = calibrate_parser()
    args = parser.parse_args(["--port", emulator.port, "--output", str(tmp_path / "x.yaml")])
    assert calibrate.run(args, ask=lambda _: "", say=lambda _: None, sweep=lambda p: None) == 1
    assert "barely moved" in capsys.readouterr().err
    assert not (tmp_path / "x.yaml").exists()


def test_bimanual_is_two_arms_on_two_buses() -> None:
    names = tuple(f"left_{n}" for n in JOINTS) + tuple(f"right_{n}" for n in JOINTS)
    with ServoBusEmulator(IDS) as left, ServoBusEmulator(IDS) as right:
        parameters = {"arms": [{"port": left.port}, {"port": right.port}], **TIMING}
        arms = build_driver("so100", names, parameters)
        assert isinstance(arms, MultiArmDriver)
        arms.connect()
        try:
            arms.enable()
            target = np.concatenate([np.full(6, 0.3), np.full(6, -0.3)])
            arms.write(target)
            assert wait_until(
                lambda: bool(np.allclose(arms.read().positions, target, atol=2 * RAD_PER_TICK))
            )
            assert left.positions()[1] > 2048 > right.positions()[1]
        finally:
            arms.disconnect()


def test_dynamixel_leader_arm_read_through_dynamixel_bus() -> None:
    pytest.importorskip("dynamixel_sdk")
    leader_ids = [1, 2, 3, 4, 5, 6, 7]
    with DynamixelBusEmulator(leader_ids) as emulator:
        emulator.set_positions({i: 1000.0 * i for i in leader_ids})  # id 7: a second turn
        bus = DynamixelBus(emulator.port, leader_ids, **TIMING)
        assert bus.open() == dict.fromkeys(leader_ids, 1200)  # XL330-M288
        try:
            bus.configure()
            assert emulator.read_register(3, 9, 1) == 0
            bus.write_register(2, bus.homing_offset, -500)
            positions = bus.sync_read_positions()
            assert list(positions) == [1000, 1500, 3000, 4000, 5000, 6000, 7000]
            bus.set_torque(True)
            bus.sync_write_positions([2048] * 7)
            assert wait_until(lambda: abs(emulator.positions()[1] - 2048) < 2)
            with pytest.raises(DriverError, match="Writing or Reading is not available"):
                bus.write_register(1, bus.homing_offset, 0)  # EEPROM while torque is on
            bus.set_torque(False)
            emulator.set_faults(drop_probability=1.0)
            with pytest.raises(DriverTimeout, match="sync read"):
                bus.sync_read_positions()
        finally:
            bus.close()


def test_dynamixel_leader_calibration(tmp_path: Path) -> None:
    with DynamixelBusEmulator(IDS) as emulator:
        emulator.set_positions({i: 5000.0 for i in IDS})
        parser = calibrate_parser()
        args = parser.parse_args(
            [
                "--port",
                emulator.port,
                "--bus",
                "dynamixel",
                "--leader",
                "--output",
                str(tmp_path / "l.yaml"),
            ]
        )

        def sweep(procedure: CalibrationProcedure) -> None:
            for raw in (4500.0, 5600.0):
                emulator.set_positions(dict.fromkeys(IDS, raw))
                procedure.sample()

        assert calibrate.run(args, ask=lambda _: "", say=lambda _: None, sweep=sweep) == 0
        leader = ArmCalibration.load(tmp_path / "l.yaml")
        assert leader.bus == "dynamixel" and leader.role == "leader"
        assert leader["shoulder_pan"].homing_offset_ticks == 2048 - 5000
        assert (leader["gripper"].range_min_ticks, leader["gripper"].range_max_ticks) == (
            1548,
            2648,
        )


def test_emulator_as_a_separate_process(tmp_path: Path) -> None:
    link = tmp_path / "so100_follower"
    process = subprocess.Popen(
        [sys.executable, "-m", "vla_runtime.drivers.emulators.servo_bus", "--protocol", "feetech",
         "--ids", *map(str, IDS), "--link", str(link)],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert str(link) in banner and link.is_symlink(), banner
        arm = build_driver("so100", JOINTS, {"port": str(link), **TIMING})
        arm.connect()
        try:
            arm.enable()
            target = np.array([0.2, 0.1, -0.1, 0.0, 0.4, 0.3])
            arm.write(target)
            assert wait_until(
                lambda: bool(np.allclose(arm.read().positions, target, atol=2 * RAD_PER_TICK))
            )
        finally:
            arm.disconnect()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
        assert not os.path.lexists(link)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
