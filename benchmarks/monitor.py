#!/usr/bin/env python3
"""Latency monitor overhead and report generation time (issue 7).

Three measurements in one run, all on 127.0.0.1 through a ``vla_runtime.cli router`` on a free
loopback port (the zenoh backend never scouts by multicast):

1. **Monitor CPU per 1000 messages/s observed.** The real ``latency_monitor`` node
   (``--ros-args -p embodiment:=so100``) watches a load publisher that sends what the monitor
   subscribes to, with header stamps set just before ``publish()``: both so100 cameras at 30 Hz
   (160x120 rgb8), ``/policy/action_chunk`` at 15 Hz (stamped with the newest frame's capture
   stamp), ``/diagnostics`` at 1 Hz (a ``policy`` trace and a driver status), and
   ``/robot/joint_states`` + ``/robot/joint_commands`` sharing the rest of the total rate. For
   each total rate the monitor's CPU time (``/proc/<pid>/stat`` utime+stime, all threads) is
   read over a fixed window after a warm-up; rate 0 (monitor running, nothing published) is the
   idle baseline. The load process also listens to the monitor's own ``/diagnostics`` and
   reports the ``joint_state_age`` rate the monitor saw, so "observed" is checked, not assumed.
2. **Extra latency on the observed graph.** A publisher process sends a 640x480 rgb8 ``Image``
   on ``/cameras/<first camera>/image_raw`` at 30 Hz and a 6-joint ``JointState`` on
   ``/robot/joint_states`` at 500 Hz (reliable, keep-last 10 / 1000); a subscriber process
   records receive ``time.time_ns()`` − ``header.stamp``. Phases alternate off / on / off / on:
   "on" starts the latency monitor (which subscribes to both topics), "off" stops it; a settle
   time after each switch is not counted.
3. **Report generation for a 10-minute recording.** A synthetic MCAP (ROS 2 profile, written
   with the project's ``McapRecorder``) as a real graph produces it: 2 cameras at 30 Hz
   (320x240 rgb8), ``/robot/joint_commands`` at 250 Hz, chunks at 15 Hz, ``/robot/mode``, and
   1 Hz ``/diagnostics`` with policy, driver and latency-monitor statuses (stages, deadlines
   with a breach every 150 s). Then ``vla-runtime report FILE -o out.html`` is timed as a child
   process: wall time, CPU time and peak RSS (``wait4`` rusage).

Usage::

    python benchmarks/monitor.py --quick          # smoke run, under 1 min
    python benchmarks/monitor.py                  # 20 s per rate / phase, 10-minute recording
    python benchmarks/monitor.py --json out.json --rates 500,1000,2000 --window-s 20

Markdown tables go to stdout; the last stdout line is one JSON object (also written to
``--json``). "others CPU %" is what every other process on the machine used during a window
(root cgroup counter minus the benchmark's own processes), 100 % = one core.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import heapq
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import (
    REPO,
    child_env,
    cpu_seconds,
    free_port,
    machine,
    machine_busy_seconds,
    reexec_in_private_netns,
    wait_port,
)

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
EMBODIMENT = "so100"
LOAD_IMAGE_WH = (160, 120)
REPORT_IMAGE_WH = (320, 240)
N_JOINTS = 6
FIXED_RATES = {"camera": 30.0, "chunk": 15.0, "diagnostics": 1.0}  # camera: per camera
LAT_IMAGE_HZ = 30.0
LAT_JOINT_HZ = 500.0
START_NS = 1_700_000_000_000_000_000


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _cameras() -> list[str]:
    from vla_runtime.policy.transforms import load_transform_config

    return list(load_transform_config(EMBODIMENT).cameras)


# --------------------------------------------------------------------------------------------
# Children
# --------------------------------------------------------------------------------------------


class _Messages:
    """Message factories (vla_runtime.ros types); stamps are set by `stamp()` before publish."""

    def __init__(self, image_wh: tuple[int, int]) -> None:
        import numpy as np

        from vla_runtime.ros.interfaces import get_message

        self.Image = get_message("sensor_msgs/msg/Image")
        self.JointState = get_message("sensor_msgs/msg/JointState")
        self.JointTrajectory = get_message("trajectory_msgs/msg/JointTrajectory")
        self.Point = get_message("trajectory_msgs/msg/JointTrajectoryPoint")
        self.DiagnosticArray = get_message("diagnostic_msgs/msg/DiagnosticArray")
        self.DiagnosticStatus = get_message("diagnostic_msgs/msg/DiagnosticStatus")
        self.KeyValue = get_message("diagnostic_msgs/msg/KeyValue")
        w, h = image_wh
        image = self.Image()
        image.height, image.width, image.encoding, image.is_bigendian = h, w, "rgb8", 0
        image.step = w * 3
        image.data = np.random.default_rng(0).integers(0, 256, h * w * 3, dtype=np.uint8)
        self.image = image
        self.names = [f"joint_{i + 1}" for i in range(N_JOINTS)]
        state = self.JointState()
        state.name = list(self.names)
        state.position = np.linspace(-1.0, 1.0, N_JOINTS)
        state.velocity = np.zeros(N_JOINTS)
        state.effort = np.zeros(N_JOINTS)
        self.state = state
        chunk = self.JointTrajectory()
        chunk.joint_names = list(self.names)
        rows = []
        for i in range(16):
            point = self.Point()
            point.positions = [0.01 * i] * N_JOINTS
            point.time_from_start.nanosec = i * 33_333_333
            rows.append(point)
        chunk.points = rows
        self.chunk = chunk

    @staticmethod
    def stamp(msg: Any, t_ns: int) -> Any:
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(t_ns, 1_000_000_000)
        return msg

    def diagnostics(self, t_ns: int, second: int) -> Any:
        from vla_runtime.nodes._diagnostics import LEVELS

        def status(name: str, values: dict[str, str]) -> Any:
            return self.DiagnosticStatus(
                level=LEVELS["OK"],
                name=name,
                message="running",
                hardware_id="bench",
                values=[self.KeyValue(key=k, value=v) for k, v in values.items()],
            )

        array = self.DiagnosticArray()
        self.stamp(array, t_ns)
        array.status = [
            status(
                "policy",
                {
                    "vision_ms": "12.0",
                    "prefill_ms": "20.0",
                    "depth_ms": "8.0",
                    "action_ms": "15.0",
                    "total_ms": "55.0",
                    "iterations": "2",
                    "changed_cells": "10",
                    "inferences": str(15 * second),
                },
            ),
            status(
                f"driver: {EMBODIMENT}",
                {"mode": "POLICY", "overruns": "0", "ticks": str(200 * second)},
            ),
        ]
        return array


def role_load(rate: float, cameras: list[str]) -> None:
    """Publish the monitor's inputs at `rate` messages/s in total until stdin says stop."""
    from vla_runtime import ros

    msgs = _Messages(LOAD_IMAGE_WH)
    ros.init()
    node = ros.Node("bench_load")
    sensor = ros.qos_profile_sensor_data
    pubs: dict[str, Any] = {
        f"cam:{c}": node.create_publisher(msgs.Image, f"/cameras/{c}/image_raw", sensor)
        for c in cameras
    }
    pubs["joint_states"] = node.create_publisher(msgs.JointState, "/robot/joint_states", sensor)
    pubs["joint_commands"] = node.create_publisher(
        msgs.JointState, "/robot/joint_commands", sensor
    )
    pubs["chunk"] = node.create_publisher(msgs.JointTrajectory, "/policy/action_chunk", 10)
    pubs["diagnostics"] = node.create_publisher(msgs.DiagnosticArray, "/diagnostics", 10)
    seen: dict[str, float] = {}

    def on_diagnostics(array: Any) -> None:
        for status in array.status:
            if status.name == "latency_monitor/stage/joint_state_age":
                values = {kv.key: kv.value for kv in status.values}
                with contextlib.suppress(KeyError, ValueError):
                    seen["joint_state_age_rate_hz"] = float(values["rate_hz"])

    node.create_subscription(msgs.DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    threading.Thread(target=lambda: ros.spin(node), daemon=True).start()
    deadline = time.monotonic() + 15.0
    while pubs["joint_states"].get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)

    fixed = (
        FIXED_RATES["camera"] * len(cameras) + FIXED_RATES["chunk"] + FIXED_RATES["diagnostics"]
    )
    joint_hz = max(0.0, (rate - fixed) / 2.0) if rate > 0 else 0.0
    streams = [(f"cam:{c}", FIXED_RATES["camera"]) for c in cameras] if rate > 0 else []
    if rate > 0:
        streams += [
            ("chunk", FIXED_RATES["chunk"]),
            ("diagnostics", FIXED_RATES["diagnostics"]),
        ]
        if joint_hz > 0:
            streams += [("joint_states", joint_hz), ("joint_commands", joint_hz)]
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    _emit({"ready": True, "joint_hz": joint_hz})
    t0 = time.monotonic_ns()
    heap = [(t0 + i * 97_000, name, int(1e9 / hz)) for i, (name, hz) in enumerate(streams)]
    heapq.heapify(heap)
    sent = 0
    last_capture = time.time_ns()
    second = 0
    while not stop.is_set():
        if not heap:
            stop.wait(0.1)
            continue
        due, name, period = heap[0]
        delay = due - time.monotonic_ns()
        if delay > 0:
            time.sleep(delay / 1e9)
            continue
        now = time.time_ns()
        if name.startswith("cam:"):
            pubs[name].publish(msgs.stamp(msgs.image, now))
            last_capture = now
        elif name in ("joint_states", "joint_commands"):
            pubs[name].publish(msgs.stamp(msgs.state, now))
        elif name == "chunk":
            pubs[name].publish(msgs.stamp(msgs.chunk, last_capture))
        else:
            second += 1
            pubs[name].publish(msgs.diagnostics(now, second))
        sent += 1
        nxt = due + period
        if nxt < time.monotonic_ns() - 20 * period:  # far behind: re-anchor, no burst
            nxt = time.monotonic_ns() + period
        heapq.heapreplace(heap, (nxt, name, period))
    elapsed = (time.monotonic_ns() - t0) / 1e9
    _emit({"sent": sent, "elapsed_s": elapsed, **seen})
    sys.stdout.flush()
    os._exit(0)


def role_lat_pub(camera: str) -> None:
    """A 640x480 rgb8 image at 30 Hz and a JointState at 500 Hz until stdin says stop."""
    from vla_runtime import ros

    msgs = _Messages((640, 480))
    ros.init()
    node = ros.Node("bench_lat_pub")
    image_pub = node.create_publisher(
        msgs.Image, f"/cameras/{camera}/image_raw", ros.QoSProfile(depth=10)
    )
    state_pub = node.create_publisher(
        msgs.JointState, "/robot/joint_states", ros.QoSProfile(depth=1000)
    )
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline and (
        image_pub.get_subscription_count() == 0 or state_pub.get_subscription_count() == 0
    ):
        time.sleep(0.05)
    time.sleep(0.3)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    _emit({"ready": True})
    t0 = time.monotonic_ns()
    heap = [
        (t0, "image", int(1e9 / LAT_IMAGE_HZ)),
        (t0 + 500_000, "state", int(1e9 / LAT_JOINT_HZ)),
    ]
    sent = {"image": 0, "state": 0}
    while not stop.is_set():
        due, name, period = heap[0]
        delay = due - time.monotonic_ns()
        if delay > 0:
            time.sleep(delay / 1e9)
            continue
        if name == "image":
            image_pub.publish(msgs.stamp(msgs.image, time.time_ns()))
        else:
            state_pub.publish(msgs.stamp(msgs.state, time.time_ns()))
        sent[name] += 1
        nxt = due + period
        if nxt < time.monotonic_ns() - 20 * period:
            nxt = time.monotonic_ns() + period
        heapq.heapreplace(heap, (nxt, name, period))
    _emit({"sent": sent})
    os._exit(0)


def role_lat_sub(camera: str, out: str) -> None:
    """Record (receive time, latency) per topic; write them to `out` when stdin says stop."""
    from vla_runtime import ros
    from vla_runtime.ros.interfaces import get_message

    ros.init()
    node = ros.Node("bench_lat_sub")
    rec: dict[str, list[tuple[int, int]]] = {"image": [], "state": []}
    tns = time.time_ns

    def on(kind: str) -> Any:
        sink = rec[kind]

        def callback(msg: Any) -> None:
            now = tns()
            stamp = msg.header.stamp
            sink.append((now, now - (stamp.sec * 1_000_000_000 + stamp.nanosec)))

        return callback

    node.create_subscription(
        get_message("sensor_msgs/msg/Image"),
        f"/cameras/{camera}/image_raw",
        on("image"),
        ros.QoSProfile(depth=10),
    )
    node.create_subscription(
        get_message("sensor_msgs/msg/JointState"),
        "/robot/joint_states",
        on("state"),
        ros.QoSProfile(depth=1000),
    )

    def stop() -> None:
        sys.stdin.readline()
        Path(out).write_text(json.dumps(rec))
        _emit({"done": True})
        os._exit(0)

    threading.Thread(target=stop, daemon=True).start()
    _emit({"ready": True})
    ros.spin(node)


# --------------------------------------------------------------------------------------------
# Driver helpers
# --------------------------------------------------------------------------------------------


class Procs:
    """The benchmark's children; stopped one by one, by their own Popen handle."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env = tmp, env
        self.all: list[subprocess.Popen[str]] = []

    def spawn(self, tag: str, args: list[str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(self.tmp / f"{tag}.err").open("w"),
            env=self.env,
            text=True,
            cwd=str(REPO),
        )
        self.all.append(proc)
        return proc

    def role(self, tag: str, *args: str) -> subprocess.Popen[str]:
        return self.spawn(tag, [sys.executable, str(Path(__file__).resolve()), "--role", *args])

    def err(self, tag: str) -> str:
        with contextlib.suppress(OSError):
            return (self.tmp / f"{tag}.err").read_text()[-600:].strip()
        return ""

    @staticmethod
    def stop(proc: subprocess.Popen[str] | None, timeout_s: float = 5.0) -> None:
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        for proc in reversed(self.all):
            self.stop(proc, 3.0)


def _json_line(proc: subprocess.Popen[str], timeout_s: float) -> dict[str, Any] | None:
    result: list[dict[str, Any]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    result.append(json.loads(line))
                    return

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return result[0] if result else None


def _tell_stop(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(OSError, ValueError):
        assert proc.stdin is not None
        proc.stdin.write("stop\n")
        proc.stdin.flush()


def _start_router(procs: Procs) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    endpoint = f"tcp/127.0.0.1:{port}"
    router = procs.spawn(
        "router", [sys.executable, "-m", "vla_runtime.cli", "router", "--listen", endpoint]
    )
    if not wait_port(port, 15.0):
        raise RuntimeError("router did not start: " + procs.err("router"))
    procs.env["VLA_RUNTIME_ROUTER"] = endpoint  # every later child finds it through this
    return router, endpoint


def _start_monitor(procs: Procs, tag: str) -> subprocess.Popen[str]:
    exe = VENV_BIN / "latency_monitor"
    command = (
        [str(exe)] if exe.exists() else [sys.executable, "-m", "vla_runtime.nodes.latency_monitor"]
    )
    proc = procs.spawn(tag, [*command, "--ros-args", "-p", f"embodiment:={EMBODIMENT}"])
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        if "watching" in procs.err(tag):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError("latency_monitor did not start: " + procs.err(tag))


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return sorted_values[k]


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _f(value: float, digits: int = 1) -> str:
    return (
        f"{value:.{digits}f}" if isinstance(value, (int, float)) and math.isfinite(value) else "—"
    )


# --------------------------------------------------------------------------------------------
# 1. CPU per 1000 msgs/s
# --------------------------------------------------------------------------------------------


def bench_cpu(procs: Procs, rates: list[float], window_s: float, warmup_s: float) -> list[dict]:
    router, _ = _start_router(procs)
    monitor = _start_monitor(procs, "monitor-cpu")
    rows = []
    try:
        for rate in [0.0, *rates]:
            _say(f"# cpu: {rate:g} msgs/s ...")
            tag = f"load-{int(rate)}"
            load = procs.role(tag, "load", "--rate", str(rate))
            ready = _json_line(load, 40.0)
            if ready is None:
                raise RuntimeError("load publisher did not start: " + procs.err(tag))
            time.sleep(warmup_s)
            pids = {"monitor": monitor.pid, "load": load.pid, "router": router.pid}
            cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
            own0, busy0, wall0 = time.process_time(), machine_busy_seconds(), time.monotonic()
            time.sleep(window_s)
            cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
            own1, busy1, wall = time.process_time(), machine_busy_seconds(), time.monotonic()
            wall -= wall0
            # Give the monitor's 1 Hz summary a moment, then stop the load and read its counts.
            _tell_stop(load)
            done = _json_line(load, 10.0) or {}
            procs.stop(load, 3.0)
            pct = {k: 100.0 * (cpu1[k] - cpu0[k]) / wall for k in pids}
            ours = sum(cpu1[k] - cpu0[k] for k in pids) + (own1 - own0)
            others = max(0.0, 100.0 * ((busy1 - busy0) - ours) / wall)
            achieved = done.get("sent", 0) / done["elapsed_s"] if done.get("elapsed_s") else 0.0
            rows.append(
                {
                    "target_msgs_per_s": rate,
                    "published_msgs_per_s": round(achieved, 1),
                    "joint_hz_each": round(float(ready.get("joint_hz", 0.0)), 1),
                    "monitor_joint_state_rate_hz": done.get("joint_state_age_rate_hz"),
                    "monitor_cpu_pct": round(pct["monitor"], 2),
                    "load_cpu_pct": round(pct["load"], 1),
                    "router_cpu_pct": round(pct["router"], 1),
                    "others_cpu_pct": round(others, 1),
                    "window_s": round(wall, 2),
                }
            )
        if monitor.poll() is not None:
            raise RuntimeError("latency_monitor exited: " + procs.err("monitor-cpu"))
    finally:
        procs.stop(monitor)
        procs.stop(router)
    idle = rows[0]["monitor_cpu_pct"]
    for row in rows[1:]:
        rate = row["published_msgs_per_s"] or row["target_msgs_per_s"]
        row["monitor_cpu_pct_per_1000"] = round(1000.0 * row["monitor_cpu_pct"] / rate, 2)
        row["monitor_cpu_pct_per_1000_above_idle"] = round(
            1000.0 * (row["monitor_cpu_pct"] - idle) / rate, 2
        )
    return rows


# --------------------------------------------------------------------------------------------
# 2. Latency with and without the monitor
# --------------------------------------------------------------------------------------------


def bench_latency(procs: Procs, phase_s: float, rounds: int, settle_s: float) -> dict[str, Any]:
    router, _ = _start_router(procs)  # stopped with the other children by stop_all
    camera = _cameras()[0]
    out = procs.tmp / "lat.json"
    sub = procs.role("lat-sub", "lat_sub", "--camera", camera, "--out", str(out))
    phases: list[dict[str, Any]] = []  # state, t0/t1 (ns), CPU % per process and machine
    monitor = None
    try:
        if _json_line(sub, 40.0) is None:
            raise RuntimeError("latency subscriber did not start: " + procs.err("lat-sub"))
        pub = procs.role("lat-pub", "lat_pub", "--camera", camera)
        if _json_line(pub, 40.0) is None:
            raise RuntimeError("latency publisher did not start: " + procs.err("lat-pub"))
        time.sleep(settle_s)
        for i in range(rounds):
            for state in ("off", "on"):
                _say(f"# latency: round {i + 1}, monitor {state} ...")
                if state == "on":
                    monitor = _start_monitor(procs, f"monitor-lat-{i}")
                elif monitor is not None:
                    procs.stop(monitor)
                    monitor = None
                time.sleep(settle_s)
                pids = {"pub": pub.pid, "sub": sub.pid, "router": router.pid}
                if monitor is not None:
                    pids["monitor"] = monitor.pid
                cpu0 = {k: cpu_seconds(v) for k, v in pids.items()}
                own0, busy0, t0 = time.process_time(), machine_busy_seconds(), time.time_ns()
                time.sleep(phase_s)
                cpu1 = {k: cpu_seconds(v) for k, v in pids.items()}
                own1, busy1, t1 = time.process_time(), machine_busy_seconds(), time.time_ns()
                wall = (t1 - t0) / 1e9
                pct = {k: 100.0 * (cpu1[k] - cpu0[k]) / wall for k in pids}
                ours = sum(pct.values()) + 100.0 * (own1 - own0) / wall
                machine_pct = 100.0 * (busy1 - busy0) / wall
                phases.append(
                    {
                        "state": state,
                        "t0": t0,
                        "t1": t1,
                        **pct,
                        "others": max(0.0, machine_pct - ours),
                    }
                )
        procs.stop(monitor)
        _tell_stop(pub)
        sent = (_json_line(pub, 10.0) or {}).get("sent", {})
        _tell_stop(sub)
        _json_line(sub, 30.0)
        rec = json.loads(out.read_text())
    finally:
        procs.stop(monitor)
        procs.stop_all()
    result: dict[str, Any] = {"camera_topic": f"/cameras/{camera}/image_raw", "sent": sent}
    rows = []
    for kind, label in (("image", "image_640x480_rgb8_30hz"), ("state", "joint_state_6_500hz")):
        times = rec[kind]
        arrival = [t for t, _ in times]
        for state in ("off", "on"):
            lat: list[float] = []
            seconds = 0.0
            for phase in phases:
                if phase["state"] != state:
                    continue
                t0, t1 = phase["t0"], phase["t1"]
                lo, hi = bisect.bisect_left(arrival, t0), bisect.bisect_left(arrival, t1)
                lat += [lat_ns / 1e6 for _, lat_ns in times[lo:hi]]
                seconds += (t1 - t0) / 1e9
            lat.sort()
            rows.append(
                {
                    "case": label,
                    "monitor": state,
                    "n": len(lat),
                    "rate_hz": round(len(lat) / seconds, 1) if seconds else 0.0,
                    "p50_ms": round(_percentile(lat, 50), 3),
                    "p90_ms": round(_percentile(lat, 90), 3),
                    "p99_ms": round(_percentile(lat, 99), 3),
                    "max_ms": round(lat[-1], 3) if lat else float("nan"),
                }
            )
    result["rows"] = rows
    result["cpu_pct"] = {
        state: {
            key: round(sum(p.get(key, 0.0) for p in phases if p["state"] == state) / rounds, 1)
            for key in ("monitor", "pub", "sub", "router", "others")
        }
        for state in ("off", "on")
    }
    return result


# --------------------------------------------------------------------------------------------
# 3. Report generation time
# --------------------------------------------------------------------------------------------


def write_recording(path: Path, seconds: int, image_wh: tuple[int, int]) -> dict[str, Any]:
    """A pipeline-like MCAP: 2 cameras 30 Hz, joint commands 250 Hz, chunks 15 Hz, 1 Hz diags."""
    import numpy as np
    from rosbags.typesys import Stores, get_typestore

    from vla_runtime.profiling.recorder import McapRecorder

    store = get_typestore(Stores.ROS2_JAZZY)
    types = store.types

    def cdr(msg: Any) -> bytes:
        return bytes(store.serialize_cdr(msg, msg.__msgtype__))

    def header(t_ns: int) -> Any:
        stamp = types["builtin_interfaces/msg/Time"](sec=t_ns // 10**9, nanosec=t_ns % 10**9)
        return types["std_msgs/msg/Header"](stamp=stamp, frame_id="")

    rng = np.random.default_rng(1)
    w, h = image_wh
    pool = [rng.integers(0, 256, w * h * 3, dtype=np.uint8) for _ in range(8)]
    image = types["sensor_msgs/msg/Image"](
        header=header(0),
        height=h,
        width=w,
        encoding="rgb8",
        is_bigendian=0,
        step=3 * w,
        data=pool[0],
    )
    names = [f"joint_{i + 1}" for i in range(N_JOINTS)]
    joint = types["sensor_msgs/msg/JointState"](
        header=header(0),
        name=names,
        position=np.zeros(N_JOINTS),
        velocity=np.zeros(N_JOINTS),
        effort=np.zeros(0),
    )
    point_t = types["trajectory_msgs/msg/JointTrajectoryPoint"]
    duration_t = types["builtin_interfaces/msg/Duration"]
    rows = [
        point_t(
            positions=np.full(N_JOINTS, 0.01 * i),
            velocities=np.zeros(0),
            accelerations=np.zeros(0),
            effort=np.zeros(0),
            time_from_start=duration_t(sec=0, nanosec=i * 33_333_333),
        )
        for i in range(16)
    ]
    chunk = types["trajectory_msgs/msg/JointTrajectory"](
        header=header(0), joint_names=names, points=rows
    )
    status_t = types["diagnostic_msgs/msg/DiagnosticStatus"]
    kv_t = types["diagnostic_msgs/msg/KeyValue"]
    cameras = ["third_person", "wrist"]
    stages = [f"camera_age/{c}" for c in cameras] + [
        "chunk_age",
        "reaction",
        "policy_total",
        "policy_wait",
        "driver_period",
    ]

    def stage(p50: float) -> dict[str, str]:
        return {
            "p50_ms": f"{p50:.2f}",
            "p90_ms": f"{1.5 * p50:.2f}",
            "p99_ms": f"{2 * p50:.2f}",
            "p999_ms": f"{3 * p50:.2f}",
            "max_ms": f"{4 * p50:.2f}",
            "count": "300",
            "rate_hz": "30",
        }

    t_start = time.monotonic()
    rec = McapRecorder(path)
    topics = {
        **{f"/cameras/{c}/image_raw": "sensor_msgs/msg/Image" for c in cameras},
        "/robot/joint_commands": "sensor_msgs/msg/JointState",
        "/policy/action_chunk": "trajectory_msgs/msg/JointTrajectory",
        "/robot/mode": "std_msgs/msg/String",
        "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
    }
    for topic, type_name in topics.items():
        rec.add_topic(topic, type_name)
    rec.write("/robot/mode", cdr(types["std_msgs/msg/String"](data="POLICY")), START_NS)
    count = 1
    for second in range(seconds):
        base = START_NS + second * 10**9
        events: list[tuple[int, str, bytes]] = []
        for i in range(30):
            capture = base + i * 33_333_333
            for k, camera in enumerate(cameras):
                image.header = header(capture)
                image.data = pool[(i + second + k) % len(pool)]
                events.append(
                    (capture + int(rng.gamma(2, 2e6)), f"/cameras/{camera}/image_raw", cdr(image))
                )
            if i % 2 == 0:
                chunk.header = header(capture)
                events.append(
                    (capture + int(rng.gamma(8, 10e6)), "/policy/action_chunk", cdr(chunk))
                )
        for i in range(250):
            tick = base + i * 4_000_000 + int(rng.gamma(1, 1e5))
            joint.header = header(tick)
            events.append((tick + 100_000, "/robot/joint_commands", cdr(joint)))
        now = base + 999_000_000
        breached = (second // 30) % 5 == 1
        statuses = [
            (
                0,
                "policy",
                "running",
                {
                    "vision_ms": f"{rng.normal(12, 1):.2f}",
                    "prefill_ms": f"{rng.normal(20, 2):.2f}",
                    "depth_ms": "8.0",
                    "action_ms": "15.0",
                    "total_ms": f"{rng.gamma(10, 6):.2f}",
                    "iterations": str(int(rng.integers(1, 5))),
                    "changed_cells": str(int(rng.integers(0, 40))),
                    "inferences": str(15 * second),
                },
            ),
            (
                0,
                f"driver: {EMBODIMENT}",
                "running",
                {
                    "mode": "POLICY",
                    "overruns": "0",
                    "ticks": str(250 * second),
                    "applied_chunk_stamp_ns": str(base),
                    "applied_since_ns": str(base + 90_000_000),
                },
            ),
            *[
                (0, f"latency_monitor/stage/{s}", "", stage(4.0 + 10 * j))
                for j, s in enumerate(stages)
            ],
            (
                2 if breached else 0,
                "latency_monitor/deadline/observation_age",
                "breached: chunk answers a 340 ms old observation (limit 300 ms)"
                if breached
                else "ok",
                {
                    "value": "340" if breached else "120",
                    "limit": "300",
                    "state": "breached" if breached else "ok",
                },
            ),
            (
                0,
                "latency_monitor/deadline/camera_gap",
                "ok",
                {"value": "34", "limit": "250", "state": "ok"},
            ),
            (0, "latency_monitor/clock", "ok", {"negative_ages": "0", "max_ahead_ms": "0"}),
            (
                0,
                "latency_monitor/inputs",
                "ok",
                {"missing_stamps": "0", "negative_ages": "0", "silent_topics": ""},
            ),
        ]
        array = types["diagnostic_msgs/msg/DiagnosticArray"](
            header=header(now),
            status=[
                status_t(
                    level=level,
                    name=name,
                    message=message,
                    hardware_id="bench",
                    values=[kv_t(key=k, value=v) for k, v in values.items()],
                )
                for level, name, message, values in statuses
            ],
        )
        events.append((now, "/diagnostics", cdr(array)))
        for log_time, topic, payload in sorted(events):
            rec.write(topic, payload, log_time)
        count += len(events)
    rec.close()
    return {
        "seconds": seconds,
        "messages": count,
        "image": f"{w}x{h} rgb8",
        "bytes": path.stat().st_size,
        "write_s": round(time.monotonic() - t_start, 1),
    }


def bench_report(tmp: Path, seconds: int, image_wh: tuple[int, int], env: dict) -> dict:
    path = tmp / "ten_minutes.mcap"
    _say(f"# report: writing a {seconds} s recording ...")
    info = write_recording(path, seconds, image_wh)
    exe = VENV_BIN / "vla-runtime"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "vla_runtime.cli"]
    html = tmp / "ten_minutes.html"
    runs = []
    for i in range(2):  # first run: cold page cache is unlikely (just written); take both
        _say(f"# report: vla-runtime report, run {i + 1} ...")
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [*command, "report", str(path), "-o", str(html)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(REPO),
            text=True,
        )
        assert proc.stdout is not None
        output = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"report failed ({proc.returncode}): {output[-600:]}")
        runs.append(
            {
                "wall_s": round(wall, 2),
                "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
                "html_bytes": html.stat().st_size,
            }
        )
    path.unlink()
    return {**info, "runs": runs}


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def _markdown(result: dict[str, Any]) -> str:
    parts = []
    cpu = result.get("cpu")
    if cpu:
        rows = [
            [
                _f(r["target_msgs_per_s"], 0),
                _f(r["published_msgs_per_s"]),
                _f(_or_nan(r.get("monitor_joint_state_rate_hz"))),
                _f(r["monitor_cpu_pct"]),
                _f(r.get("monitor_cpu_pct_per_1000", float("nan")), 2),
                _f(r.get("monitor_cpu_pct_per_1000_above_idle", float("nan")), 2),
                _f(r["load_cpu_pct"]),
                _f(r["router_cpu_pct"]),
                _f(r["others_cpu_pct"]),
            ]
            for r in cpu
        ]
        parts.append(
            "### Monitor CPU per 1000 messages/s observed\n\n"
            + _table(
                [
                    "target msgs/s",
                    "published msgs/s",
                    "monitor saw joint_states Hz",
                    "monitor CPU %",
                    "CPU % per 1000 msgs/s",
                    "… above idle",
                    "load pub CPU %",
                    "router CPU %",
                    "others CPU %",
                ],
                rows,
            )
        )
    lat = result.get("latency")
    if lat:
        rows = [
            [
                r["case"],
                r["monitor"],
                str(r["n"]),
                _f(r["rate_hz"]),
                _f(r["p50_ms"], 3),
                _f(r["p90_ms"], 3),
                _f(r["p99_ms"], 3),
                _f(r["max_ms"], 3),
            ]
            for r in lat["rows"]
        ]
        parts.append(
            "### Observed graph latency with and without the monitor\n\n"
            + _table(["case", "monitor", "n", "Hz", "p50 ms", "p90 ms", "p99 ms", "max ms"], rows)
            + "\n\nCPU % during the phases (100 = one core):\n\n"
            + _table(
                [
                    "monitor",
                    "monitor CPU %",
                    "pub CPU %",
                    "sub CPU %",
                    "router CPU %",
                    "others CPU %",
                ],
                [
                    [state, *(_f(c[k]) for k in ("monitor", "pub", "sub", "router", "others"))]
                    for state, c in lat["cpu_pct"].items()
                ],
            )
        )
    rep = result.get("report")
    if rep:
        rows = [
            [
                str(i + 1),
                _f(r["wall_s"], 2),
                _f(r["cpu_s"], 2),
                _f(r["peak_rss_mib"]),
                _f(r["html_bytes"] / 1e6, 2),
            ]
            for i, r in enumerate(rep["runs"])
        ]
        parts.append(
            f"### `vla-runtime report` on a {rep['seconds']} s recording "
            f"({rep['messages']:,} messages, {rep['bytes'] / 1e9:.2f} GB, images {rep['image']}, "
            f"written in {rep['write_s']} s)\n\n"
            + _table(["run", "wall s", "CPU s", "peak RSS MiB", "HTML MB"], rows)
        )
    return "\n\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--rates", default="500,1000,2000", help="total msgs/s to the monitor")
    parser.add_argument("--window-s", type=float, help="CPU window per rate (20; quick 4)")
    parser.add_argument("--phase-s", type=float, help="latency phase length (10; quick 3)")
    parser.add_argument("--rounds", type=int, default=2, help="off/on latency rounds")
    parser.add_argument("--report-seconds", type=int, help="recording length (600; quick 30)")
    parser.add_argument("--parts", default="cpu,latency,report")
    parser.add_argument("--json", help="also write the JSON result here")
    parser.add_argument("--no-netns", action="store_true", help="do not use unshare -n")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--camera", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "load":
        role_load(args.rate, _cameras())
        return 0
    if args.role == "lat_pub":
        role_lat_pub(args.camera)
        return 0
    if args.role == "lat_sub":
        role_lat_sub(args.camera, args.out)
        return 0
    if not args.no_netns:
        reexec_in_private_netns(Path(__file__).resolve(), sys.argv[1:])
    window_s = args.window_s or (4.0 if args.quick else 20.0)
    phase_s = args.phase_s or (3.0 if args.quick else 10.0)
    report_s = args.report_seconds or (30 if args.quick else 600)
    rates = [float(r) for r in args.rates.split(",") if r]
    parts = set(args.parts.split(","))
    load = os.getloadavg()
    result: dict[str, Any] = {
        "machine": machine(),
        "loadavg_at_start": [round(x, 2) for x in load],
        "settings": {
            "window_s": window_s,
            "phase_s": phase_s,
            "rounds": args.rounds,
            "rates": rates,
            "report_seconds": report_s,
            "netns": bool(os.environ.get("VLA_BENCH_IN_NETNS")),
        },
    }
    _say(f"# {result['machine']}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    tmp = Path(tempfile.mkdtemp(prefix="vla-bench-monitor-"))
    env = child_env(VLA_RUNTIME_MIDDLEWARE="zenoh")
    try:
        if "cpu" in parts or "latency" in parts:
            if "cpu" in parts:
                procs = Procs(tmp, dict(env))
                try:
                    warmup_s = 2.0 if args.quick else 5.0
                    result["cpu"] = bench_cpu(procs, rates, window_s, warmup_s)
                finally:
                    procs.stop_all()
            if "latency" in parts:
                procs = Procs(tmp, dict(env))
                try:
                    settle_s = 2.0 if args.quick else 3.0
                    result["latency"] = bench_latency(procs, phase_s, args.rounds, settle_s)
                finally:
                    procs.stop_all()
        if "report" in parts:
            result["report"] = bench_report(tmp, report_s, REPORT_IMAGE_WH, env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(_markdown(result))
    print()
    _emit(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
