"""A scripted operator moves the SO100 leader emulator; teleop_node's targets follow the script.

Once with the operator on a thread of this process against a `ServoBusEmulator` here (as
test_teleop_node.py moves the leader by hand), once as its own process owning the emulator
(`python -m vla_runtime.sim.operator --script ... --link ...`). teleop_node runs with the SO100
follower and leader configs, as in test_teleop_node.py. Each published target, stamped right
after its read, must lie on the script's path within the read's latency, and the targets read
when the script is at a waypoint (at rest there) must be that waypoint.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from graph_helpers import spin_in_background, start_process, teleop_node, wait_for_path

from vla_runtime import ros
from vla_runtime.drivers.emulators.servo_bus import ServoBusEmulator
from vla_runtime.ros import convert
from vla_runtime.ros.interfaces import get_message
from vla_runtime.sim.operator import ScriptedOperator, Trajectory, load_script, to_ticks

pytestmark = pytest.mark.integration
pytest.importorskip("scservo_sdk")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "config/operator/so100_wave.yaml"
JointState = get_message("sensor_msgs/msg/JointState")
# A read's latency on a loaded two-core machine: the target read at stamp t is where the leader
# was at some instant in [t - LATENCY_S, t].
LATENCY_S = 0.2
TICK_RAD = 2.0 * np.pi / 4096


@pytest.fixture(autouse=True, scope="module")
def quick_thread_switches() -> Iterator[None]:
    # The in-process emulator answers from a thread (see test_teleop_node.py).
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    yield
    sys.setswitchinterval(previous)


class Targets:
    def __init__(self) -> None:
        self.node = ros.Node("operator_watcher")
        self.lock = threading.Lock()
        self.received: list[tuple[int, np.ndarray]] = []
        self.node.create_subscription(
            JointState, "/teleop/joint_targets", self._target, ros.qos_profile_sensor_data
        )
        spin_in_background(self.node)

    def _target(self, msg: object) -> None:
        arrays = convert.joint_state_to_numpy(msg)
        with self.lock:
            self.received.append((arrays.stamp_ns, arrays.position_rad.copy()))

    def collect(
        self, seconds: float, first_timeout_s: float = 30.0
    ) -> list[tuple[float, np.ndarray]]:
        deadline = time.monotonic() + first_timeout_s
        while not self.received:
            assert time.monotonic() < deadline, "teleop_node published no targets"
            time.sleep(0.05)
        with self.lock:
            self.received.clear()
        time.sleep(seconds)
        with self.lock:
            return [(stamp * 1e-9, position) for stamp, position in self.received]


def check_follows(
    trajectory: Trajectory, t0_s: float, targets: list[tuple[float, np.ndarray]]
) -> None:
    assert len(targets) > 100, f"only {len(targets)} targets"  # 100 Hz for several seconds
    tolerance = 2 * TICK_RAD  # the encoder's whole ticks
    for stamp_s, position in targets:
        t_s = stamp_s - t0_s
        window = np.array(
            [trajectory.position_at(t) for t in np.linspace(t_s - LATENCY_S, t_s + 0.005, 40)]
        )
        low, high = window.min(axis=0) - tolerance, window.max(axis=0) + tolerance
        assert np.all((low <= position) & (position <= high)), (
            f"at t = {t_s:.3f} s the target {position} is off the script's path [{low}, {high}]"
        )
    # At each waypoint the leader rests: the target read then is the waypoint itself.
    stamps = np.array([stamp for stamp, _ in targets]) - t0_s
    period = trajectory.duration_s
    checked = 0
    for cycle in range(int(stamps[0] // period), int(stamps[-1] // period) + 1):
        for index, t_point in enumerate(trajectory.times_s[1:], start=1):
            t_s = cycle * period + float(t_point)
            nearest = int(np.argmin(np.abs(stamps - t_s)))
            if abs(stamps[nearest] - t_s) > 0.02:
                continue
            expected = trajectory.points[index]
            assert targets[nearest][1] == pytest.approx(expected, abs=0.02), f"waypoint {index}"
            checked += 1
    assert checked >= 2, "too few waypoints were passed while targets were collected"


def test_the_operator_thread_moves_the_leader_and_teleop_targets_follow(
    ros_context: None, processes: list[subprocess.Popen[str]]
) -> None:
    trajectory = load_script(SCRIPT)
    start = dict(zip(trajectory.ids, to_ticks(trajectory.points[0]).tolist(), strict=True))
    with ServoBusEmulator(trajectory.ids, initial_positions=start) as leader:
        processes.append(teleop_node(leader.port))
        watcher = Targets()
        watcher.collect(0.0)  # teleop_node is reading the leader
        with ScriptedOperator(trajectory, leader) as operator:
            targets = watcher.collect(trajectory.duration_s + 0.5)
            check_follows(trajectory, operator.start_wall_ns * 1e-9, targets)
        assert processes[0].poll() is None


def test_the_operator_process_owns_the_leader_emulator_for_graph_tests(
    ros_context: None, processes: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    link = tmp_path / "so100_leader"
    operator = start_process(
        "-m", "vla_runtime.sim.operator", "--script", str(SCRIPT), "--link", str(link)
    )
    processes.append(operator)
    wait_for_path(link)
    assert operator.stdout is not None
    lines = [operator.stdout.readline(), operator.stdout.readline()]
    assert "feetech leader on" in lines[0] and "t0_ns=" in lines[1], lines
    t0_s = int(lines[1].rsplit("t0_ns=", 1)[1]) * 1e-9
    processes.append(teleop_node(str(link)))
    watcher = Targets()
    trajectory = load_script(SCRIPT)
    check_follows(trajectory, t0_s, watcher.collect(trajectory.duration_s + 0.5))
    assert all(process.poll() is None for process in processes)


def test_a_script_over_the_limits_exits_with_one_line_and_code_2(tmp_path: Path) -> None:
    path = tmp_path / "too_far.yaml"
    path.write_text(
        SCRIPT.read_text().replace(
            "[0.4, -0.5, 0.6, 0.3, 0.0, 0.0]", "[0.4, -0.5, 2.6, 0.3, 0.0, 0.0]"
        )
    )
    process = start_process("-m", "vla_runtime.sim.operator", "--script", str(path))
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 2, output
    assert "elbow_flex = 2.6 rad is outside [-1.69, 1.69]" in output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1
