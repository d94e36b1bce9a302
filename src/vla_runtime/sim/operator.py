"""A scripted operator: moves a leader-arm emulator's joints along a trajectory in real time.

Teleop tests need a leader arm that moves the way a person's hand would. A script (YAML) names
the leader's joints, its URDF (for the limits), a start pose and waypoints, each reached
`duration_s` after the previous one with a smooth profile (minimum-jerk or cubic, zero velocity
and acceleration at every waypoint, so the path never leaves the box of its waypoints):

    urdf: so100/so100.urdf            # relative to the package's urdf/ folder, or absolute
    joint_names: [shoulder_pan, shoulder_lift, elbow_flex, wrist_flex, wrist_roll, gripper]
    ids: [1, 2, 3, 4, 5, 6]           # servo id of each joint (default 1..n)
    interpolation: minimum_jerk       # minimum_jerk | cubic
    loop: true                        # repeat; the last waypoint must then be the start pose
    start: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]          # [rad], at t = 0
    waypoints:
      - {positions: [0.5, -0.3, 0.4, 0.0, 0.0, 0.2], duration_s: 1.5}
      - {positions: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0], duration_s: 1.5}

Positions are converted to raw servo ticks with the identity calibration the emulators and the
so100 configs use (2048 ticks = 0 rad, 4096 ticks a turn). Every waypoint is checked against the
URDF's position limits and every segment's peak speed against its velocity limits; a malformed
or out-of-limit script raises `ScriptError` naming the file, the waypoint and the joint.

In a test, against an emulator of this process (it moves the servos with `set_positions`, the
way an operator's hand does with torque off):

    with ServoBusEmulator(ids) as leader, ScriptedOperator(load_script(path), leader):
        ...   # teleop_node reads leader.port; operator.start_wall_ns is the script's t = 0

or as a process owning its own leader emulator, with a stable path for configuration files:

    python -m vla_runtime.sim.operator --script config/operator/so100_wave.yaml \
        --link /tmp/so100_leader [--protocol feetech|dynamixel] [--delay-s 2] [--duration-s 30]

The process holds the start pose for `--delay-s`, prints one line with the wall-clock time of the
script's t = 0 (`t0_ns=...`), plays the script (holding the last pose once a script without
`loop` ends) and stops on Ctrl-C, SIGTERM or after `--duration-s`.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import yaml

from vla_runtime.core.urdf import load_joint_limits
from vla_runtime.resources import resolve

FloatArray = npt.NDArray[np.float64]

TICKS_PER_TURN = 4096
CENTER_TICKS = 2048.0
RAD_PER_TICK = 2.0 * math.pi / TICKS_PER_TURN
INTERPOLATIONS = ("minimum_jerk", "cubic")
# Peak speed of each profile over a segment of length 1 and duration 1.
_PEAK_SPEED = {"minimum_jerk": 1.875, "cubic": 1.5}
_KEYS = ("urdf", "joint_names", "ids", "interpolation", "loop", "start", "waypoints")


class ScriptError(ValueError):
    """A malformed or out-of-limit operator script; the message names the file and the place."""


class LeaderEmulator(Protocol):
    """What the operator needs of an emulator: `ServoBusEmulator` and `DynamixelBusEmulator`."""

    def set_positions(
        self, ticks: Mapping[int, float], velocities_ticks_s: Mapping[int, float] | None = None
    ) -> None: ...


def _profile(kind: str, s: float) -> tuple[float, float]:
    """Normalised position and speed (d/ds) at phase `s` in [0, 1]."""
    if kind == "cubic":
        return 3 * s**2 - 2 * s**3, 6 * s - 6 * s**2
    return 10 * s**3 - 15 * s**4 + 6 * s**5, 30 * s**2 - 60 * s**3 + 30 * s**4


@dataclass(frozen=True)
class Trajectory:
    """Joint positions [rad] against time: `start` at t = 0, then each waypoint in turn.

    `times_s[k]` is when `points[k]` is reached (`points[0]` is the start, `times_s[0]` = 0).
    """

    joint_names: tuple[str, ...]
    ids: tuple[int, ...]
    points: FloatArray  # (waypoints + 1, joints)
    times_s: FloatArray  # (waypoints + 1,)
    interpolation: str = "minimum_jerk"
    loop: bool = False

    @property
    def duration_s(self) -> float:
        return float(self.times_s[-1])

    def _locate(self, t_s: float) -> tuple[int, float, float]:
        """Segment index, phase in [0, 1] and segment duration at `t_s`."""
        if self.loop and self.duration_s > 0.0:
            t_s = t_s % self.duration_s
        if t_s <= 0.0:
            return 0, 0.0, 1.0
        if t_s >= self.duration_s:
            return len(self.points) - 2, 1.0, 1.0
        k = int(np.searchsorted(self.times_s, t_s, side="right")) - 1
        span = float(self.times_s[k + 1] - self.times_s[k])
        return k, (t_s - float(self.times_s[k])) / span, span

    def sample(self, t_s: float) -> tuple[FloatArray, FloatArray]:
        """Positions [rad] and velocities [rad/s] at `t_s` seconds after the start."""
        if len(self.points) == 1:
            return self.points[0].copy(), np.zeros(len(self.joint_names))
        k, s, span = self._locate(t_s)
        a, b = self.points[k], self.points[k + 1]
        position, speed = _profile(self.interpolation, s)
        at_end = not self.loop and t_s >= self.duration_s
        velocity = np.zeros_like(a) if at_end else (b - a) * (speed / span)
        return a + (b - a) * position, velocity

    def position_at(self, t_s: float) -> FloatArray:
        return self.sample(t_s)[0]


def to_ticks(radians: Sequence[float] | FloatArray) -> FloatArray:
    """Raw servo ticks with the identity calibration (2048 = 0 rad)."""
    return CENTER_TICKS + np.asarray(radians, dtype=np.float64) / RAD_PER_TICK


# -- scripts ------------------------------------------------------------------------------------


def _vector(value: Any, size: int, where: str) -> FloatArray:
    if not isinstance(value, (list, tuple)) or len(value) != size:
        raise ScriptError(
            f"{where}: expected a list of {size} joint positions [rad], got {value!r}"
        )
    try:
        array = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        raise ScriptError(f"{where}: joint positions must be numbers, got {value!r}") from None
    if not np.all(np.isfinite(array)):
        raise ScriptError(f"{where}: joint positions must be finite, got {value!r}")
    return array


def parse_script(data: Any, source: str = "<script>") -> Trajectory:
    """A `Trajectory` from a loaded YAML document; `source` names it in errors.

    Raises:
        ScriptError: a missing or unknown key, a wrong type or length, a duration <= 0, a
            waypoint outside the URDF's position limits or a segment faster than its velocity
            limits, a looping script that does not end at its start pose.
    """
    if not isinstance(data, dict):
        raise ScriptError(f"{source}: expected a mapping with {', '.join(_KEYS)}")
    unknown = sorted(str(key) for key in data if key not in _KEYS)
    if unknown:
        raise ScriptError(
            f"{source}: unknown keys {', '.join(unknown)}; known: {', '.join(_KEYS)}"
        )
    missing = [key for key in ("urdf", "joint_names", "start", "waypoints") if key not in data]
    if missing:
        raise ScriptError(f"{source}: missing {', '.join(missing)}")
    names = data["joint_names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ScriptError(f"{source}: joint_names must be a non-empty list of names")
    n = len(names)
    ids = data.get("ids", list(range(1, n + 1)))
    if (
        not isinstance(ids, list)
        or len(ids) != n
        or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        or len(set(ids)) != n
    ):
        raise ScriptError(f"{source}: ids must be {n} distinct integers, one per joint")
    interpolation = data.get("interpolation", "minimum_jerk")
    if interpolation not in INTERPOLATIONS:
        raise ScriptError(
            f"{source}: interpolation must be one of {', '.join(INTERPOLATIONS)}, "
            f"got {interpolation!r}"
        )
    loop = data.get("loop", False)
    if not isinstance(loop, bool):
        raise ScriptError(f"{source}: loop must be true or false, got {loop!r}")
    waypoints = data["waypoints"]
    if not isinstance(waypoints, list) or not waypoints:
        raise ScriptError(f"{source}: waypoints must be a non-empty list")

    points = [_vector(data["start"], n, f"{source}: start")]
    times = [0.0]
    for index, waypoint in enumerate(waypoints):
        where = f"{source}: waypoint {index}"
        if not isinstance(waypoint, dict) or set(waypoint) != {"positions", "duration_s"}:
            raise ScriptError(f"{where}: expected {{positions: [...], duration_s: S}}")
        duration = waypoint["duration_s"]
        if isinstance(duration, bool) or not isinstance(duration, (int, float)):
            raise ScriptError(f"{where}: duration_s must be a number, got {duration!r}")
        if not (math.isfinite(duration) and duration > 0.0):
            raise ScriptError(f"{where}: duration_s must be > 0, got {duration}")
        points.append(_vector(waypoint["positions"], n, where))
        times.append(times[-1] + float(duration))
    if loop and not np.allclose(points[-1], points[0], atol=1e-9):
        raise ScriptError(f"{source}: a looping script must end at its start pose")

    try:
        limits = load_joint_limits(resolve("urdf", str(data["urdf"])), names)
    except (OSError, ValueError) as error:
        raise ScriptError(f"{source}: urdf {data['urdf']}: {error}") from None
    problems: list[str] = []
    for index, point in enumerate(points):
        label = "start" if index == 0 else f"waypoint {index - 1}"
        for name, limit, value in zip(names, limits, point, strict=True):
            if not limit.lower <= value <= limit.upper:
                problems.append(
                    f"{label}: {name} = {value:g} rad is outside [{limit.lower:g}, "
                    f"{limit.upper:g}]"
                )
    for index in range(1, len(points)):
        span = times[index] - times[index - 1]
        peak = np.abs(points[index] - points[index - 1]) * _PEAK_SPEED[interpolation] / span
        for name, limit, speed in zip(names, limits, peak, strict=True):
            if speed > limit.max_velocity:
                problems.append(
                    f"waypoint {index - 1}: {name} peaks at {speed:.3g} rad/s, over its "
                    f"{limit.max_velocity:g} rad/s limit (lengthen duration_s)"
                )
    if problems:
        raise ScriptError(f"{source}: " + "; ".join(problems))
    return Trajectory(
        tuple(names), tuple(ids), np.array(points), np.array(times), interpolation, loop
    )


def load_script(path: str | Path) -> Trajectory:
    """Read and check a YAML script (see the module docstring)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ScriptError(f"{path}: cannot read: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise ScriptError(f"{path}: not valid YAML: {error}") from None
    return parse_script(data, str(path))


# -- playing ------------------------------------------------------------------------------------


class ScriptedOperator:
    """Plays a `Trajectory` on an emulator from a thread, at `rate_hz`.

    `start()` puts the servos at the start pose and starts the clock (`start_wall_ns`,
    `start_monotonic`); `stop()` leaves them where they are. A script without `loop` holds its
    last pose; `wait()` returns once it has been reached.
    """

    def __init__(
        self, trajectory: Trajectory, emulator: LeaderEmulator, *, rate_hz: float = 200.0
    ) -> None:
        if not rate_hz > 0.0:
            raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
        self.trajectory = trajectory
        self._emulator = emulator
        self._period_s = 1.0 / rate_hz
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self.start_wall_ns = 0
        self.start_monotonic = 0.0

    def apply(self, t_s: float) -> FloatArray:
        """Put the servos where the script is at `t_s`; the positions [rad]."""
        position, velocity = self.trajectory.sample(t_s)
        ids = self.trajectory.ids
        ticks = to_ticks(position)
        speeds = velocity / RAD_PER_TICK
        self._emulator.set_positions(
            dict(zip(ids, ticks.tolist(), strict=True)),
            dict(zip(ids, speeds.tolist(), strict=True)),
        )
        return position

    def elapsed_s(self) -> float:
        return time.monotonic() - self.start_monotonic

    def start(self) -> ScriptedOperator:
        if self._thread is not None:
            return self
        self._stop.clear()
        self._done.clear()
        self.apply(0.0)
        self.start_monotonic = time.monotonic()
        self.start_wall_ns = time.time_ns()
        self._thread = threading.Thread(target=self._run, name="scripted-operator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def wait(self, timeout_s: float | None = None) -> bool:
        """True once a script without `loop` has reached its last pose."""
        return self._done.wait(timeout_s)

    def __enter__(self) -> ScriptedOperator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        deadline = self.start_monotonic
        while not self._stop.is_set():
            t_s = self.elapsed_s()
            self.apply(t_s)
            if not self.trajectory.loop and t_s >= self.trajectory.duration_s:
                self._done.set()
                return
            deadline += self._period_s
            delay = deadline - time.monotonic()
            if delay < 0.0:  # late (a loaded machine): skip ahead rather than catch up
                deadline = time.monotonic()
                delay = 0.0
            if self._stop.wait(delay):
                return


# -- process entry point ------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    from vla_runtime.drivers.emulators.servo_bus import DynamixelBusEmulator, ServoBusEmulator

    parser = argparse.ArgumentParser(
        prog="python -m vla_runtime.sim.operator",
        description="Run a leader-arm servo-bus emulator on a pty, moved by a scripted operator.",
    )
    parser.add_argument("--script", required=True, help="operator script (YAML)")
    parser.add_argument("--protocol", choices=("feetech", "dynamixel"), default="feetech")
    parser.add_argument("--link", help="make a symlink at this path to the pty")
    parser.add_argument("--delay-s", type=float, default=0.0, help="hold the start pose first")
    parser.add_argument("--duration-s", type=float, help="stop after this long (default: never)")
    parser.add_argument("--rate-hz", type=float, default=200.0)
    args = parser.parse_args(argv)
    try:
        trajectory = load_script(args.script)
    except ScriptError as error:
        print(f"operator: {error}", file=sys.stderr)
        return 2
    if args.link and os.path.lexists(args.link) and not os.path.islink(args.link):
        print(
            f"operator: {args.link} exists and is not a symlink; not replacing it", file=sys.stderr
        )
        return 2
    start = dict(zip(trajectory.ids, to_ticks(trajectory.points[0]).tolist(), strict=True))
    kind = DynamixelBusEmulator if args.protocol == "dynamixel" else ServoBusEmulator
    emulator = kind(trajectory.ids, initial_positions=start, physics_rate_hz=None)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    emulator.start()
    operator = ScriptedOperator(trajectory, emulator, rate_hz=args.rate_hz)
    try:
        if args.link:
            if os.path.islink(args.link):
                os.unlink(args.link)
            os.symlink(emulator.port, args.link)
        where = f"{args.link} -> {emulator.port}" if args.link else emulator.port
        print(f"operator: {args.protocol} leader on {where}", flush=True)
        if not stop.wait(max(0.0, args.delay_s)):
            operator.start()
            print(
                f"operator: playing {args.script} ({trajectory.duration_s:g} s"
                f"{', looping' if trajectory.loop else ''}) t0_ns={operator.start_wall_ns}",
                flush=True,
            )
            stop.wait(args.duration_s)
    finally:
        operator.stop()
        if args.link and os.path.islink(args.link):
            os.unlink(args.link)
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
