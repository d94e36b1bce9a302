"""The YAM driver against emulated Damiao motors: python-can `virtual` in one process, and SLCAN
over a pseudo-terminal to the emulator running as its own process (the real client code on both
sides; nothing of ours is patched)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import can
import numpy as np
import pytest
from graph_helpers import child_env

from vla_runtime.drivers.base import DriverError, DriverTimeout, MultiArmDriver
from vla_runtime.drivers.emulators.damiao import DamiaoMotorSet, EmulatedMotor
from vla_runtime.drivers.registry import build_driver
from vla_runtime.drivers.yam.damiao import MotorFeedback, MotorState, encode_feedback, motor_model
from vla_runtime.drivers.yam.driver import MotorFault, YamArm, YamConfig

pytestmark = pytest.mark.integration

IDS = (1, 2, 3, 4, 5, 6, 7)
MODELS = ("DM4340",) * 3 + ("DM4310",) * 4
NAMES = (*(f"joint{i}" for i in range(1, 7)), "gripper")
START_RAD = (0.1, -0.2, 0.3, -0.1, 0.2, -0.3, 3.285)  # gripper motor half open (of 6.57 rad)
TARGET = np.array([0.4, 0.2, -0.1, 0.3, -0.2, 0.1, 0.03])  # gripper 0.03 m of 0.04695 m
# Generous deadlines: the tests assert behaviour on a loaded 2-core CI machine, not timing.
TEST_TIMING = {"feedback_timeout_s": 0.05, "setup_timeout_s": 0.2}


def arm_config(interface: str, channel: str) -> YamConfig:
    return YamConfig(
        interface=interface, channel=channel, feedback_timeout_s=0.05, setup_timeout_s=0.2
    )


def motor_set(**options: Any) -> DamiaoMotorSet:
    specs = [
        EmulatedMotor(motor_id, model, initial_position_rad=start)
        for motor_id, model, start in zip(IDS, MODELS, START_RAD, strict=True)
    ]
    return DamiaoMotorSet(specs, **options)


def follow(arm: YamArm | MultiArmDriver, target: np.ndarray, timeout_s: float = 5.0) -> None:
    """Write `target` at about 250 Hz until the measured joints reach it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        arm.write(target)
        if np.allclose(arm.read().positions, target, atol=2e-3):
            return
        time.sleep(0.004)
    raise AssertionError(f"joints {arm.read().positions} never reached {target}")


@pytest.fixture
def channel() -> str:
    return f"yam-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def motors(channel: str) -> Iterator[DamiaoMotorSet]:
    with motor_set() as emulated:
        emulated.attach(can.Bus(interface="virtual", channel=channel))
        yield emulated


@pytest.fixture
def arm(channel: str, motors: DamiaoMotorSet) -> Iterator[YamArm]:
    driver = YamArm(NAMES, arm_config("virtual", channel))
    yield driver
    driver.disconnect()


def test_connect_reads_every_motor_without_commanding_it(
    arm: YamArm, motors: DamiaoMotorSet
) -> None:
    arm.connect()
    reading = arm.read()
    assert reading.positions[:6] == pytest.approx(START_RAD[:6], abs=1e-3)
    assert reading.positions[6] == pytest.approx(0.04695 / 2, abs=1e-4)  # metres of finger travel
    assert reading.velocities is not None and reading.efforts is not None
    assert reading.stamp_ns > 0
    for motor_id in IDS:
        snapshot = motors.snapshot(motor_id)
        assert (snapshot.state, snapshot.commands_received) == (MotorState.DISABLED, 0)


def test_enable_holds_then_the_arm_follows_targets(arm: YamArm, motors: DamiaoMotorSet) -> None:
    arm.connect()
    arm.enable()
    assert all(motors.snapshot(i).state == MotorState.ENABLED for i in IDS)
    held = motors.snapshot(2).command
    assert held is not None and held.kp == pytest.approx(80.0, abs=0.2)
    assert held.position_rad == pytest.approx(START_RAD[1], abs=1e-3)

    follow(arm, TARGET)

    # The emulator agrees, and the gripper's metres became the gripper motor's angle.
    assert motors.positions()[:6] == pytest.approx(TARGET[:6], abs=5e-3)
    assert motors.positions()[6] == pytest.approx(6.57 * 0.03 / 0.04695, abs=5e-3)
    wrist = motors.snapshot(5).command
    assert wrist is not None
    assert (wrist.kp, wrist.kd) == pytest.approx((10.0, 1.5), abs=0.2)


def test_stale_feedback_in_the_queue_never_shows(
    arm: YamArm, motors: DamiaoMotorSet, channel: str
) -> None:
    arm.connect()
    arm.enable()
    follow(arm, TARGET)
    # Another node floods the bus with old answers (a lagging queue): a FIFO reader would
    # report them for the next hundred ticks; latest-value-wins reports the motors' answer now.
    with can.Bus(interface="virtual", channel=channel) as flood:
        for _ in range(100):
            for motor_id, model in zip(IDS, MODELS, strict=True):
                stale = MotorFeedback(motor_id, MotorState.ENABLED, -3.0, 0.0, 0.0)
                data = encode_feedback(stale, motor_model(model))
                flood.send(can.Message(arbitration_id=0x10 + motor_id, data=data))
        arm.write(TARGET)
        assert arm.read().positions == pytest.approx(TARGET, abs=5e-3)


def test_late_and_dropped_answers_time_out_without_lagging_later_ticks(
    arm: YamArm, motors: DamiaoMotorSet
) -> None:
    arm.connect()
    arm.enable()
    motors.response_latency_s = 0.1  # twice the tick's deadline
    with pytest.raises(DriverTimeout):
        arm.write(TARGET)
    time.sleep(0.15)  # the late answers are queued by now
    motors.response_latency_s = 0.0
    follow(arm, TARGET)

    motors.drop_probability = 1.0
    with pytest.raises(DriverTimeout, match=r"motors 1 \(0x01\), 2 .* 7 \(0x07\)"):
        arm.write(TARGET)
    motors.drop_probability = 0.0
    arm.write(TARGET)


def test_watchdog_damps_after_400_ms_without_commands(arm: YamArm, motors: DamiaoMotorSet) -> None:
    arm.connect()
    arm.enable()
    for _ in range(5):  # commands every 150 ms keep the watchdog quiet
        arm.write(TARGET)
        time.sleep(0.15)
    assert not motors.snapshot(1).damping

    time.sleep(0.5)
    snapshot = motors.snapshot(1)
    assert snapshot.damping and snapshot.state == MotorState.COMMUNICATION_LOST
    with pytest.raises(MotorFault, match=r"communication lost.*call enable") as fault:
        arm.write(TARGET)
    assert set(fault.value.states) == set(IDS)

    arm.enable()  # clears the error and re-enables
    assert all(motors.snapshot(i).state == MotorState.ENABLED for i in IDS)
    follow(arm, TARGET * 0.5)


def test_a_missing_motor_is_named_by_connect_and_by_a_tick(
    arm: YamArm, motors: DamiaoMotorSet
) -> None:
    motors.missing_ids = frozenset({5})
    with pytest.raises(DriverTimeout, match=r"motor 5 \(0x05\).*0x015") as timeout:
        arm.connect()
    assert getattr(timeout.value, "motor_ids", None) == (5,)

    motors.missing_ids = frozenset()
    arm.connect()
    arm.enable()
    motors.missing_ids = frozenset({3})
    with pytest.raises(DriverTimeout, match=r"motor 3 \(0x03\)") as timeout:
        arm.write(TARGET)
    assert getattr(timeout.value, "motor_ids", None) == (3,)


def test_a_silent_bus_becomes_a_driver_error(arm: YamArm, motors: DamiaoMotorSet) -> None:
    arm.connect()
    arm.enable()
    motors.bus_off = True
    for _ in range(2):  # one silent tick can be jitter
        with pytest.raises(DriverTimeout):
            arm.write(TARGET)
    with pytest.raises(DriverError, match=r"no motor answered.*bus is off") as error:
        arm.write(TARGET)
    assert not isinstance(error.value, DriverTimeout)


def test_disable_damps_and_write_needs_enable_again(arm: YamArm, motors: DamiaoMotorSet) -> None:
    arm.connect()
    arm.enable()
    follow(arm, TARGET)
    arm.disable()
    for index, motor_id in enumerate(IDS):
        command = motors.snapshot(motor_id).command
        assert command is not None and command.kp == 0.0
        assert command.kd == pytest.approx(arm.config.kd[index], abs=0.01)
    assert arm.read().positions.shape == (7,)  # read still works: refresh frames
    with pytest.raises(DriverError, match="before enable"):
        arm.write(TARGET)
    with pytest.raises(ValueError, match="7 finite positions"):
        arm.write(np.full(7, np.nan))
    time.sleep(0.5)  # the watchdog takes over the damping ...
    assert motors.snapshot(1).damping
    arm.enable()  # ... and enable() clears it
    follow(arm, TARGET * 0.5)


def test_a_world_steps_the_joints(channel: str) -> None:
    with motor_set(internal_physics=False) as world_motors:
        world_motors.attach(can.Bus(interface="virtual", channel=channel))
        driver = YamArm(NAMES, arm_config("virtual", channel))
        try:
            driver.connect()
            driver.enable()
            driver.write(TARGET)
            time.sleep(0.05)
            assert world_motors.positions() == pytest.approx(START_RAD)  # nobody stepped
            assert world_motors.torques()[0] == pytest.approx(
                80.0 * (TARGET[0] - START_RAD[0]), rel=0.01
            )
            for _ in range(300):  # 3 s of simulated time
                driver.write(TARGET)
                world_motors.step(0.01)
            assert driver.read().positions == pytest.approx(TARGET, abs=5e-3)
            world_motors.set_positions([0.0] * 7)  # a world that integrates on its own
            driver.write(TARGET)
            assert driver.read().positions[:6] == pytest.approx(np.zeros(6), abs=1e-3)
        finally:
            driver.disconnect()


def test_unopenable_channel_names_interface_channel_and_the_fix() -> None:
    driver = YamArm(NAMES, YamConfig(interface="socketcan", channel="can_nonexistent"))
    with pytest.raises(DriverError, match="socketcan:can_nonexistent") as error:
        driver.connect()
    assert "sudo ip link set can_nonexistent up type can bitrate 1000000" in str(error.value)
    driver.disconnect()


def test_bimanual_is_two_arms_on_two_channels() -> None:
    left, right = (f"yam-{side}-{uuid.uuid4().hex[:6]}" for side in ("l", "r"))
    names = tuple(f"left_{n}" for n in NAMES) + tuple(f"right_{n}" for n in NAMES)
    parameters = {"interface": "virtual", **TEST_TIMING, "arms.left.channel": left}
    parameters["arms.right.channel"] = right
    with motor_set() as left_motors, motor_set() as right_motors:
        left_motors.attach(can.Bus(interface="virtual", channel=left))
        right_motors.attach(can.Bus(interface="virtual", channel=right))
        driver = build_driver("yam_bimanual", names, parameters)
        assert isinstance(driver, MultiArmDriver) and driver.joint_names == names
        try:
            driver.connect()
            driver.enable()
            target = np.concatenate([TARGET, TARGET * -0.5])
            target[13] = 0.01
            follow(driver, target)
            assert left_motors.positions()[:6] == pytest.approx(TARGET[:6], abs=5e-3)
            assert right_motors.positions()[:6] == pytest.approx(-0.5 * TARGET[:6], abs=5e-3)
        finally:
            driver.disconnect()


def test_build_takes_an_arms_list_with_shared_defaults() -> None:
    driver = build_driver(
        "yam_bimanual",
        tuple(f"j{i}" for i in range(14)),
        {"kp": [50.0] * 7, "arms": [{"channel": "can_follower_l"}, {"channel": "can_follower_r"}]},
    )
    assert isinstance(driver, MultiArmDriver)
    configs = [arm.config for arm in driver.arms if isinstance(arm, YamArm)]
    assert [c.channel for c in configs] == ["can_follower_l", "can_follower_r"]
    assert all(c.kp == (50.0,) * 7 and c.interface == "socketcan" for c in configs)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"ids": [1, 2, 3]}, "models has 7 entries but ids has 3"),
        ({"kp": [80.0] * 6 + [600.0]}, "kp 0..500"),
        ({"models": ["DM4340"] * 6 + ["DM9999"]}, "unknown Damiao motor model 'DM9999'"),
        ({"gripper_id": 9}, "gripper_id 9 is not one of ids"),
        ({"chanel": "can0"}, "Did you mean 'channel'"),
    ],
)
def test_config_errors_say_what_to_change(parameters: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        YamConfig.from_parameters(parameters)


# -- the emulator as its own process, over SLCAN on a pseudo-terminal ----------------------


class EmulatorProcess:
    """`python -m vla_runtime.drivers.emulators.damiao` with its output collected."""

    def __init__(self, link: Path, *extra: str) -> None:
        command = [sys.executable, "-m", "vla_runtime.drivers.emulators.damiao"]
        command += ["--slcan-link", str(link), "--ids", *map(str, IDS), "--models", *MODELS]
        command += ["--positions", *map(str, START_RAD), *extra]
        self.process = subprocess.Popen(
            command,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_for(self, needle: str, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(needle in line for line in self.lines):
                return
            time.sleep(0.01)
        raise AssertionError(f"emulator never printed {needle!r}:\n{''.join(self.lines)}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._reader.join(timeout=2)
        return code


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[tuple[EmulatorProcess, Path]]:
    link = tmp_path / "can_follower_l"
    emulator = EmulatorProcess(link)
    try:
        emulator.wait_for("ready")
        yield emulator, link
    finally:
        emulator.stop()


def test_slcan_driver_against_the_emulator_process(
    emulator_process: tuple[EmulatorProcess, Path],
) -> None:
    emulator, link = emulator_process
    driver = YamArm(NAMES, arm_config("slcan", str(link)))
    try:
        driver.connect()
        assert driver.read().positions[:6] == pytest.approx(START_RAD[:6], abs=1e-3)
        driver.enable()
        follow(driver, TARGET)

        time.sleep(0.6)  # no command for 400 ms: every motor damps
        emulator.wait_for("motor 7: no command for")
        with pytest.raises(MotorFault, match="communication lost"):
            driver.write(TARGET)
        driver.enable()
        follow(driver, TARGET * 0.5)

        emulator.process.send_signal(signal.SIGUSR1)  # bus off
        emulator.wait_for("bus off")
        with pytest.raises(DriverError, match="bus is off"):
            for _ in range(3):
                try:
                    driver.write(TARGET)
                except DriverTimeout:
                    continue
    finally:
        driver.disconnect()
    assert emulator.stop() == 0  # SIGINT: clean exit, link removed
    assert not link.exists()


def test_slcan_missing_motor_is_named(tmp_path: Path) -> None:
    link = tmp_path / "can_follower_r"
    emulator = EmulatorProcess(link, "--missing-ids", "6")
    driver = YamArm(NAMES, arm_config("slcan", str(link)))
    try:
        emulator.wait_for("ready")
        with pytest.raises(DriverTimeout, match=r"motor 6 \(0x06\)"):
            driver.connect()
    finally:
        driver.disconnect()
        assert emulator.stop() == 0
