"""The scripted operator: its interpolation, script checks, and playing against a fake emulator."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from vla_runtime.drivers.so100.calibration import RAD_PER_TICK
from vla_runtime.sim.operator import (
    ScriptedOperator,
    ScriptError,
    load_script,
    parse_script,
    to_ticks,
)

ROOT = Path(__file__).resolve().parents[2]
JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


def script(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "urdf": "so100/so100.urdf",
        "joint_names": list(JOINTS),
        "start": [0.0] * 6,
        "waypoints": [
            {"positions": [0.5, -0.4, 0.3, 0.2, -1.0, 0.8], "duration_s": 1.0},
            {"positions": [-0.5, 0.4, -0.3, -0.2, 1.0, 0.0], "duration_s": 2.0},
        ],
    }
    data.update(changes)
    return data


@pytest.mark.parametrize("interpolation", ["minimum_jerk", "cubic"])
def test_each_waypoint_is_reached_at_its_time_with_zero_velocity(interpolation: str) -> None:
    trajectory = parse_script(script(interpolation=interpolation))
    assert trajectory.duration_s == 3.0
    for t_s, expected in [
        (0.0, [0.0] * 6),
        (1.0, [0.5, -0.4, 0.3, 0.2, -1.0, 0.8]),
        (3.0, [-0.5, 0.4, -0.3, -0.2, 1.0, 0.0]),
    ]:
        position, velocity = trajectory.sample(t_s)
        assert position == pytest.approx(expected, abs=1e-12)
        assert velocity == pytest.approx([0.0] * 6, abs=1e-9)
    # Halfway through a segment: halfway between its ends (both profiles are symmetric).
    assert trajectory.position_at(2.0) == pytest.approx([0.0, 0.0, 0.0, 0.0, 0.0, 0.4])
    # Past the end without loop: the last pose is held.
    assert trajectory.position_at(10.0) == pytest.approx([-0.5, 0.4, -0.3, -0.2, 1.0, 0.0])


def test_the_path_is_smooth_and_stays_between_its_waypoints() -> None:
    trajectory = parse_script(script())
    times = np.linspace(0.0, 3.0, 3001)
    positions = np.array([trajectory.position_at(t) for t in times])
    steps = np.abs(np.diff(positions, axis=0))
    assert steps.max() < 2.0 * 1.875 * 0.001  # peak speed of the largest segment, no jumps
    first = positions[times <= 1.0]
    assert np.all(first[:, 4] <= 1e-12) and np.all(first[:, 4] >= -1.0 - 1e-12)  # no overshoot
    # The velocity is the derivative of the position.
    _, velocity = trajectory.sample(0.4)
    numeric = (trajectory.position_at(0.4 + 1e-6) - trajectory.position_at(0.4 - 1e-6)) / 2e-6
    assert velocity == pytest.approx(numeric, abs=1e-5)


def test_a_looping_script_repeats_and_must_end_at_its_start() -> None:
    waypoints = [
        {"positions": [0.5, 0.0, 0.0, 0.0, 0.0, 0.0], "duration_s": 1.0},
        {"positions": [0.0] * 6, "duration_s": 1.0},
    ]
    trajectory = parse_script(script(loop=True, waypoints=waypoints))
    assert trajectory.position_at(1.0)[0] == pytest.approx(0.5)
    assert trajectory.position_at(5.0)[0] == pytest.approx(0.5)  # two periods later
    assert trajectory.position_at(4.5) == pytest.approx(trajectory.position_at(0.5))
    with pytest.raises(ScriptError, match="must end at its start pose"):
        parse_script(script(loop=True))


def test_the_example_script_is_within_the_so100_limits() -> None:
    trajectory = load_script(ROOT / "config/operator/so100_wave.yaml")
    assert trajectory.joint_names == tuple(JOINTS) and trajectory.loop
    assert trajectory.ids == (1, 2, 3, 4, 5, 6)


def test_positions_outside_the_urdf_limits_are_refused_naming_joint_and_waypoint() -> None:
    waypoints = [{"positions": [0.0, 0.0, 2.0, 0.0, 0.0, -0.5], "duration_s": 5.0}]
    with pytest.raises(ScriptError) as error:
        parse_script(script(waypoints=waypoints), "wave.yaml")
    message = str(error.value)
    assert message.startswith("wave.yaml: ")
    assert "waypoint 0: elbow_flex = 2 rad is outside [-1.69, 1.69]" in message
    assert "gripper = -0.5 rad is outside [-0.174533, 1.74533]" in message
    with pytest.raises(ScriptError, match=r"start: shoulder_pan = 3 rad"):
        parse_script(script(start=[3.0, 0, 0, 0, 0, 0]))


def test_a_segment_faster_than_the_velocity_limit_is_refused() -> None:
    waypoints = [{"positions": [1.5, 0.0, 0.0, 0.0, 0.0, 0.0], "duration_s": 0.2}]
    with pytest.raises(ScriptError, match=r"shoulder_pan peaks at 14.1 rad/s, over its 4.71"):
        parse_script(script(waypoints=waypoints))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"waypoints": []}, "waypoints must be a non-empty list"),
        ({"start": [0.0] * 5}, "start: expected a list of 6 joint positions"),
        ({"start": [0, 0, 0, 0, 0, "x"]}, "start: joint positions must be numbers"),
        ({"waypoints": [{"positions": [0.0] * 6}]}, "waypoint 0: expected {positions"),
        ({"waypoints": [{"positions": [0.0] * 6, "duration_s": 0}]}, "duration_s must be > 0"),
        ({"interpolation": "spline"}, "interpolation must be one of minimum_jerk, cubic"),
        ({"ids": [1, 1, 2, 3, 4, 5]}, "ids must be 6 distinct integers"),
        ({"speed": 2}, "unknown keys speed"),
        ({"joint_names": ["shoulder_pan", "elbow", *JOINTS[2:]]}, "no joint named elbow"),
        ({"loop": "yes"}, "loop must be true or false"),
    ],
)
def test_malformed_scripts_are_one_clear_error(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ScriptError, match=f"^wave.yaml: .*{re.escape(message)}"):
        parse_script(script(**changes), "wave.yaml")


def test_load_script_names_the_file_for_missing_keys_and_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump({"urdf": "so100/so100.urdf", "joint_names": JOINTS}))
    with pytest.raises(ScriptError, match=r"broken\.yaml: missing start, waypoints"):
        load_script(path)
    path.write_text("start: [0, 0\n")
    with pytest.raises(ScriptError, match=r"broken\.yaml: not valid YAML"):
        load_script(path)
    with pytest.raises(ScriptError, match="cannot read"):
        load_script(tmp_path / "absent.yaml")


class FakeEmulator:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.writes: list[tuple[float, dict[int, float], dict[int, float]]] = []

    def set_positions(
        self, ticks: Mapping[int, float], velocities_ticks_s: Mapping[int, float] | None = None
    ) -> None:
        with self.lock:
            self.writes.append((time.monotonic(), dict(ticks), dict(velocities_ticks_s or {})))


def test_the_operator_plays_the_script_in_real_time_in_ticks() -> None:
    waypoints = [{"positions": [0.5, -0.4, 0.3, 0.2, -1.0, 0.8], "duration_s": 0.5}]
    trajectory = parse_script(script(waypoints=waypoints, ids=[11, 12, 13, 14, 15, 16]))
    emulator = FakeEmulator()
    with ScriptedOperator(trajectory, emulator, rate_hz=200.0) as operator:
        assert operator.wait(5.0)
        start = operator.start_monotonic
    assert emulator.writes[0][1] == {i: 2048.0 for i in range(11, 17)}  # the start pose first
    assert len(emulator.writes) > 20  # ~100 at 200 Hz, fewer on a loaded machine
    for written_at, ticks, _ in emulator.writes[1:]:
        # Written at most a scheduling delay after the time it was sampled for.
        expected = to_ticks(trajectory.position_at(written_at - start))
        assert list(ticks) == [11, 12, 13, 14, 15, 16]
        assert np.array(list(ticks.values())) == pytest.approx(expected, abs=150.0)
    final = np.array(list(emulator.writes[-1][1].values()))
    assert (final - 2048.0) * RAD_PER_TICK == pytest.approx(waypoints[0]["positions"], abs=1e-9)
    assert emulator.writes[-1][2] == {i: 0.0 for i in range(11, 17)}  # at rest at the end
