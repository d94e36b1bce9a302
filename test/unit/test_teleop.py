"""Teleop sources and the teleop loop: registry, leader → follower mapping, keyboard jogging from
a fed stream, and the loop's latest-value-wins pacing and retries (fakes of the interfaces only;
the leader buses themselves are exercised against their emulators in the integration tier)."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from vla_runtime.drivers.base import ArmDriver, DriverError, DriverTimeout, JointReading
from vla_runtime.drivers.so100.calibration import RAD_PER_TICK
from vla_runtime.drivers.teleop import (
    TELEOP_SOURCES,
    DynamixelLeader,
    JointMapping,
    KeyboardJog,
    LeaderArm,
    TeleopConfig,
    TeleopConfigError,
    TeleopLoop,
    TeleopReading,
    TeleopSource,
    build_teleop_source,
)

SO100 = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
FRANKA = (*(f"fr3_joint{i}" for i in range(1, 8)), "fr3_finger_joint1")
FRANKA_READY = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785, 0.02]


def so100_parameters(**extra: object) -> dict[str, object]:
    return {"embodiment": "so100", "joint_names": list(SO100), **extra}


def build(parameters: dict[str, object]) -> TeleopSource:
    return build_teleop_source(TeleopConfig.from_parameters(parameters), parameters)


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


# -- registry and configuration ------------------------------------------------------------------


def test_registry_names_the_sources_and_suggests_on_a_typo() -> None:
    assert set(TELEOP_SOURCES) == {"leader_arm", "dynamixel_leader", "keyboard"}
    with pytest.raises(TeleopConfigError, match=r"known: .*keyboard.*Did you mean 'leader_arm'"):
        build(so100_parameters(source="leader_armm"))


def test_the_follower_file_is_required_and_the_rate_checked() -> None:
    with pytest.raises(TeleopConfigError, match=r"joint_names.*--params-file"):
        TeleopConfig.from_parameters({"embodiment": "so100"})
    with pytest.raises(TeleopConfigError, match=r"rate_hz 0.0"):
        TeleopConfig.from_parameters(so100_parameters(rate_hz=0.0))


def test_leader_arm_builds_the_followers_driver_stack_from_leader_parameters() -> None:
    source = build(
        so100_parameters(
            **{
                "leader.driver.port": "/dev/ttyACM1",
                "leader.driver.ids": [11, 12, 13, 14, 15, 16],
                "leader.scale": [1.0, -1.0, 1.0, 1.0, 1.0, 2.0],
                "leader.offset": 0.1,
            }
        )
    )
    assert isinstance(source, LeaderArm)
    assert source.joint_names == SO100
    assert source.driver.joint_names == SO100
    assert np.array_equal(source.mapping.scale, [1, -1, 1, 1, 1, 2])
    assert np.array_equal(source.mapping.offset, np.full(6, 0.1))
    assert any("identity calibration" in warning for warning in source.warnings)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"leader.scal": [1.0] * 6},
            "unknown parameter 'leader.scal'.*Did you mean 'leader.scale'",
        ),
        ({"leader.offset": [0.0] * 5}, "leader.offset needs 6 finite values.*shoulder_pan"),
        ({"leader.driver.portt": "/dev/x"}, "leader_arm: so100: unknown driver parameter 'portt'"),
        ({"leader.embodiment": "frank"}, "leader.joint_names"),
    ],
)
def test_leader_arm_parameter_mistakes_say_what_to_change(
    extra: dict[str, object], message: str
) -> None:
    parameters = so100_parameters(**{"leader.driver.port": "/dev/ttyACM1", **extra})
    with pytest.raises(TeleopConfigError, match=message):
        build(parameters)


def test_leader_arm_without_a_bus_is_a_config_error() -> None:
    with pytest.raises(TeleopConfigError, match=r"no leader\.driver\.\* parameters"):
        build(so100_parameters())


def test_unknown_leader_embodiment_is_reported_with_the_known_ones() -> None:
    parameters = so100_parameters(
        **{"leader.embodiment": "so10", "leader.joint_names": list(SO100), "leader.driver.x": 1}
    )
    with pytest.raises(
        TeleopConfigError, match=r"unknown embodiment 'so10'.*Did you mean 'so100'"
    ):
        build(parameters)


# -- mapping --------------------------------------------------------------------------------------


class FakeArm(ArmDriver):
    """An ArmDriver (the interface) that records its lifecycle calls."""

    def __init__(self, positions: list[float]) -> None:
        self.positions = np.array(positions)
        self.calls: list[str] = []

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(f"leader_{i}" for i in range(len(self.positions)))

    def connect(self) -> None:
        self.calls.append("connect")

    def enable(self) -> None:
        self.calls.append("enable")

    def disable(self) -> None:
        self.calls.append("disable")

    def read(self) -> JointReading:
        return JointReading(self.positions.copy())

    def write(self, positions: np.ndarray) -> None:
        raise AssertionError("a leader is never commanded")

    def disconnect(self) -> None:
        self.calls.append("disconnect")


def test_leader_arm_connects_with_torque_off_and_maps_each_joint() -> None:
    arm = FakeArm([0.1, 0.2, -0.3])
    mapping = JointMapping.from_parameters(
        ("a", "b", "c"), {"scale": [1.0, -1.0, 0.5], "offset": [0.0, 0.05, 0.01]}
    )
    leader = LeaderArm(arm, ("a", "b", "c"), mapping)
    leader.connect()
    assert arm.calls == ["connect", "disable"]  # never enabled: free to move by hand
    assert leader.read() == pytest.approx([0.1, -0.15, -0.14])
    leader.disconnect()
    assert arm.calls[-1] == "disconnect"


def test_a_damped_leader_is_enabled_once_so_that_disable_can_damp() -> None:
    arm = FakeArm([0.0, 0.0, 0.0])
    leader = LeaderArm(arm, ("a", "b", "c"), JointMapping(np.ones(3), np.zeros(3)), damped=True)
    leader.connect()
    assert arm.calls == ["connect", "enable", "disable"]
    parameters = so100_parameters(**{"leader.driver.port": "/dev/x", "leader.damped": "yes"})
    with pytest.raises(TeleopConfigError, match=r"leader.damped must be true or false"):
        build(parameters)


def test_leader_and_follower_must_have_the_same_joint_count() -> None:
    with pytest.raises(TeleopConfigError, match=r"3 joints.*follower 2"):
        LeaderArm(FakeArm([0.0] * 3), ("a", "b"), JointMapping(np.ones(2), np.zeros(2)))


def test_dynamixel_leader_folds_signs_into_the_mapping() -> None:
    source = build(
        so100_parameters(
            source="dynamixel_leader",
            **{
                "leader.port": "/dev/ttyUSB0",
                "leader.ids": [1, 2, 3, 4, 5, 6],
                "leader.signs": [1, -1, 1, -1, 1, 1],
                "leader.offset": [0.0, 1.5708, 0.0, 0.0, 0.0, 0.2],
            },
        )
    )
    assert isinstance(source, DynamixelLeader)
    assert source.bus.baudrate == 57_600  # GELLO's XL330 factory rate
    assert np.array_equal(source.mapping.scale, [1, -1, 1, -1, 1, 1])
    # 2048 + 100 ticks on a negative joint: offset − 100 ticks.
    ticks = np.array([2048, 2148, 2048, 2048, 2048, 2048]) - 2048
    assert source.mapping.apply(ticks * RAD_PER_TICK)[1] == pytest.approx(
        1.5708 - 100 * RAD_PER_TICK
    )


def test_dynamixel_leader_rejects_signs_other_than_one() -> None:
    parameters = so100_parameters(
        source="dynamixel_leader",
        **{"leader.port": "/dev/x", "leader.ids": [1, 2, 3, 4, 5, 6], "leader.signs": 0.5},
    )
    with pytest.raises(TeleopConfigError, match=r"leader.signs must be 1 or -1"):
        build(parameters)


# -- keyboard -------------------------------------------------------------------------------------


def franka_keyboard(**keyboard: object) -> TeleopSource:
    parameters = {"embodiment": "franka", "joint_names": list(FRANKA), "source": "keyboard"}
    return build({**parameters, **{f"keyboard.{k}": v for k, v in keyboard.items()}})


def test_keyboard_jogs_the_selected_joint_from_a_fed_stream() -> None:
    ready = np.array(FRANKA_READY)
    source = KeyboardJog(FRANKA, ready, np.full(8, 0.05), io.StringIO("2++4-"))
    source.connect()
    expected = ready.copy()
    expected[1] += 0.10
    expected[3] -= 0.05
    assert source.read() == pytest.approx(expected)
    assert source.read() == pytest.approx(expected)  # no new keys, no motion
    assert "select joint" in source.instructions


def test_keyboard_ignores_other_keys_and_resets_to_the_start_pose() -> None:
    ready = np.array(FRANKA_READY)
    stream = io.StringIO("9x+8++")  # no joint 9 on a Franka: joint 1 stays selected
    source = KeyboardJog(FRANKA, ready, np.array([0.1] * 7 + [0.005]), stream)
    source.connect()
    pose = source.read()
    assert pose[0] == pytest.approx(ready[0] + 0.1)
    assert pose[7] == pytest.approx(ready[7] + 0.01)  # the finger's own step [m]
    typed = stream.tell()
    stream.write("r")
    stream.seek(typed)
    assert source.read() == pytest.approx(ready)


def test_keyboard_reads_a_pipe_without_blocking_and_survives_its_end() -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "r") as stream:
        source = KeyboardJog(FRANKA, np.array(FRANKA_READY), np.full(8, 0.05), stream)
        source.connect()
        assert source.read() == pytest.approx(FRANKA_READY)  # nothing typed: returns at once
        os.write(write_fd, b"3+")
        assert source.read()[2] == pytest.approx(FRANKA_READY[2] + 0.05)
        os.write(write_fd, b"+")
        os.close(write_fd)
        assert source.read()[2] == pytest.approx(FRANKA_READY[2] + 0.10)
        assert source.read()[2] == pytest.approx(FRANKA_READY[2] + 0.10)  # EOF: pose stays
        source.disconnect()


def test_keyboard_builder_takes_a_start_pose_and_steps_per_joint() -> None:
    source = franka_keyboard(start_pose=FRANKA_READY, step=[0.05] * 7 + [0.005])
    assert isinstance(source, KeyboardJog)
    assert np.array_equal(source.pose, FRANKA_READY) and source.step[7] == 0.005
    with pytest.raises(TeleopConfigError, match=r"keyboard.start_pose is missing.*fr3_joint1"):
        franka_keyboard(step=0.05)
    with pytest.raises(TeleopConfigError, match=r"keyboard.step must be > 0"):
        franka_keyboard(start_pose=FRANKA_READY, step=[0.05] * 7 + [0.0])
    with pytest.raises(TeleopConfigError, match=r"keyboard.start_pose needs 8 finite values"):
        franka_keyboard(start_pose=FRANKA_READY[:7])


# -- the loop -------------------------------------------------------------------------------------


class FakeSource(TeleopSource):
    """A TeleopSource (the interface): a settable pose and scripted failures."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pose = np.zeros(3)
        self.connect_failures = 0
        self.read_errors: list[Exception] = []
        self.connects = self.disconnects = 0

    @property
    def joint_names(self) -> tuple[str, ...]:
        return ("a", "b", "c")

    def connect(self) -> None:
        with self.lock:
            if self.connect_failures:
                self.connect_failures -= 1
                raise DriverError("cannot open /dev/fake_leader: no such device")
            self.connects += 1

    def read(self) -> np.ndarray:
        with self.lock:
            if self.read_errors:
                raise self.read_errors.pop(0)
            return self.pose.copy()

    def disconnect(self) -> None:
        with self.lock:
            self.disconnects += 1

    def move(self, value: float) -> None:
        with self.lock:
            self.pose = np.full(3, value)


class Recorder:
    def __init__(self, on_reading: Callable[[TeleopReading], None] | None = None) -> None:
        self.readings: list[tuple[float, TeleopReading]] = []
        self.errors: list[str] = []
        self._hook = on_reading

    def reading(self, reading: TeleopReading) -> None:
        self.readings.append((time.monotonic(), reading))
        if self._hook is not None:
            self._hook(reading)


def test_loop_hands_over_the_newest_reading_never_a_backlog() -> None:
    source = FakeSource()
    stuck = threading.Event()
    release = threading.Event()

    def slow_consumer(reading: TeleopReading) -> None:
        if reading.index == 0:  # the first consumer call blocks for several periods
            stuck.set()
            release.wait(5.0)

    record = Recorder(slow_consumer)
    period_s = 0.02
    loop = TeleopLoop(source, 1.0 / period_s, record.reading, record.errors.append)
    loop.start()
    try:
        assert stuck.wait(5.0)
        for value in range(1, 11):  # the leader moves on while the consumer is stuck
            source.move(float(value))
        time.sleep(5 * period_s)
        released = time.monotonic()
        release.set()
        wait_until(lambda: len(record.readings) >= 4)
    finally:
        loop.stop()
    values = [reading.positions[0] for _, reading in record.readings]
    assert values[0] == 0.0 and values[1] == 10.0  # the newest pose, not 1, 2, 3, ...
    # Missed ticks are skipped, not caught up in a burst: at most two reads in 1.5 periods.
    burst = [t for t, _ in record.readings if released <= t <= released + 1.5 * period_s]
    assert len(burst) <= 2
    assert loop.rate.overruns >= 1
    latest = loop.latest()
    assert latest is not None and latest.index == len(record.readings) - 1
    assert record.errors == []


def test_loop_retries_an_absent_device_and_reports_it_once() -> None:
    source = FakeSource()
    source.connect_failures = 3
    record = Recorder()
    loop = TeleopLoop(source, 100.0, record.reading, record.errors.append, retry_s=(0.01, 0.02))
    assert loop.diagnostics()[0] == "ERROR"
    loop.start()
    try:
        wait_until(lambda: len(record.readings) >= 3)
        level, _, values = loop.diagnostics()
    finally:
        loop.stop()
    assert record.errors == ["cannot connect: cannot open /dev/fake_leader: no such device"]
    status = loop.status()
    assert status.errors == 3 and status.reconnects == 0 and source.connects == 1
    assert level == "OK" and values["errors"] == "3" and "fake_leader" in values["last_error"]
    assert source.disconnects == 3 + 1  # after each failed attempt, and at stop()


def test_loop_reopens_a_vanished_device_and_reads_on() -> None:
    source = FakeSource()
    record = Recorder()
    loop = TeleopLoop(source, 200.0, record.reading, record.errors.append, retry_s=(0.01,))
    loop.start()
    try:
        wait_until(lambda: len(record.readings) >= 3)
        with source.lock:
            source.read_errors.append(DriverError("/dev/fake_leader: serial device lost"))
        wait_until(lambda: loop.status().reconnects == 1)
        before = len(record.readings)
        wait_until(lambda: len(record.readings) >= before + 3)
    finally:
        loop.stop()
    assert record.errors == ["read failed: /dev/fake_leader: serial device lost"]
    assert source.connects == 2 and source.disconnects == 2


def test_loop_rides_out_single_timeouts_without_reconnecting() -> None:
    source = FakeSource()
    record = Recorder()
    loop = TeleopLoop(source, 200.0, record.reading, record.errors.append, retry_s=(0.01,))
    loop.start()
    try:
        wait_until(lambda: len(record.readings) >= 2)
        timeout = DriverTimeout("/dev/fake_leader: sync read failed after 3 attempts")
        with source.lock:
            source.read_errors.extend([timeout, timeout])
        wait_until(lambda: loop.status().errors == 2)
        before = len(record.readings)
        wait_until(lambda: len(record.readings) >= before + 2)
        # After a good read the same fault is news again.
        with source.lock:
            source.read_errors.append(timeout)
        wait_until(lambda: len(record.errors) == 2)
    finally:
        loop.stop()
    assert loop.status().reconnects == 0 and source.connects == 1
    assert record.errors == [f"read failed: {timeout}"] * 2


def test_loop_warns_while_reads_time_out_and_reopens_the_bus_when_they_persist() -> None:
    class Silent(FakeSource):
        def read(self) -> np.ndarray:
            raise DriverTimeout("/dev/fake_leader: no status packet")

    source = Silent()
    record = Recorder()
    loop = TeleopLoop(source, 10.0, record.reading, record.errors.append, retry_s=(0.01,))
    loop.start()
    try:
        wait_until(lambda: loop.status().errors >= 1)
        level, message, _ = loop.diagnostics()  # 5 timeouts (0.5 s) before the bus is reopened
        wait_until(lambda: source.connects >= 2)
    finally:
        loop.stop()
    assert level == "WARN" and message == "read failed: /dev/fake_leader: no status packet"
    assert source.disconnects >= 1 and record.readings == []
    assert record.errors == ["read failed: /dev/fake_leader: no status packet"]


def test_loop_survives_a_source_raising_something_else_than_driver_errors() -> None:
    source = FakeSource()
    record = Recorder()
    loop = TeleopLoop(source, 200.0, record.reading, record.errors.append, retry_s=(0.01,))
    loop.start()
    try:
        wait_until(lambda: len(record.readings) >= 2)
        with source.lock:  # e.g. scservo_sdk indexing a garbled status packet
            source.read_errors.append(IndexError("list index out of range"))
        wait_until(lambda: loop.status().reconnects == 1)
        before = len(record.readings)
        wait_until(lambda: len(record.readings) > before)
    finally:
        loop.stop()
    assert record.errors == ["read failed: IndexError: list index out of range"]


def test_loop_drops_readings_of_the_wrong_length() -> None:
    class Short(FakeSource):
        def read(self) -> np.ndarray:
            return np.zeros(2)

    record = Recorder()
    loop = TeleopLoop(Short(), 200.0, record.reading, record.errors.append)
    loop.start()
    try:
        wait_until(lambda: bool(record.errors))
    finally:
        loop.stop()
    assert record.readings == [] and "not one per joint" in record.errors[0]
