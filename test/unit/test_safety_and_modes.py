"""The safety envelope and the mode machine, including property tests: whatever sequence of
chunks, teleop targets and mode requests arrives, no command step exceeds the limits."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_runtime.core.arm_control import ArmControlConfig, ArmController, Mode
from vla_runtime.core.chunk_executor import ActionChunk, ChunkExecutor, ChunkExecutorConfig
from vla_runtime.core.safety import EnvelopeLimits, SafetyEnvelope
from vla_runtime.drivers.base import JointReading
from vla_runtime.drivers.control_loop import DriverLoop
from vla_runtime.drivers.embodiment import EmbodimentConfig

JOINTS = ("j1", "j2", "gripper")
PERIOD_S = 0.005
S = 1_000_000_000
LIMITS = EnvelopeLimits.from_values(
    lower=[-2.0, -1.5, 0.0],
    upper=[2.0, 1.5, 1.0],
    max_velocity=[2.0, 2.0, 1.0],
    max_acceleration=[20.0, 20.0, 10.0],
)


def envelope() -> SafetyEnvelope:
    env = SafetyEnvelope(LIMITS, PERIOD_S)
    env.reset(np.zeros(3))
    return env


def test_far_target_becomes_a_limited_smooth_motion_without_overshoot() -> None:
    env = envelope()
    commands = [env.step(np.array([1.0, -1.0, 0.5])) for _ in range(600)]
    trajectory = np.array(commands)
    steps = np.diff(np.vstack([np.zeros(3), trajectory]), axis=0)
    assert np.all(np.abs(steps) <= env.max_step + 1e-12)
    velocity = steps / PERIOD_S
    assert np.all(np.abs(np.diff(velocity, axis=0)) <= LIMITS.max_acceleration * PERIOD_S + 1e-9)
    assert np.allclose(trajectory[-1], [1.0, -1.0, 0.5], atol=1e-6)
    assert trajectory[:, 0].max() <= 1.0 + 1e-9  # no overshoot


def test_targets_outside_the_position_limits_are_clipped() -> None:
    env = envelope()
    for _ in range(2000):
        command = env.step(np.array([10.0, -10.0, 5.0]))
    assert np.allclose(command, [2.0, -1.5, 1.0])


def test_bad_targets_are_refused() -> None:
    env = envelope()
    assert "NaN" in env.check(np.array([0.0, np.nan, 0.0]))
    assert "3 joint" in env.check(np.zeros(4))
    with pytest.raises(ValueError):
        env.step(np.array([np.inf, 0.0, 0.0]))
    with pytest.raises(RuntimeError, match="seeded"):
        SafetyEnvelope(LIMITS, PERIOD_S).step(np.zeros(3))


def test_limit_validation() -> None:
    with pytest.raises(ValueError, match="lower < upper"):
        EnvelopeLimits.from_values([1.0], [0.0], [1.0], [1.0])
    with pytest.raises(ValueError, match="> 0"):
        EnvelopeLimits.from_values([0.0], [1.0], [0.0], [1.0])


# -- the mode machine ------------------------------------------------------------------------


def controller(**config: float) -> ArmController:
    executor = ChunkExecutor(
        ChunkExecutorConfig(interpolation="linear", blend="crossfade"),  # type: ignore[arg-type]
        JOINTS,
        LIMITS.lower,
        LIMITS.upper,
    )
    arm = ArmController(ArmControlConfig(**config), executor, envelope())
    arm.activate(np.array([0.1, 0.0, 0.5]))
    return arm


def chunk_at(value: float, stamp_ns: int, rows: int = 30) -> ActionChunk:
    return ActionChunk.uniform(np.tile([value, 0.0, 0.5], (rows, 1)), 30.0, stamp_ns, JOINTS)


def test_activation_seeds_from_the_measured_pose() -> None:
    arm = controller()
    out = arm.tick(0, 0)
    assert out.mode == Mode.IDLE
    assert np.allclose(out.command, [0.1, 0.0, 0.5])


def test_engage_policy_requires_a_chunk_and_a_near_first_target() -> None:
    arm = controller(max_engage_distance=0.2)
    now = 100 * S
    refused = arm.engage_policy(now, now)
    assert not refused.success and "policy node" in refused.message
    arm.submit_chunk(chunk_at(1.5, now), now)
    far = arm.engage_policy(now, now)
    assert not far.success and "j1" in far.message and "teleop" in far.message
    near = controller(max_engage_distance=0.2)
    near.submit_chunk(chunk_at(0.2, now), now)
    assert near.engage_policy(now, now).success
    assert near.mode == Mode.POLICY


def test_watchdog_holds_when_the_chunk_runs_out_and_release_resumes() -> None:
    arm = controller()
    now = 100 * S
    arm.submit_chunk(chunk_at(0.1, now, rows=3), now)
    assert arm.engage_policy(now, now).success
    assert arm.tick(now, now).mode == Mode.POLICY
    later = now + S
    out = arm.tick(later, later)
    assert out.mode == Mode.HOLD and out.entered_hold and "watchdog" in out.hold_reason
    # Release without a fresh chunk: back to IDLE; with one: back to POLICY.
    arm.submit_chunk(chunk_at(0.1, later), later)
    assert "POLICY" in arm.release(later, later).message
    assert arm.mode == Mode.POLICY


def test_operator_hold_and_release_without_source_goes_idle() -> None:
    arm = controller()
    out_hold = arm.hold("operator")
    assert out_hold.success and arm.mode == Mode.HOLD
    tick = arm.tick(0, 0)
    assert tick.entered_hold and tick.hold_reason == "operator"
    assert "IDLE" in arm.release(0, 0).message


def test_teleop_handover_cross_fades_and_times_out() -> None:
    arm = controller(handover_s=0.5, teleop_timeout_s=0.1)
    assert not arm.engage_teleop(0).success
    assert arm.set_teleop_target(np.array([1.0, 0.5, 0.2]), 0) == ""
    assert arm.engage_teleop(0).success
    commands = []
    for i in range(1, 40):
        mono = int(i * PERIOD_S * S)
        arm.set_teleop_target(np.array([1.0, 0.5, 0.2]), mono)
        commands.append(arm.tick(mono, mono).command)
    trajectory = np.array(commands)
    assert np.all(np.abs(np.diff(trajectory, axis=0)) <= arm.envelope.max_step + 1e-12)
    stale = int(2 * S)
    out = arm.tick(stale, stale)
    assert out.mode == Mode.HOLD and "teleop" in out.hold_reason


def test_teleop_targets_outside_limits_are_rejected_and_counted() -> None:
    arm = controller()
    assert "outside" in arm.set_teleop_target(np.array([9.0, 0.0, 0.5]), 0)
    assert "NaN" in arm.set_teleop_target(np.array([np.nan, 0.0, 0.5]), 0)
    assert sum(arm.rejected_teleop.values()) == 2


# -- properties -----------------------------------------------------------------------------

finite = st.floats(min_value=-5.0, max_value=5.0, allow_nan=False)
weird = st.one_of(finite, st.just(float("nan")), st.just(float("inf")))
vector = st.lists(weird, min_size=3, max_size=3)
events = st.lists(
    st.one_of(
        st.tuples(
            st.just("chunk"),
            vector,
            st.integers(min_value=-400, max_value=400),
            st.integers(min_value=1, max_value=40),
        ),
        st.tuples(st.just("teleop"), vector),
        st.tuples(st.sampled_from(["engage_policy", "engage_teleop", "hold", "release"])),
        st.tuples(st.just("ticks"), st.integers(min_value=1, max_value=30)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(events)
def test_no_command_step_ever_exceeds_the_limits(sequence: list[tuple[object, ...]]) -> None:
    arm = controller(handover_s=0.2)
    now = 1_000 * S
    mono = 0
    previous = arm.envelope.command
    for event in sequence:
        kind = event[0]
        if kind == "chunk":
            _, values, age_ms, rows = event
            stamp = now - int(age_ms) * 1_000_000  # type: ignore[call-overload]
            positions = np.tile(np.asarray(values, dtype=float), (int(rows), 1))  # type: ignore[call-overload]
            arm.submit_chunk(ActionChunk.uniform(positions, 30.0, stamp, JOINTS), now)
        elif kind == "teleop":
            arm.set_teleop_target(np.asarray(event[1], dtype=float), mono)
        elif kind == "engage_policy":
            arm.engage_policy(now, mono)
        elif kind == "engage_teleop":
            arm.engage_teleop(mono)
        elif kind == "hold":
            arm.hold("test")
        elif kind == "release":
            arm.release(now, mono)
        else:
            for _ in range(int(event[1])):  # type: ignore[call-overload]
                now += int(PERIOD_S * S)
                mono += int(PERIOD_S * S)
                command = arm.tick(now, mono).command
                assert np.all(np.isfinite(command))
                assert np.all(np.abs(command - previous) <= arm.envelope.max_step + 1e-12)
                assert np.all(command >= LIMITS.lower) and np.all(command <= LIMITS.upper)
                previous = command


# -- the control loop survives a misbehaving bus ---------------------------------------------


class GarbledBus:
    """An ArmDriver whose SDK raises what SDKs raise on garbled packets (not a DriverError)."""

    joint_names = JOINTS

    def __init__(self) -> None:
        self.reads = 0
        self.writes: list[np.ndarray] = []

    def connect(self) -> None: ...

    def enable(self) -> None: ...

    def disable(self) -> None: ...

    def disconnect(self) -> None: ...

    def read(self) -> JointReading:
        self.reads += 1
        if self.reads == 5:
            raise IndexError("list index out of range")  # scservo_sdk on a short packet
        return JointReading(np.array([0.1, 0.0, 0.5]))

    def write(self, positions: np.ndarray) -> None:
        self.writes.append(positions)


def test_control_loop_holds_and_keeps_running_when_the_sdk_raises(tmp_path: Path) -> None:
    urdf = tmp_path / "arm.urdf"
    urdf.write_text(
        '<robot name="arm"><link name="base"><inertial><mass value="1"/>'
        '<inertia ixx="1" ixy="0" ixz="0" iyy="1" iyz="0" izz="1"/></inertial></link>'
        + "".join(
            f'<link name="l{i}"><inertial><mass value="1"/><inertia ixx="1" ixy="0" ixz="0" '
            f'iyy="1" iyz="0" izz="1"/></inertial></link><joint name="{name}" type="revolute">'
            f'<parent link="{"base" if i == 0 else f"l{i - 1}"}"/><child link="l{i}"/>'
            f'<limit lower="{lo}" upper="{hi}" velocity="2" effort="1"/></joint>'
            for i, (name, lo, hi) in enumerate(
                zip(JOINTS, LIMITS.lower, LIMITS.upper, strict=True)
            )
        )
        + "</robot>"
    )
    config = EmbodimentConfig(
        name="test",
        joint_names=JOINTS,
        urdf=str(urdf),
        control_rate_hz=200.0,
        max_acceleration=(20.0, 20.0, 10.0),
    )
    bus = GarbledBus()
    errors: list[str] = []
    loop = DriverLoop(config, bus, lambda report: None, errors.append)  # type: ignore[arg-type]
    loop.start()
    deadline = time.monotonic() + 5
    while bus.reads < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    loop.stop()
    assert bus.reads >= 20  # the thread survived the exception
    assert loop.status().mode == Mode.HOLD
    assert "IndexError" in loop.status().hold_reason
    assert any("IndexError" in error for error in errors)
