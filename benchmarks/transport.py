#!/usr/bin/env python3
"""Pub→sub latency between two processes: the zenoh backend vs the cyclonedds Python binding.

Cases (issue 2):

- ``image_640x480_rgb8_30hz``: a ``sensor_msgs/Image`` 640x480 rgb8 (921,600 data bytes) at 30 Hz,
  reliable, keep-last 10.
- ``joint_state_14_1khz``: a ``sensor_msgs/JointState`` with 14 joints at 1 kHz, reliable,
  keep-last 1000.

Backends:

- ``zenoh``: ``vla_runtime.ros`` with ``VLA_RUNTIME_MIDDLEWARE=zenoh``, written exactly like rclpy
  code (``Node``, ``create_publisher``, ``create_subscription``, ``spin``); a router process
  (``python -m vla_runtime.cli router``) on a free loopback port.
- ``cyclonedds``: the ``cyclonedds`` Python binding (ROS 2's default DDS) with ``IdlStruct`` types
  mirroring the ROS messages (``sensor_msgs::msg::dds_::Image_``, ``data: sequence<uint8>``).
- ``cyclonedds-array`` (opt-in, image only): same binding, but ``data`` declared as a fixed
  ``uint8[921600]`` array, which the binding copies as one block instead of packing 921,600
  Python ints. Not ROS's type; it shows what the binding's transport costs without its
  sequence-of-primitive serialiser.

Latency is the subscriber's ``time.time_ns()`` at the start of its callback (cyclonedds: right
after ``take()`` returns the deserialised sample) minus ``header.stamp``, which the publisher sets
from ``time.time_ns()`` immediately before ``publish()``/``write()``; so it includes serialisation,
transport, deserialisation and the executor's wake-up. Publisher and subscriber are separate
processes on the same host clock. The first 0.5 s of messages (``frame_id == "w"``) are warm-up
and not counted; measured messages carry their sequence number in ``frame_id``.

Usage::

    python benchmarks/transport.py --quick            # < 60 s
    python benchmarks/transport.py                    # 20 s per case
    python benchmarks/transport.py --cases image --backends zenoh,cyclonedds,cyclonedds-array

By default the driver re-executes itself inside a private network namespace
(``unshare -n``, loopback only); ``--no-netns`` skips that. The last line of stdout is one JSON
object ``{"cases": [{"case", "backend", "p50_ms", "p99_ms", "max_ms", "sent", "delivered",
"pub_cpu_pct", "sub_cpu_pct"}, ...]}``; backends that cannot run are reported as skipped in the
table and left out of the JSON.
"""

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import free_port, in_private_netns, reexec_in_private_netns, wait_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

IMAGE_W, IMAGE_H = 640, 480
N_JOINTS = 14
WARMUP_S = 0.5
DRAIN_S = 0.5
DISCOVERY_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Case:
    name: str
    short: str
    rate_hz: float
    depth: int
    quick_s: float
    full_s: float


CASES = {
    "image": Case("image_640x480_rgb8_30hz", "image", 30.0, 10, 5.0, 20.0),
    "joint_state": Case("joint_state_14_1khz", "joint_state", 1000.0, 1000, 5.0, 20.0),
}
BACKENDS = ("zenoh", "cyclonedds", "cyclonedds-array")
DEFAULT_BACKENDS = ("zenoh", "cyclonedds")
TOPICS = {"image": "/bench/image", "joint_state": "/bench/joint_states"}


# --------------------------------------------------------------------------------------------
# Shared helpers (children)
# --------------------------------------------------------------------------------------------


def _emit(obj: dict[str, Any]) -> None:
    """Write one JSON line to stdout for the driver."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Pacer:
    """Absolute-deadline pacing on the monotonic clock (no drift, no catch-up bursts)."""

    def __init__(self, rate_hz: float) -> None:
        self.period_ns = int(1e9 / rate_hz)
        self.next_ns = time.monotonic_ns()

    def wait(self) -> None:
        self.next_ns += self.period_ns
        delay = self.next_ns - time.monotonic_ns()
        if delay > 0:
            time.sleep(delay / 1e9)
        elif delay < -10 * self.period_ns:
            # Fell far behind (e.g. a long stall): re-anchor instead of bursting.
            self.next_ns = time.monotonic_ns()


class Recorder:
    """What a subscriber keeps per message: receive time minus stamp, and sequence numbers."""

    def __init__(self) -> None:
        self.lat_ns: list[int] = []
        self.seqs: set[int] = set()
        self.dups = 0
        self.warmup = 0
        self.cpu0: float | None = None
        self.wall0: float | None = None
        self.cpu1: float | None = None
        self.wall1: float | None = None
        self.lock = threading.Lock()
        self.done = False

    def on_message(self, recv_ns: int, sec: int, nanosec: int, frame_id: str) -> None:
        if frame_id == "w":
            self.warmup += 1
            return
        if frame_id == "e":
            if self.cpu1 is None:
                self.cpu1, self.wall1 = time.process_time(), time.monotonic()
            return
        if self.cpu0 is None:
            self.cpu0, self.wall0 = time.process_time(), time.monotonic()
        seq = int(frame_id)
        if seq in self.seqs:
            self.dups += 1
            return
        self.seqs.add(seq)
        self.lat_ns.append(recv_ns - (sec * 1_000_000_000 + nanosec))

    def dump(self, path: str) -> None:
        with self.lock:
            if self.done:
                return
            self.done = True
            cpu1 = self.cpu1 if self.cpu1 is not None else time.process_time()
            wall1 = self.wall1 if self.wall1 is not None else time.monotonic()
            cpu_s = (cpu1 - self.cpu0) if self.cpu0 is not None else 0.0
            wall_s = (wall1 - self.wall0) if self.wall0 is not None else 0.0
            Path(path).write_text(
                json.dumps(
                    {
                        "lat_ns": self.lat_ns,
                        "delivered": len(self.seqs),
                        "dups": self.dups,
                        "warmup": self.warmup,
                        "cpu_s": cpu_s,
                        "wall_s": wall_s,
                    }
                )
            )


def _watch_stdin(on_stop: Any) -> threading.Thread:
    """Call `on_stop` when the driver writes a line (or closes) our stdin."""

    def run() -> None:
        with contextlib.suppress(Exception):
            sys.stdin.readline()
        on_stop()

    th = threading.Thread(target=run, name="stdin-watch", daemon=True)
    th.start()
    return th


def _split_stamp(t_ns: int) -> tuple[int, int]:
    return t_ns // 1_000_000_000, t_ns % 1_000_000_000


def _publish_loop(
    case: Case,
    duration_s: float,
    publish: Any,
    pace: str = "loop",
    timer_factory: Any = None,
) -> dict[str, Any]:
    """Warm up, then publish `rate * duration` measured messages, then an end marker.

    `publish(frame_id)` stamps and sends one message. Returns sent count and CPU/wall of the
    measured window.
    """
    n_warm = max(1, round(case.rate_hz * WARMUP_S))
    n_meas = round(case.rate_hz * duration_s)
    late = 0
    if pace == "timer" and timer_factory is not None:
        # rclpy-style: a node timer drives publish; the caller spins until `finished` is set.
        state = {"i": 0, "cpu0": 0.0, "wall0": 0.0, "cpu1": 0.0, "wall1": 0.0}
        finished = threading.Event()

        def tick() -> None:
            i = state["i"]
            if i < n_warm:
                publish("w")
            elif i < n_warm + n_meas:
                if i == n_warm:
                    state["cpu0"], state["wall0"] = time.process_time(), time.monotonic()
                publish(str(i - n_warm))
                if i == n_warm + n_meas - 1:
                    state["cpu1"], state["wall1"] = time.process_time(), time.monotonic()
            elif i == n_warm + n_meas:
                publish("e")
                finished.set()
            state["i"] = i + 1

        timer_factory(1.0 / case.rate_hz, tick, finished)
        cpu_s = state["cpu1"] - state["cpu0"]
        wall_s = state["wall1"] - state["wall0"]
        return {"sent": n_meas, "cpu_s": cpu_s, "wall_s": wall_s, "late": None, "pace": "timer"}

    pacer = Pacer(case.rate_hz)
    for _ in range(n_warm):
        publish("w")
        pacer.wait()
    cpu0, wall0 = time.process_time(), time.monotonic()
    for i in range(n_meas):
        publish(str(i))
        if pacer.next_ns + pacer.period_ns < time.monotonic_ns():
            late += 1
        pacer.wait()
    cpu1, wall1 = time.process_time(), time.monotonic()
    publish("e")
    return {
        "sent": n_meas,
        "cpu_s": cpu1 - cpu0,
        "wall_s": wall1 - wall0,
        "late": late,
        "pace": "loop",
    }


# --------------------------------------------------------------------------------------------
# zenoh backend children (vla_runtime.ros, rclpy-shaped)
# --------------------------------------------------------------------------------------------


def _zenoh_qos(ros: Any, case: Case) -> Any:
    return ros.QoSProfile(
        depth=case.depth,
        reliability=ros.ReliabilityPolicy.RELIABLE,
        history=ros.HistoryPolicy.KEEP_LAST,
    )


def _zenoh_msg_factory(case: Case) -> tuple[Any, Any]:
    """Return (message class, make() -> message with everything but the stamp filled in)."""
    import numpy as np

    from vla_runtime.ros.interfaces import get_message

    if case.short == "image":
        Image = get_message("sensor_msgs/msg/Image")  # noqa: N806 - rclpy style
        rng = np.random.default_rng(0)
        frame = rng.integers(0, 256, size=(IMAGE_H, IMAGE_W, 3), dtype=np.uint8)
        try:
            from vla_runtime.ros.convert import numpy_to_image
        except ImportError:
            numpy_to_image = None

        def make_image() -> Any:
            if numpy_to_image is not None:
                return numpy_to_image(frame, encoding="rgb8")
            msg = Image()
            msg.height, msg.width = IMAGE_H, IMAGE_W
            msg.encoding = "rgb8"
            msg.is_bigendian = 0
            msg.step = IMAGE_W * 3
            msg.data = frame.reshape(-1)
            return msg

        return Image, make_image

    JointState = get_message("sensor_msgs/msg/JointState")  # noqa: N806
    names = [f"joint_{i}" for i in range(N_JOINTS)]
    pos = np.linspace(-1.0, 1.0, N_JOINTS)

    def make_js() -> Any:
        msg = JointState()
        msg.name = list(names)
        msg.position = pos.copy()
        msg.velocity = np.zeros(N_JOINTS)
        msg.effort = np.zeros(N_JOINTS)
        return msg

    return JointState, make_js


def zenoh_sub(case: Case, out: str) -> None:
    from vla_runtime import ros

    msg_type, _ = _zenoh_msg_factory(case)
    ros.init()
    node = ros.Node("bench_sub")
    rec = Recorder()
    tns = time.time_ns

    def cb(msg: Any) -> None:
        now = tns()
        h = msg.header
        rec.on_message(now, h.stamp.sec, h.stamp.nanosec, h.frame_id)

    node.create_subscription(msg_type, TOPICS[case.short], cb, _zenoh_qos(ros, case))

    def stop() -> None:
        rec.dump(out)
        with contextlib.suppress(Exception):
            ros.try_shutdown()
        # If spin() does not return on shutdown, do not hang the benchmark.
        threading.Timer(3.0, lambda: os._exit(0)).start()

    _watch_stdin(stop)
    _emit({"ready": True})
    with contextlib.suppress(Exception):
        ros.spin(node)
    rec.dump(out)
    with contextlib.suppress(Exception):
        node.destroy_node()
    with contextlib.suppress(Exception):
        ros.try_shutdown()
    sys.stdout.flush()
    os._exit(0)


def zenoh_pub(case: Case, duration_s: float, pace: str) -> None:
    from vla_runtime import ros

    msg_type, make = _zenoh_msg_factory(case)
    ros.init()
    node = ros.Node("bench_pub")
    pub = node.create_publisher(msg_type, TOPICS[case.short], _zenoh_qos(ros, case))
    msg = make()
    matched = _wait_matched(lambda: pub.get_subscription_count())
    tns = time.time_ns

    def publish(frame_id: str) -> None:
        h = msg.header
        h.frame_id = frame_id
        h.stamp.sec, h.stamp.nanosec = _split_stamp(tns())
        pub.publish(msg)

    def timer_factory(period: float, tick: Any, finished: threading.Event) -> None:
        timer = node.create_timer(period, tick)
        while not finished.is_set():
            ros.spin_once(node, timeout_sec=0.1)
        timer.cancel()

    res = _publish_loop(case, duration_s, publish, pace, timer_factory)
    time.sleep(DRAIN_S)
    res["matched"] = matched
    _emit(res)
    with contextlib.suppress(Exception):
        node.destroy_node()
    with contextlib.suppress(Exception):
        ros.try_shutdown()
    sys.stdout.flush()
    os._exit(0)


def _wait_matched(count: Any) -> str:
    """Wait until the publisher sees a subscriber; fall back to a fixed 1 s."""
    deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if count() > 0:
                time.sleep(0.1)  # let the reverse direction settle too
                return "matched"
            time.sleep(0.01)
        return "timeout"
    except (AttributeError, NotImplementedError):
        time.sleep(1.0)
        return "sleep-1s"


def zenoh_router(endpoint: str) -> None:
    """Fallback router (only when `python -m vla_runtime.cli router` is unavailable)."""
    import zenoh

    try:
        from vla_runtime.ros.zenoh import config as zconfig

        conf = zconfig.router_config(zconfig.SessionSettings.from_environ(), [endpoint])
    except ImportError:
        conf = zenoh.Config()
        conf.insert_json5("mode", '"router"')
        conf.insert_json5("listen/endpoints", json.dumps([endpoint]))
        conf.insert_json5("scouting/gossip/enabled", "true")
    conf.insert_json5("scouting/multicast/enabled", "false")
    session = zenoh.open(conf)
    _emit({"ready": True})
    with contextlib.suppress(Exception):
        sys.stdin.readline()
    session.close()


# --------------------------------------------------------------------------------------------
# cyclonedds children (the Python binding)
# --------------------------------------------------------------------------------------------


try:  # optional: the cyclonedds half is skipped without it
    from cyclonedds.idl import IdlStruct
    from cyclonedds.idl import types as cdt
except ImportError:  # pragma: no cover - depends on the environment
    IdlStruct = None

if IdlStruct is not None:
    # Real (not string) annotations: the binding cannot resolve postponed ones, so this file
    # has no `from __future__ import annotations`.

    @dataclass
    class Time_(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):  # noqa: N801
        sec: cdt.int32
        nanosec: cdt.uint32

    @dataclass
    class Header_(IdlStruct, typename="std_msgs::msg::dds_::Header_"):  # noqa: N801
        stamp: Time_
        frame_id: str

    @dataclass
    class Image_(IdlStruct, typename="sensor_msgs::msg::dds_::Image_"):  # noqa: N801
        header: Header_
        height: cdt.uint32
        width: cdt.uint32
        encoding: str
        is_bigendian: cdt.uint8
        step: cdt.uint32
        data: cdt.sequence[cdt.uint8]

    @dataclass
    class ImageFixed_(IdlStruct, typename="vla_bench::msg::dds_::ImageFixed_"):  # noqa: N801
        header: Header_
        height: cdt.uint32
        width: cdt.uint32
        encoding: str
        is_bigendian: cdt.uint8
        step: cdt.uint32
        data: cdt.array[cdt.uint8, 921600]  # IMAGE_W * IMAGE_H * 3

    @dataclass
    class JointState_(IdlStruct, typename="sensor_msgs::msg::dds_::JointState_"):  # noqa: N801
        header: Header_
        name: cdt.sequence[str]
        position: cdt.sequence[cdt.float64]
        velocity: cdt.sequence[cdt.float64]
        effort: cdt.sequence[cdt.float64]


def _cdds_types(variant: str) -> dict[str, Any]:
    return {
        "Time": Time_,
        "Header": Header_,
        "Image": ImageFixed_ if variant == "cyclonedds-array" else Image_,
        "JointState": JointState_,
    }


def _cdds_setup(case: Case, variant: str) -> tuple[Any, Any, Any, Any]:
    from cyclonedds.core import Policy, Qos
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.topic import Topic
    from cyclonedds.util import duration

    types = _cdds_types(variant)
    msg_type = types["Image"] if case.short == "image" else types["JointState"]
    qos = Qos(
        Policy.Reliability.Reliable(max_blocking_time=duration(seconds=1)),
        Policy.History.KeepLast(case.depth),
        Policy.Durability.Volatile,
    )
    dp = DomainParticipant(0)
    # ROS 2 prefixes topic names with "rt" on DDS.
    topic = Topic(dp, "rt" + TOPICS[case.short], msg_type, qos=qos)
    return dp, topic, qos, types


def cdds_sub(case: Case, out: str, variant: str) -> None:
    from cyclonedds.core import InstanceState, ReadCondition, SampleState, ViewState, WaitSet
    from cyclonedds.sub import DataReader
    from cyclonedds.util import duration

    dp, topic, qos, _ = _cdds_setup(case, variant)
    reader = DataReader(dp, topic, qos=qos)
    cond = ReadCondition(reader, SampleState.NotRead | ViewState.Any | InstanceState.Any)
    ws = WaitSet(dp)
    ws.attach(cond)
    rec = Recorder()
    stop_evt = threading.Event()
    _watch_stdin(stop_evt.set)
    _emit({"ready": True})
    tns = time.time_ns
    timeout = duration(milliseconds=100)
    while not stop_evt.is_set():
        ws.wait(timeout)
        while True:
            samples = reader.take(N=64, condition=cond)
            if not samples:
                break
            now = tns()
            for s in samples:
                h = s.header
                rec.on_message(now, h.stamp.sec, h.stamp.nanosec, h.frame_id)
    rec.dump(out)
    sys.stdout.flush()
    os._exit(0)


def cdds_pub(case: Case, duration_s: float, variant: str) -> None:
    from cyclonedds.pub import DataWriter
    from cyclonedds.util import duration

    dp, topic, qos, types = _cdds_setup(case, variant)
    writer = DataWriter(dp, topic, qos=qos)
    header_t, time_t = types["Header"], types["Time"]
    if case.short == "image":
        import numpy as np

        rng = np.random.default_rng(0)
        # bytes is the binding's fastest input for a uint8 sequence/array (see BENCHMARKS.md).
        data = rng.integers(0, 256, size=IMAGE_W * IMAGE_H * 3, dtype=np.uint8).tobytes()
        msg = types["Image"](
            header=header_t(stamp=time_t(0, 0), frame_id=""),
            height=IMAGE_H,
            width=IMAGE_W,
            encoding="rgb8",
            is_bigendian=0,
            step=IMAGE_W * 3,
            data=data,
        )
    else:
        msg = types["JointState"](
            header=header_t(stamp=time_t(0, 0), frame_id=""),
            name=[f"joint_{i}" for i in range(N_JOINTS)],
            position=[-1.0 + 2.0 * i / (N_JOINTS - 1) for i in range(N_JOINTS)],
            velocity=[0.0] * N_JOINTS,
            effort=[0.0] * N_JOINTS,
        )
    matched = _wait_matched(lambda: writer.get_publication_matched_status().current_count)
    tns = time.time_ns

    def publish(frame_id: str) -> None:
        h = msg.header
        h.frame_id = frame_id
        h.stamp.sec, h.stamp.nanosec = _split_stamp(tns())
        writer.write(msg)

    res = _publish_loop(case, duration_s, publish)
    with contextlib.suppress(Exception):
        writer.wait_for_acks(duration(seconds=2))
    time.sleep(DRAIN_S)
    res["matched"] = matched
    _emit(res)
    sys.stdout.flush()
    os._exit(0)


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------

CYCLONE_XML = """<?xml version="1.0" encoding="UTF-8"?>
<CycloneDDS xmlns="https://cdds.io/config">
  <Domain Id="any">
    <General>
      <Interfaces><NetworkInterface name="lo"/></Interfaces>
      <AllowMulticast>false</AllowMulticast>
    </General>
    <Discovery>
      <Peers><Peer address="127.0.0.1"/></Peers>
      <ParticipantIndex>auto</ParticipantIndex>
      <MaxAutoParticipantIndex>20</MaxAutoParticipantIndex>
    </Discovery>
  </Domain>
</CycloneDDS>
"""


def _read_json_line(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any] | None:
    """Read stdout lines until one parses as a JSON object (or timeout/EOF)."""
    result: list[dict[str, Any]] = []

    def run() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.strip()
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    result.append(json.loads(line))
                    return

    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(timeout)
    return result[0] if result else None


def _stop(proc: subprocess.Popen[str] | None, timeout: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(Exception):
        assert proc.stdin is not None
        proc.stdin.write("stop\n")
        proc.stdin.flush()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _spawn(args: list[str], env: dict[str, str], stderr_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr_path.open("w"),
        env=env,
        text=True,
        cwd=str(REPO),
    )


def _child_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    xml = tmp / "cyclonedds.xml"
    if not xml.exists():
        xml.write_text(CYCLONE_XML)
    env["CYCLONEDDS_URI"] = xml.as_uri()
    env.pop("ROS_DOMAIN_ID", None)
    return env


def _start_router(env: dict[str, str], tmp: Path) -> tuple[subprocess.Popen[str], str, str]:
    port = free_port()
    endpoint = f"tcp/127.0.0.1:{port}"
    attempts = [
        (
            "vla_runtime.cli router",
            [sys.executable, "-m", "vla_runtime.cli", "router", "--listen", endpoint],
        ),
        (
            "fallback zenoh router",
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--role",
                "router",
                "--endpoint",
                endpoint,
            ],
        ),
    ]
    errors = []
    for label, cmd in attempts:
        errf = tmp / f"router-{len(errors)}.err"
        proc = _spawn(cmd, env, errf)
        if wait_port(port, 10.0):
            return proc, endpoint, label
        _stop(proc, 1.0)
        errors.append(f"{label}: {errf.read_text()[-300:].strip()}")
    raise RuntimeError("no zenoh router could be started: " + " | ".join(errors))


def _percentile(sorted_ms: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_ms:
        return float("nan")
    k = max(0, min(len(sorted_ms) - 1, int(-(-q * len(sorted_ms) // 100)) - 1))
    return sorted_ms[k]


def run_one(
    case: Case, backend: str, duration_s: float, tmp: Path, pace: str, verbose: bool
) -> dict[str, Any]:
    env = _child_env(tmp)
    me = [sys.executable, str(Path(__file__).resolve())]
    router = None
    notes: list[str] = []
    tag = f"{case.short}-{backend}"
    sub = pub = None
    try:
        if backend == "zenoh":
            env["VLA_RUNTIME_MIDDLEWARE"] = "zenoh"
            router, endpoint, how = _start_router(env, tmp)
            env["VLA_RUNTIME_ROUTER"] = endpoint
            if how != "vla_runtime.cli router":
                notes.append(how)
        out = tmp / f"{tag}.sub.json"
        common = ["--case", case.short, "--backend", backend]
        sub = _spawn(
            [*me, "--role", "sub", *common, "--out", str(out)], env, tmp / f"{tag}.sub.err"
        )
        if _read_json_line(sub, 30.0) is None:
            raise RuntimeError("subscriber did not start: " + _tail(tmp / f"{tag}.sub.err"))
        pub = _spawn(
            [*me, "--role", "pub", *common, "--duration", str(duration_s), "--pace", pace],
            env,
            tmp / f"{tag}.pub.err",
        )
        pres = _read_json_line(pub, duration_s + DISCOVERY_TIMEOUT_S + 30.0)
        if pres is None:
            raise RuntimeError("publisher failed: " + _tail(tmp / f"{tag}.pub.err"))
        pub.wait(10)
        _stop(sub)
        if not out.exists():
            raise RuntimeError("subscriber wrote no results: " + _tail(tmp / f"{tag}.sub.err"))
        sres = json.loads(out.read_text())
    finally:
        _stop(pub, 2.0)
        _stop(sub, 2.0)
        _stop(router, 2.0)
    if verbose:
        for role in ("sub", "pub"):
            err = _tail(tmp / f"{tag}.{role}.err")
            if err:
                print(f"[{tag} {role} stderr] {err}", file=sys.stderr)
    lat = sorted(x / 1e6 for x in sres["lat_ns"])
    if pres.get("matched") != "matched":
        notes.append(f"discovery: {pres.get('matched')}")
    if sres.get("dups"):
        notes.append(f"{sres['dups']} duplicates")
    if pres.get("late"):
        notes.append(f"{pres['late']} late sends")
    return {
        "case": case.name,
        "backend": backend,
        "p50_ms": round(_percentile(lat, 50), 3),
        "p99_ms": round(_percentile(lat, 99), 3),
        "max_ms": round(lat[-1], 3) if lat else float("nan"),
        "sent": int(pres["sent"]),
        "delivered": int(sres["delivered"]),
        "pub_cpu_pct": round(100.0 * pres["cpu_s"] / pres["wall_s"], 1) if pres["wall_s"] else 0.0,
        "sub_cpu_pct": round(100.0 * sres["cpu_s"] / sres["wall_s"], 1) if sres["wall_s"] else 0.0,
        "_rate_hz": round(pres["sent"] / pres["wall_s"], 1) if pres["wall_s"] else 0.0,
        "_notes": notes,
    }


def _tail(path: Path, n: int = 600) -> str:
    try:
        return path.read_text()[-n:].strip()
    except OSError:
        return ""


def _backend_available(backend: str) -> str | None:
    """None if the backend can run here, else the reason it is skipped."""
    env = _child_env(Path(tempfile.gettempdir()))
    if backend == "zenoh":
        env["VLA_RUNTIME_MIDDLEWARE"] = "zenoh"
        probe = "import zenoh, rosbags; import vla_runtime.ros.zenoh.api"
    else:
        probe = "import cyclonedds.domain, cyclonedds.idl"
    r = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=str(REPO)
    )
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["import failed"])[-1]
        return last[:160]
    return None


def _print_table(rows: list[dict[str, Any]], skipped: list[tuple[str, str, str]]) -> None:
    headers = [
        "case",
        "backend",
        "p50 ms",
        "p99 ms",
        "max ms",
        "sent",
        "delivered",
        "sent Hz",
        "pub CPU %",
        "sub CPU %",
        "notes",
    ]
    body = [
        [
            r["case"],
            r["backend"],
            f"{r['p50_ms']:.3f}",
            f"{r['p99_ms']:.3f}",
            f"{r['max_ms']:.3f}",
            str(r["sent"]),
            str(r["delivered"]),
            f"{r['_rate_hz']:.1f}",
            f"{r['pub_cpu_pct']:.1f}",
            f"{r['sub_cpu_pct']:.1f}",
            "; ".join(r.get("_notes", [])),
        ]
        for r in rows
    ]
    body += [[c, b, *["-"] * 8, f"skipped: {why}"] for c, b, why in skipped]
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="pub→sub latency, two processes, loopback")
        for i, h in enumerate(headers):
            table.add_column(h, justify="left" if i in (0, 1, 10) else "right")
        for row in body:
            table.add_row(*row)
        Console(file=sys.stdout, width=160).print(table)
    except ImportError:
        widths = [
            max(len(h), *(len(row[i]) for row in body)) if body else len(h)
            for i, h in enumerate(headers)
        ]
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        for row in body:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    # Speedup on the image case.
    by = {(r["case"], r["backend"]): r for r in rows}
    img = CASES["image"].name
    z = by.get((img, "zenoh"))
    for other in ("cyclonedds", "cyclonedds-array"):
        o = by.get((img, other))
        if z and o and z["p50_ms"] > 0:
            print(
                f"image p50 speedup zenoh vs {other}: {o['p50_ms'] / z['p50_ms']:.1f}x "
                f"(p99: {o['p99_ms'] / max(z['p99_ms'], 1e-9):.1f}x)"
            )


def _machine() -> str:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs, {model}, Python {platform.python_version()}"


def driver(args: argparse.Namespace, argv: list[str]) -> int:
    if not args.no_netns:
        reexec_in_private_netns(Path(__file__).resolve(), argv)
    where = "private netns (loopback only)" if in_private_netns() else "host loopback"
    cases = [CASES[c.strip()] for c in args.cases.split(",") if c.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in BACKENDS:
            raise SystemExit(f"unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
    print(
        f"# transport benchmark: {_machine()}; {where}; {'quick' if args.quick else 'full'} run",
        file=sys.stderr,
    )
    rows: list[dict[str, Any]] = []
    skipped: list[tuple[str, str, str]] = []
    reasons = {b: _backend_available(b) for b in backends}
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vla-bench-") as tmpd:
        tmp = Path(tmpd)
        for case in cases:
            dur = args.duration or (case.quick_s if args.quick else case.full_s)
            for b in backends:
                if b == "cyclonedds-array" and case.short != "image":
                    continue
                if reasons[b]:
                    skipped.append((case.name, b, reasons[b] or ""))
                    continue
                t0 = time.monotonic()
                print(f"# {case.name} / {b}: {dur:g} s ...", file=sys.stderr, flush=True)
                try:
                    row = run_one(case, b, dur, tmp, args.pace, args.verbose)
                except Exception as exc:  # report and keep going
                    skipped.append((case.name, b, f"failed: {exc}"[:200]))
                    continue
                rows.append(row)
                print(
                    f"#   p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
                    f"{row['delivered']}/{row['sent']} ({time.monotonic() - t0:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    print(f"# total {time.monotonic() - t_start:.1f} s", file=sys.stderr)
    _print_table(rows, skipped)
    keys = (
        "case",
        "backend",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "sent",
        "delivered",
        "pub_cpu_pct",
        "sub_cpu_pct",
    )
    print(json.dumps({"cases": [{k: r[k] for k in keys} for r in rows]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="5 s per case (whole run < 60 s)")
    p.add_argument("--cases", default="image,joint_state", help="comma list: image,joint_state")
    p.add_argument(
        "--backends",
        default=",".join(DEFAULT_BACKENDS),
        help=f"comma list of {', '.join(BACKENDS)}",
    )
    p.add_argument(
        "--no-netns", action="store_true", help="do not re-run inside a private network namespace"
    )
    p.add_argument("--duration", type=float, default=None, help="override seconds per case")
    p.add_argument(
        "--pace",
        choices=("loop", "timer"),
        default="loop",
        help="zenoh publisher pacing: monotonic-deadline loop (default) or node timer",
    )
    p.add_argument("--verbose", action="store_true", help="print children's stderr")
    p.add_argument("--role", choices=("sub", "pub", "router"), help=argparse.SUPPRESS)
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--backend", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.role is None:
        return driver(args, argv)
    if args.role == "router":
        zenoh_router(args.endpoint)
        return 0
    case = CASES[args.case]
    if args.backend == "zenoh":
        if args.role == "sub":
            zenoh_sub(case, args.out)
        else:
            zenoh_pub(case, args.duration, args.pace)
    elif args.role == "sub":
        cdds_sub(case, args.out, args.backend)
    else:
        cdds_pub(case, args.duration, args.backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
