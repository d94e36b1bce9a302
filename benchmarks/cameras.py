#!/usr/bin/env python3
"""Capture→publish latency and CPU per camera at 640x480@30 (issue 5).

Cases:

- ``opencv_file``: `OpenCVSource` reading a generated 640x480@30 MJPG video file (looping, paced
  at the file's rate); capture time = right after `grab()`.
- ``realsense_software``: `RealSenseSource` fed by a pyrealsense2 software device (rgb8) from a
  feeder thread in the same process at 30 Hz; capture time = the frame's system-time stamp, set
  just before `on_video_frame`. The feeder's own CPU (copying 0.9 MB into the SDK per frame) is in
  the process's CPU.
- ``camera_node_opencv_file``: the shipped `camera_node` process (`source:=opencv`, the same
  file, looping), measured from outside: capture→receive at the subscriber and the node's CPU
  (/proc) over the window; publish latency is not visible from outside. The realsense source
  cannot be measured this way: a software device lives in the process that made it (librealsense
  does not enumerate software devices to other contexts).

Each camera runs in its own process, exactly like one `camera_node` instance would: `read()` →
`numpy_to_image` → `publish()` of `sensor_msgs/Image` (stamped with the capture time) on the
zenoh backend, through a router on a free loopback port, to a subscriber process. Reported per
camera: capture→publish latency (until `publish()` returns) and capture→receive latency (at the
subscriber's callback), p50/p99 [ms], frames published, and the camera process's CPU [% of one
core] over the measured window (`os.times()`, all threads).

Usage::

    python benchmarks/cameras.py --quick     # 5 s per camera
    python benchmarks/cameras.py             # 20 s per camera

The last line of stdout is one JSON object ``{"cameras": [...]}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import child_env, cpu_seconds, free_port, machine, stop_process, wait_port

HERE = Path(__file__).resolve().parent
WIDTH, HEIGHT, FPS = 640, 480, 30
WARMUP_S = 1.0
TOPIC = "/cameras/bench/image_raw"
CASES = ("opencv_file", "realsense_software", "camera_node_opencv_file")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def make_video(path: Path, seconds: float = 4.0) -> None:
    """A 640x480@30 MJPG file with moving content (so decode cost is realistic)."""
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (WIDTH, HEIGHT))
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    for index in range(int(seconds * FPS)):
        frame = np.roll(base, index * 4, axis=1)
        cv2.putText(frame, str(index), (40, 240), cv2.FONT_HERSHEY_SIMPLEX, 3, (255, 255, 255), 5)
        writer.write(frame)
    writer.release()


def software_camera() -> tuple[Any, Any, Any]:
    """A pyrealsense2 software device with one rgb8 colour stream (device, sensor, profile)."""
    import pyrealsense2 as rs

    device = rs.software_device()
    device.register_info(rs.camera_info.serial_number, "bench")
    sensor = device.add_sensor("Color")
    stream = rs.video_stream()
    stream.type, stream.index, stream.uid = rs.stream.color, 0, 0
    stream.width, stream.height, stream.fps, stream.bpp, stream.fmt = (
        WIDTH,
        HEIGHT,
        FPS,
        3,
        rs.format.rgb8,
    )
    intrinsics = rs.intrinsics()
    intrinsics.width, intrinsics.height = WIDTH, HEIGHT
    intrinsics.fx = intrinsics.fy = 600.0
    intrinsics.ppx, intrinsics.ppy = WIDTH / 2, HEIGHT / 2
    stream.intrinsics = intrinsics
    return device, sensor, sensor.add_video_stream(stream)


def feed(sensor: Any, profile: Any, stop: threading.Event) -> None:
    """Push 30 Hz frames stamped (system time) just before they enter the SDK."""
    import numpy as np
    import pyrealsense2 as rs

    patterns = [np.full((HEIGHT, WIDTH, 3), value, np.uint8) for value in range(0, 256, 32)]
    period_ns = 1_000_000_000 // FPS
    due = time.monotonic_ns()
    number = 0
    while not stop.is_set():
        frame = rs.software_video_frame()
        frame.pixels = patterns[number % len(patterns)]
        frame.bpp, frame.stride = 3, 3 * WIDTH
        frame.timestamp = time.time_ns() / 1e6
        frame.domain = rs.timestamp_domain.system_time
        frame.frame_number = number
        frame.profile = profile.as_video_stream_profile()
        sensor.on_video_frame(frame)
        number += 1
        due += period_ns
        time.sleep(max(0.0, (due - time.monotonic_ns()) / 1e9))


def run_camera(case: str, duration_s: float, video: str) -> None:
    """Child: one camera's capture→publish loop; prints one JSON line."""
    from vla_runtime import ros
    from vla_runtime.cameras.base import CameraTimeout, SourceConfig
    from vla_runtime.ros.convert import numpy_to_image
    from vla_runtime.ros.interfaces import get_message

    stop = threading.Event()
    if case == "opencv_file":
        from vla_runtime.cameras.opencv_source import OpenCVSource

        source: Any = OpenCVSource(
            SourceConfig(WIDTH, HEIGHT, FPS, options={"device": video, "loop": True})
        )
    else:
        from vla_runtime.cameras.realsense_source import RealSenseSource

        device, sensor, profile = software_camera()
        source = RealSenseSource(SourceConfig(WIDTH, HEIGHT, FPS, options={"device": device}))
    ros.init()
    node = ros.Node("bench_camera")
    publisher = node.create_publisher(
        get_message("sensor_msgs/msg/Image"), TOPIC, ros.qos_profile_sensor_data
    )
    source.open()
    if case != "opencv_file":
        threading.Thread(target=feed, args=(sensor, profile, stop), daemon=True).start()
    latencies_ms: list[float] = []
    start = time.monotonic()
    cpu_start = None
    while (elapsed := time.monotonic() - start) < WARMUP_S + duration_s:
        try:
            frame = source.read(timeout_s=1.0)
        except CameraTimeout:
            continue
        publisher.publish(numpy_to_image(frame.image, "rgb8", stamp_ns=frame.capture_ns))
        done_ns = time.time_ns()
        if elapsed >= WARMUP_S:
            if cpu_start is None:
                cpu_start, wall_start = os.times(), time.monotonic()
            latencies_ms.append((done_ns - frame.capture_ns) / 1e6)
    cpu_end, wall_end = os.times(), time.monotonic()
    stop.set()
    source.close()
    assert cpu_start is not None
    cpu_s = (cpu_end.user + cpu_end.system) - (cpu_start.user + cpu_start.system)
    result = {
        "case": case,
        "published": len(latencies_ms),
        "fps": len(latencies_ms) / (wall_end - wall_start),
        "publish_p50_ms": _percentile(latencies_ms, 50),
        "publish_p99_ms": _percentile(latencies_ms, 99),
        "cpu_pct": 100.0 * cpu_s / (wall_end - wall_start),
    }
    print("RESULT " + json.dumps(result), flush=True)
    node.destroy_node()
    ros.shutdown()
    os._exit(0)


def run_subscriber(duration_s: float) -> None:
    """Child: receive the images; print capture→receive latency (after warm-up)."""
    from vla_runtime import ros
    from vla_runtime.ros.interfaces import get_message

    ros.init()
    node = ros.Node("bench_camera_sub")
    latencies_ms: list[float] = []
    start = time.monotonic()

    def on_image(msg: Any) -> None:
        now_ns = time.time_ns()
        if time.monotonic() - start >= WARMUP_S:
            stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            latencies_ms.append((now_ns - stamp_ns) / 1e6)

    node.create_subscription(
        get_message("sensor_msgs/msg/Image"),
        TOPIC,
        on_image,
        ros.qos_profile_sensor_data,
    )
    print("READY", flush=True)
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        ros.spin_once(node, timeout_sec=0.1)
    result = {
        "received": len(latencies_ms),
        "receive_p50_ms": _percentile(latencies_ms, 50),
        "receive_p99_ms": _percentile(latencies_ms, 99),
    }
    print("RESULT " + json.dumps(result), flush=True)
    os._exit(0)


def _result(process: subprocess.Popen[str], timeout_s: float) -> dict[str, Any]:
    out, err = process.communicate(timeout=timeout_s)
    for line in out.splitlines():
        if line.startswith("RESULT "):
            parsed: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return parsed
    raise RuntimeError(f"child failed (rc {process.returncode}): {err[-800:]}")


def run_camera_node(duration_s: float, video: Path, env: dict[str, str]) -> dict[str, Any]:
    """The real node as a process; CPU from /proc over the measured window."""
    parameters = ["name:=bench", "source:=opencv", f"source.device:={video}", "source.loop:=true"]
    command = [sys.executable, "-m", "vla_runtime.nodes.camera_node", "--ros-args"]
    for parameter in parameters:
        command += ["-p", parameter]
    node = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(WARMUP_S + 1.0)  # start-up (imports) + warm-up
        if node.poll() is not None:
            raise RuntimeError(
                f"camera_node exited: {node.stderr.read()[-800:] if node.stderr else ''}"
            )
        cpu_start, wall_start = cpu_seconds(node.pid), time.monotonic()
        time.sleep(duration_s)
        cpu_end, wall_end = cpu_seconds(node.pid), time.monotonic()
    finally:
        stop_process(node)
    return {
        "case": "camera_node_opencv_file",
        "published": None,  # not visible from outside the node
        "fps": None,
        "publish_p50_ms": None,
        "publish_p99_ms": None,
        "cpu_pct": 100.0 * (cpu_end - cpu_start) / (wall_end - wall_start),
    }


def measure(case: str, duration_s: float, video: Path, env: dict[str, str]) -> dict[str, Any]:
    script = str(Path(__file__).resolve())
    common = ["--duration", str(duration_s), "--video", str(video)]
    sub = subprocess.Popen(
        [sys.executable, script, "--role", "sub", *common],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert sub.stdout is not None
        sub.stdout.readline()  # READY
        if case == "camera_node_opencv_file":
            result = run_camera_node(duration_s, video, env)
        else:
            camera = subprocess.Popen(
                [sys.executable, script, "--role", "camera", "--case", case, *common],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            result = _result(camera, duration_s + 60)
        result.update(_result(sub, duration_s + 60))
        return result
    finally:
        stop_process(sub)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 s per camera")
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--role", choices=("camera", "sub"), help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--video", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    duration_s = args.duration or (5.0 if args.quick else 20.0)
    if args.role == "camera":
        run_camera(args.case, duration_s, args.video)
    if args.role == "sub":
        run_subscriber(duration_s + WARMUP_S + 8.0)

    port = free_port()
    endpoint = f"tcp/127.0.0.1:{port}"
    env = child_env(VLA_RUNTIME_MIDDLEWARE="zenoh", VLA_RUNTIME_ROUTER=endpoint)
    router = subprocess.Popen(
        [sys.executable, "-m", "vla_runtime.cli", "router", "--listen", endpoint],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results = []
    try:
        if not wait_port(port, 10.0):
            raise RuntimeError("the zenoh router did not start")
        with tempfile.TemporaryDirectory() as tmp:
            video = Path(tmp) / "bench_640x480_30.avi"
            make_video(video)
            for case in args.cases.split(","):
                try:
                    results.append(measure(case, duration_s, video, env))
                except Exception as error:  # report and go on with the other camera
                    print(f"{case}: skipped ({error})", file=sys.stderr)
    finally:
        stop_process(router)
    print(f"machine: {machine()}; {duration_s:g} s per camera after {WARMUP_S:g} s warm-up")

    def cell(value: float | None, width: int, digits: int) -> str:
        return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"

    print(
        f"{'camera':<26}{'fps':>6}{'pub p50':>9}{'pub p99':>9}"
        f"{'recv p50':>10}{'recv p99':>10}{'CPU %':>8}"
    )
    for r in results:
        print(
            f"{r['case']:<26}{cell(r['fps'], 6, 1)}{cell(r['publish_p50_ms'], 9, 2)}"
            f"{cell(r['publish_p99_ms'], 9, 2)}{cell(r['receive_p50_ms'], 10, 2)}"
            f"{cell(r['receive_p99_ms'], 10, 2)}{cell(r['cpu_pct'], 8, 1)}"
        )
    print(json.dumps({"cameras": results}))


if __name__ == "__main__":
    main()
