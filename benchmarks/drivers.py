#!/usr/bin/env python3
"""Control-loop timing of each driver against its emulator, with a CPU hog beside it (issue 4).

For every case a `DriverLoop` (the driver node's fixed-rate thread, no middleware node around
it) runs in a process of its own, built the way the driver node builds it: the embodiment's
parameter file (`config/embodiments/<name>.yaml`, loaded as the node `/driver`) with the port or
channel pointed at the emulator, the driver from the registry. The arm is held where it is (the
controller's state after activation), so every tick is a full read, controller tick and write.

Cases:

- ``so100``: Feetech servo bus emulator (`emulators.servo_bus`) as its own process, on a pty.
- ``yam_bimanual``: two Damiao emulator processes (`emulators.damiao`), one per arm, each behind
  an SLCAN pty; the driver opens them with python-can's ``slcan`` interface.
- ``yam_bimanual_virtual``: the same two arms on python-can's in-process ``virtual`` bus; the
  emulated motors then run as threads of the loop's own process (they share its GIL).
- ``franka``: the franka_ros2 stand-in (`emulators.franka_ros2`) as its own process, over the
  zenoh backend, through a router on a free loopback port.

While a case is measured, ``--hogs`` processes (default 1) run ``while True: pass`` at normal
priority. The first ``--warmup`` seconds of ticks are not counted. Per tick, the ``on_tick``
callback records the `TickTiming` and the tick's work time: callback entry minus
``timing.started_ns``, i.e. read + controller + write, which is one bus round trip per tick.

- period error: |time between tick starts - period|, over every measured tick (not only the
  `RateKeeper`'s 2048-tick window);
- late start: tick start - its deadline (wake-up latency, after RateKeeper's final spin);
- overruns: ticks whose previous tick's work ran past their deadline (`TickTiming.overrun`);
  targets: p99 period error <= 1 ms and overruns <= 0.1 % of ticks;
- bus errors: ``on_error`` calls during the measured window;
- CPU %: per process group over the window (100 = one core); ``rest`` is what everything else
  on the machine used meanwhile (other users' jobs, kernel workers that move pty bytes), from
  the root cgroup's CPU counter. The machine is shared: before each case the script waits up to
  ``--idle-wait`` seconds for it to be idle, and ``rest`` shows how clean the window was.

Variants (reported with their settings in the title and the JSON, never mixed into the default
run): ``--param realtime_priority=60`` is the node's own switch (`DriverLoop` puts its thread
under SCHED_FIFO before connecting, so threads the driver starts in `connect()` inherit it);
``--loop-sched fifo:PRIO`` instead switches only the control thread, at its first tick;
``--emulator-sched fifo:PRIO`` puts every emulator thread under SCHED_FIFO, so the emulated
devices answer the way hardware does (without waiting for a CPU). The hogs always run at normal
priority.

Usage::

    python benchmarks/drivers.py --quick                 # 10 s per case
    python benchmarks/drivers.py                         # 60 s per case (BENCHMARKS.md)
    python benchmarks/drivers.py --cases so100 --hogs 2 --param driver.packet_timeout_ms=20
    python benchmarks/drivers.py --param realtime_priority=60 --emulator-sched fifo:50

Runs inside a private network namespace (``unshare -n``, only ``lo`` up) when it can;
``--no-netns`` skips that. The last line of stdout is one JSON object ``{"drivers": [...]}``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from _common import (
    REPO,
    child_env,
    cpu_seconds,
    free_port,
    in_private_netns,
    machine,
    machine_busy_seconds,
    reexec_in_private_netns,
    stop_process,
    wait_port,
)

YAM_IDS = ("1", "2", "3", "4", "5", "6", "7")
YAM_MODELS = ("DM4340",) * 3 + ("DM4310",) * 4
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# The loop child's marks on stdout: the measured window starts / ends now.
WINDOW_START, WINDOW_END = "# window start", "# window end"
# The targets (SO100 and YAM); Franka has none and is reported against the same bar.
TARGET_P99_MS = 1.0
TARGET_OVERRUN_FRACTION = 0.001


@dataclass(frozen=True)
class Case:
    """One row: an embodiment's loop against one emulator set-up."""

    name: str
    embodiment: str
    transport: str
    has_target: bool


CASES = {
    case.name: case
    for case in (
        Case("so100", "so100", "Feetech emulator process, pty", True),
        Case("yam_bimanual", "yam_bimanual", "2 Damiao emulator processes, SLCAN ptys", True),
        Case(
            "yam_bimanual_virtual",
            "yam_bimanual",
            "Damiao emulator threads in the loop process, virtual CAN",
            True,
        ),
        Case("franka", "franka", "franka_ros2 stand-in process, zenoh + router", False),
    )
}


@dataclass(frozen=True)
class Scheduling:
    """A Linux scheduling policy for a thread: `other` (the default, CFS/EEVDF), `fifo` or
    `rr` with a real-time priority 1..99 (needs root or CAP_SYS_NICE)."""

    policy: str = "other"
    priority: int = 0

    @classmethod
    def parse(cls, text: str) -> Scheduling:
        policy, _, priority = text.partition(":")
        if policy not in _POLICIES or (policy != "other") != bool(priority):
            raise argparse.ArgumentTypeError(f"need other, fifo:PRIO or rr:PRIO, got {text!r}")
        scheduling = cls(policy, int(priority or 0))
        if policy != "other" and not 1 <= scheduling.priority <= 99:
            raise argparse.ArgumentTypeError(f"real-time priority must be 1..99, got {text!r}")
        return scheduling

    def apply(self) -> None:
        """To the calling thread; threads it starts afterwards inherit it."""
        os.sched_setscheduler(0, _POLICIES[self.policy], os.sched_param(self.priority))

    def __str__(self) -> str:
        return self.policy if self.policy == "other" else f"{self.policy}:{self.priority}"


_POLICIES = {"other": os.SCHED_OTHER, "fifo": os.SCHED_FIFO, "rr": os.SCHED_RR}


@dataclass
class Setup:
    """What a case needs around its loop: processes, parameter overrides, environment."""

    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    emulators: list[subprocess.Popen[str]] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    in_process_can: list[str] = field(default_factory=list)  # virtual channels to serve
    emulator_scheduling: Scheduling | None = None


# -- set-ups (orchestrator side) ---------------------------------------------------------------


def _start(
    command: list[str], env: dict[str, str], log: Path, scheduling: Scheduling | None = None
) -> subprocess.Popen[str]:
    """A child with stdout and stderr in `log` (nothing to drain, nothing to block on), under
    `scheduling` from its first instruction on (so all its threads inherit it)."""

    def prepare() -> None:
        _die_with_parent()
        if scheduling is not None and scheduling.policy != "other":
            scheduling.apply()

    with log.open("w") as handle:
        return subprocess.Popen(
            command,
            preexec_fn=prepare,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
            cwd=str(REPO),
        )


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when this process dies, however that happens, so
    no hog or emulator outlives an interrupted run (prctl PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _wait_for_banner(process: subprocess.Popen[str], text: str, log: Path) -> None:
    """Wait until the child's log shows `text` (its ready line)."""
    deadline = time.monotonic() + 30.0
    while text not in log.read_text():
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"{log.stem} did not start: {_tail(log)}")
        time.sleep(0.05)


def _setup_so100(tmp: Path, setup: Setup) -> None:
    link, log = tmp / "so100_follower", tmp / "servo_bus.log"
    emulator = _start(
        [sys.executable, "-m", "vla_runtime.drivers.emulators.servo_bus", "--protocol",
         "feetech", "--ids", "1", "2", "3", "4", "5", "6", "--link", str(link)],
        child_env(), log, setup.emulator_scheduling,
    )  # fmt: skip
    setup.processes.append(emulator)
    setup.emulators.append(emulator)
    _wait_for_banner(emulator, "servo bus", log)
    setup.overrides["driver.port"] = str(link)


def _setup_yam_slcan(tmp: Path, setup: Setup) -> None:
    for arm in ("left", "right"):
        link, log = tmp / f"can_follower_{arm[0]}", tmp / f"damiao_{arm}.log"
        emulator = _start(
            [sys.executable, "-m", "vla_runtime.drivers.emulators.damiao", "--slcan-link",
             str(link), "--ids", *YAM_IDS, "--models", *YAM_MODELS],
            child_env(), log, setup.emulator_scheduling,
        )  # fmt: skip
        setup.processes.append(emulator)
        setup.emulators.append(emulator)
        _wait_for_banner(emulator, "ready on", log)
        setup.overrides[f"driver.{arm}.channel"] = str(link)
    setup.overrides["driver.interface"] = "slcan"


def _setup_yam_virtual(tmp: Path, setup: Setup) -> None:
    for arm in ("left", "right"):
        channel = f"bench-{arm}-{os.getpid()}"
        setup.overrides[f"driver.{arm}.channel"] = channel
        setup.in_process_can.append(channel)
    setup.overrides["driver.interface"] = "virtual"


def _setup_franka(tmp: Path, setup: Setup) -> None:
    port = free_port()
    endpoint = f"tcp/127.0.0.1:{port}"
    env = {"VLA_RUNTIME_MIDDLEWARE": "zenoh", "VLA_RUNTIME_ROUTER": endpoint}
    log = tmp / "router.log"
    router = _start(
        [sys.executable, "-m", "vla_runtime.cli", "router", "--listen", endpoint],
        child_env(**env),
        log,
    )
    setup.processes.append(router)
    if not wait_port(port, 20.0):
        raise RuntimeError(f"the zenoh router did not listen on {endpoint}: {_tail(log)}")
    log = tmp / "franka_ros2.log"
    emulator = _start(
        [sys.executable, "-m", "vla_runtime.drivers.emulators.franka_ros2"],
        child_env(**env),
        log,
        setup.emulator_scheduling,
    )
    setup.processes.append(emulator)
    setup.emulators.append(emulator)
    _wait_for_banner(emulator, "franka_ros2 emulator ready", log)
    setup.env.update(env)


SETUPS: dict[str, Callable[[Path, Setup], None]] = {
    "so100": _setup_so100,
    "yam_bimanual": _setup_yam_slcan,
    "yam_bimanual_virtual": _setup_yam_virtual,
    "franka": _setup_franka,
}


def _tail(path: Path, characters: int = 600) -> str:
    try:
        return path.read_text()[-characters:].strip()
    except OSError:
        return ""


# -- the loop (child side) ---------------------------------------------------------------------


class TickRecorder:
    """`DriverLoop` callbacks that store each tick's timing in preallocated arrays."""

    def __init__(self, capacity: int, scheduling: Scheduling) -> None:
        self._scheduling: Scheduling | None = scheduling
        self.started_ns = np.zeros(capacity, dtype=np.int64)
        self.late_ns = np.zeros(capacity, dtype=np.int64)
        self.period_ns = np.zeros(capacity, dtype=np.int64)
        self.work_ns = np.zeros(capacity, dtype=np.int64)
        self.index = np.zeros(capacity, dtype=np.int64)
        self.overrun = np.zeros(capacity, dtype=bool)
        self.count = 0
        self.error_ns: list[int] = []
        self.error_messages: dict[str, int] = {}

    def on_tick(self, report: Any) -> None:
        entry_ns = time.monotonic_ns()
        if self._scheduling is not None:  # first tick: we run on the control thread
            if self._scheduling.policy != "other":
                self._scheduling.apply()
            self._scheduling = None
        i = self.count
        if i >= len(self.started_ns):
            return
        timing = report.timing
        self.started_ns[i] = timing.started_ns
        self.late_ns[i] = timing.started_ns - timing.deadline_ns
        self.period_ns[i] = timing.period_ns
        self.work_ns[i] = entry_ns - timing.started_ns
        self.index[i] = timing.index
        self.overrun[i] = timing.overrun
        self.count = i + 1

    def on_error(self, message: str) -> None:
        self.error_ns.append(time.monotonic_ns())
        key = message[:160]
        self.error_messages[key] = self.error_messages.get(key, 0) + 1


def _percentiles_ms(values_ns: np.ndarray) -> tuple[float, float, float]:
    if values_ns.size == 0:
        return (float("nan"),) * 3
    p50, p99 = np.percentile(values_ns, [50, 99])
    return float(p50) / 1e6, float(p99) / 1e6, float(values_ns.max()) / 1e6


def _summarise(
    recorder: TickRecorder, period_ns: int, window_start_ns: int, window_end_ns: int
) -> dict[str, Any]:
    n = recorder.count
    started = recorder.started_ns[:n]
    keep = (started >= window_start_ns) & (started < window_end_ns)
    first = int(np.argmax(keep)) if keep.any() else n
    ticks = int(keep.sum())
    errors = np.abs(recorder.period_ns[:n][keep] - period_ns)
    late = recorder.late_ns[:n][keep]
    work = recorder.work_ns[:n][keep]
    overruns = int(recorder.overrun[:n][keep].sum())
    index = recorder.index[max(first - 1, 0) : first + ticks]
    skipped = int(np.clip(np.diff(index) - 1, 0, None).sum()) if index.size > 1 else 0
    error_p50, error_p99, error_max = _percentiles_ms(errors)
    work_p50, work_p99, work_max = _percentiles_ms(work)
    window_s = (window_end_ns - window_start_ns) / 1e9
    bus_errors = sum(window_start_ns <= t < window_end_ns for t in recorder.error_ns)
    return {
        "ticks": ticks,
        "rate_hz": round(ticks / window_s, 2) if window_s > 0 else 0.0,
        "period_error_p50_ms": round(error_p50, 4),
        "period_error_p99_ms": round(error_p99, 4),
        "period_error_max_ms": round(error_max, 3),
        "late_start_p99_ms": round(_percentiles_ms(late)[1], 4),
        "overruns": overruns,
        "overrun_pct": round(100.0 * overruns / ticks, 3) if ticks else 0.0,
        "skipped_deadlines": skipped,
        "work_p50_ms": round(work_p50, 4),
        "work_p99_ms": round(work_p99, 4),
        "work_max_ms": round(work_max, 3),
        "bus_errors": bus_errors,
    }


def _serve_virtual_can(channels: list[str], scheduling: Scheduling) -> list[Any]:
    """One emulated YAM arm (7 Damiao motors) per virtual channel, as threads of this process
    running under `scheduling` (the calling thread returns to the default policy)."""
    import can

    from vla_runtime.drivers.emulators.damiao import DamiaoMotorSet

    motor_sets: list[Any] = []
    if not channels:
        return motor_sets
    scheduling.apply()  # the motor sets' threads inherit it
    try:
        for channel in channels:
            motors = DamiaoMotorSet.from_models([int(i) for i in YAM_IDS], YAM_MODELS)
            motors.attach(can.Bus(interface="virtual", channel=channel))
            motor_sets.append(motors)
    finally:
        Scheduling().apply()
    return motor_sets


def run_loop(args: argparse.Namespace) -> int:
    """Child role: build the loop from the parameter file, run it, print one JSON line."""
    from vla_runtime.drivers.control_loop import DriverLoop
    from vla_runtime.drivers.embodiment import EmbodimentConfig
    from vla_runtime.drivers.registry import build_driver
    from vla_runtime.ros.zenoh.arguments import load_params_file

    case = CASES[args.case]
    path = REPO / "config" / "embodiments" / f"{case.embodiment}.yaml"
    parameters = load_params_file(str(path), "/driver")
    parameters.update(json.loads(args.overrides))
    config = EmbodimentConfig.from_parameters(parameters)
    motor_sets = _serve_virtual_can(json.loads(args.in_process_can), args.emulator_sched)
    driver = build_driver(config.name, config.joint_names, config.driver)
    capacity = int((args.warmup + args.duration + 5.0) * config.control_rate_hz * 1.1)
    recorder = TickRecorder(capacity, args.loop_sched)
    loop = DriverLoop(config, driver, recorder.on_tick, recorder.on_error)
    result: dict[str, Any] = {"rate_target_hz": config.control_rate_hz}
    loop.start()
    try:
        deadline = time.monotonic() + 60.0
        while recorder.count == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if recorder.count == 0:
            result["failed"] = f"the loop never ticked: {loop.last_error or 'no error reported'}"
            print(json.dumps(result), flush=True)
            return 1
        time.sleep(args.warmup)
        print(WINDOW_START, flush=True)
        cpu_start, window_start_ns = time.process_time(), time.monotonic_ns()
        time.sleep(args.duration)
        cpu_end, window_end_ns = time.process_time(), time.monotonic_ns()
        print(WINDOW_END, flush=True)
    finally:
        loop.stop()
        for motors in motor_sets:
            motors.close()
    result.update(_summarise(recorder, loop.rate.period_ns, window_start_ns, window_end_ns))
    result["loop_cpu_pct"] = round(
        100.0 * (cpu_end - cpu_start) / ((window_end_ns - window_start_ns) / 1e9), 1
    )
    result["error_messages"] = dict(
        sorted(recorder.error_messages.items(), key=lambda item: -item[1])[:3]
    )
    print(json.dumps(result), flush=True)
    return 0


# -- orchestration -----------------------------------------------------------------------------


def run_case(case: Case, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    setup = Setup(overrides=dict(args.param), emulator_scheduling=args.emulator_sched)
    hogs: list[subprocess.Popen[str]] = []
    loop: subprocess.Popen[str] | None = None
    row: dict[str, Any] = {
        "driver": case.name,
        "embodiment": case.embodiment,
        "transport": case.transport,
        "hogs": args.hogs,
        "params": dict(args.param),
        "loop_sched": str(args.loop_sched),
        "emulator_sched": str(args.emulator_sched),
        "duration_s": args.duration,
    }
    try:
        SETUPS[case.name](tmp, setup)
        setup.overrides = {**setup.overrides, **dict(args.param)}  # --param wins
        for _ in range(args.hogs):
            hogs.append(
                _start([sys.executable, "-c", "while True: pass"], child_env(), tmp / "hog.log")
            )
        log = tmp / f"loop_{case.name}.log"
        with log.open("w") as stderr:
            loop = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--role", "loop", "--case",
                 case.name, "--duration", str(args.duration), "--warmup", str(args.warmup),
                 "--overrides", json.dumps(setup.overrides),
                 "--in-process-can", json.dumps(setup.in_process_can),
                 "--loop-sched", str(args.loop_sched),
                 "--emulator-sched", str(args.emulator_sched)],
                preexec_fn=_die_with_parent, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=stderr,
                env=child_env(**setup.env), text=True, cwd=str(REPO),
            )  # fmt: skip
        groups = {"loop": [loop], "emulator": setup.emulators, "hog": hogs}
        groups["router"] = [p for p in setup.processes if p not in setup.emulators]
        before: dict[str, float] = {}
        result: dict[str, Any] | None = None
        assert loop.stdout is not None
        for line in loop.stdout:
            if line.startswith(WINDOW_START):
                before = _cpu_sample(groups)
            elif line.startswith(WINDOW_END) and before:
                row.update(_cpu_percent(before, _cpu_sample(groups)))
            elif line.startswith("{"):
                result = json.loads(line)
        loop.wait(30.0)
        if result is None:
            row["failed"] = f"no result from the loop process: {_tail(log)}"
        else:
            row.update(result)
    except Exception as exc:  # report the case as failed and go on with the next
        row["failed"] = str(exc)[:400]
    finally:
        stop_process(loop)
        for process in (*hogs, *reversed(setup.processes)):
            stop_process(process)
    if "failed" not in row and case.has_target:
        row["target_met"] = bool(
            row["period_error_p99_ms"] <= TARGET_P99_MS
            and row["overruns"] <= TARGET_OVERRUN_FRACTION * row["ticks"]
        )
    return row


def _cpu_sample(groups: dict[str, list[subprocess.Popen[str]]]) -> dict[str, float]:
    sample = {name: sum(cpu_seconds(p.pid) for p in group) for name, group in groups.items()}
    sample["machine"] = machine_busy_seconds()
    sample["wall"] = time.monotonic()
    return sample


def _cpu_percent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU % per group over the window (100 = one core); `rest` is everything else the machine
    ran meanwhile: other users' processes, kernel workers (pty flushes), this orchestrator."""
    wall_s = after["wall"] - before["wall"]
    used = {name: after[name] - before[name] for name in before if name != "wall"}
    ours = sum(value for name, value in used.items() if name != "machine")
    percent = {
        f"{name}_cpu_pct": round(100 * value / wall_s, 1)
        for name, value in used.items()
        if name not in ("machine", "loop")
    }
    percent["rest_cpu_pct"] = round(100 * (used["machine"] - ours) / wall_s, 1)
    return percent


def _print_table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in (
        "driver", "Hz", "ticks", "period err p50/p99/max ms", "late p99 ms", "overruns",
        "work p50/p99 ms", "bus errors", "CPU % loop/emu/router/hog/rest", "target",
    ):  # fmt: skip
        table.add_column(column, justify="left" if column == "driver" else "right")
    for row in rows:
        if "failed" in row:
            table.add_row(row["driver"], *[""] * 8, f"failed: {row['failed'][:80]}")
            continue
        met = row.get("target_met")
        table.add_row(
            row["driver"],
            f"{row['rate_hz']:.1f}/{row['rate_target_hz']:g}",
            str(row["ticks"]),
            f"{row['period_error_p50_ms']:.3f} / {row['period_error_p99_ms']:.3f} / "
            f"{row['period_error_max_ms']:.2f}",
            f"{row['late_start_p99_ms']:.3f}",
            f"{row['overruns']} ({row['overrun_pct']:.2f} %)",
            f"{row['work_p50_ms']:.3f} / {row['work_p99_ms']:.3f}",
            str(row["bus_errors"]),
            f"{row['loop_cpu_pct']:.0f} / {row.get('emulator_cpu_pct', 0):.0f} / "
            f"{row.get('router_cpu_pct', 0):.0f} / {row.get('hog_cpu_pct', 0):.0f} / "
            f"{row.get('rest_cpu_pct', 0):.0f}",
            "—" if met is None else "met" if met else "MISSED",
        )
    Console(file=sys.stdout, width=170).print(table)
    for row in rows:
        for message, count in row.get("error_messages", {}).items():
            print(f"  {row['driver']} (whole run, warm-up included): {count}x {message}")


def _wait_until_idle(timeout_s: float, quiet_s: int = 3, busy_limit_pct: float = 10.0) -> bool:
    """Wait until the machine ran at most `busy_limit_pct` of one core for `quiet_s` seconds in
    a row (others share this machine: their test runs would land in our numbers)."""
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while time.monotonic() < deadline:
        before = machine_busy_seconds()
        time.sleep(1.0)
        quiet = quiet + 1 if 100 * (machine_busy_seconds() - before) <= busy_limit_pct else 0
        if quiet >= quiet_s:
            return True
    print(f"#   the machine stayed busy for {timeout_s:g} s; measuring anyway", file=sys.stderr)
    return False


def orchestrate(args: argparse.Namespace, argv: list[str]) -> int:
    if not args.no_netns:
        reexec_in_private_netns(Path(__file__).resolve(), argv)
    where = "private netns (loopback only)" if in_private_netns() else "host loopback"
    names = [name.strip() for name in args.cases.split(",") if name.strip()]
    unknown = [name for name in names if name not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; known: {', '.join(CASES)}")
    print(
        f"# driver loops: {machine()}; {where}; {args.duration:g} s per case (+{args.warmup:g} s "
        f"warm-up), {args.hogs} CPU hog(s), loop {args.loop_sched}, emulators "
        f"{args.emulator_sched}",
        file=sys.stderr,
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="vla-bench-drivers-") as directory:
        for name in names:
            print(f"# {name} ...", file=sys.stderr, flush=True)
            idle = _wait_until_idle(args.idle_wait) if args.idle_wait > 0 else None
            row = run_case(CASES[name], args, Path(directory))
            row["machine_idle_before"] = idle
            rows.append(row)
            summary = row.get("failed") or (
                f"p99 {row['period_error_p99_ms']} ms, overruns {row['overruns']}/{row['ticks']}"
                f", work p99 {row['work_p99_ms']} ms"
            )
            print(f"#   {summary}", file=sys.stderr, flush=True)
    _print_table(
        rows,
        f"driver control loops against emulators: {args.duration:g} s, {args.hogs} CPU hog(s), "
        f"loop {args.loop_sched}, emulators {args.emulator_sched}"
        + "".join(f", {key}={value}" for key, value in args.param),
    )
    print(json.dumps({"drivers": rows}))
    return 0 if all("failed" not in row for row in rows) else 1


def _parameter(text: str) -> tuple[str, Any]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"--param needs KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma list of {list(CASES)}")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds per case")
    parser.add_argument("--quick", action="store_true", help="10 s per case")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of ticks not counted")
    parser.add_argument("--hogs", type=int, default=1, help="CPU-bound processes beside the loop")
    parser.add_argument(
        "--loop-sched",
        type=Scheduling.parse,
        default=Scheduling(),
        metavar="POLICY",
        help="the control thread's policy from its first tick: other, fifo:PRIO or rr:PRIO",
    )
    parser.add_argument(
        "--emulator-sched",
        type=Scheduling.parse,
        default=Scheduling(),
        metavar="POLICY",
        help="the emulators' policy (all their threads), as --loop-sched; the hogs stay at other",
    )
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=120.0,
        help="before each case, wait up to this long for the machine to be idle (0: do not)",
    )
    parser.add_argument(
        "--param",
        type=_parameter,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter of the embodiment file (e.g. driver.feedback_timeout_s=0.004)",
    )
    parser.add_argument("--no-netns", action="store_true", help="stay on the host's network")
    parser.add_argument("--role", choices=("loop",), help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--in-process-can", default="[]", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = 10.0
    if args.role == "loop":
        return run_loop(args)
    return orchestrate(args, argv)


if __name__ == "__main__":
    sys.exit(main())
