"""`vla-runtime record|report|top` against a running graph: a talker, the franka driver on its
emulator and a stand-in pipeline (camera frames, action chunks, policy and latency-monitor
statuses), as a user would type the commands. The recording must open in third-party readers."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from graph_helpers import child_env, stop
from rosbags.highlevel import AnyReader

from vla_runtime.profiling.plots import SECTIONS

with warnings.catch_warnings():
    # mcap_ros2.reader's module docstring is a copy of mcap_ros1's deprecation notice, and it
    # warns with it on import; read_ros2_messages itself is current API.
    warnings.simplefilter("ignore", DeprecationWarning)
    from mcap_ros2.reader import read_ros2_messages

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

# A camera at 20 Hz, a chunk every 4th frame, and the statuses policy_node and latency_monitor
# publish once a second (names and keys as they publish them).
PIPELINE = """
import time
import numpy as np
from vla_runtime import ros
from vla_runtime.ros import convert
from vla_runtime.ros.interfaces import get_message

Image = get_message("sensor_msgs/msg/Image")
Array = get_message("diagnostic_msgs/msg/DiagnosticArray")
Status = get_message("diagnostic_msgs/msg/DiagnosticStatus")
KeyValue = get_message("diagnostic_msgs/msg/KeyValue")
JointTrajectory = get_message("trajectory_msgs/msg/JointTrajectory")
JOINTS = [f"fr3_joint{i}" for i in range(1, 8)] + ["fr3_finger_joint1"]

def status(name, values, level=0, message="running"):
    return Status(level=level, name=name, message=message, hardware_id="test",
                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])

ros.init(args=[])
node = ros.Node("pipeline")
images = node.create_publisher(Image, "/cameras/top/image_raw", ros.qos_profile_sensor_data)
chunks = node.create_publisher(JointTrajectory, "/policy/action_chunk", 10)
diagnostics = node.create_publisher(Array, "/diagnostics", 10)
print("pipeline up", flush=True)
frame = 0
next_status = time.monotonic()
while ros.ok():
    capture_ns = time.time_ns()
    image = Image(height=4, width=4, encoding="rgb8", step=12, data=np.zeros(48, np.uint8))
    image.header.stamp.sec, image.header.stamp.nanosec = divmod(capture_ns, 10**9)
    images.publish(image)
    if frame % 4 == 0:
        rows = np.zeros((15, len(JOINTS)))
        chunks.publish(convert.numpy_to_joint_trajectory(
            JOINTS, rows, np.arange(15) / 15.0, stamp_ns=capture_ns))
    if time.monotonic() >= next_status:
        next_status += 1.0
        array = Array()
        array.header.stamp.sec, array.header.stamp.nanosec = divmod(time.time_ns(), 10**9)
        array.status = [
            status("policy", {"vision_ms": 10.0, "prefill_ms": 20.0, "depth_ms": 5.0,
                              "action_ms": 12.0, "total_ms": 47.0 + frame % 5,
                              "iterations": 1 + frame % 3, "changed_cells": frame % 40,
                              "inferences": frame}),
            status("latency_monitor/stage/camera_top",
                   {"p50_ms": 1.5, "p90_ms": 2.0, "p99_ms": 3.0, "p999_ms": 4.0,
                    "max_ms": 5.0, "count": frame, "rate_hz": 20.0}),
            status("latency_monitor/deadline/max_chunk_age", {"state": "ok"}, message="ok"),
        ]
        diagnostics.publish(array)
    frame += 1
    ros.spin_once(node, timeout_sec=0.05)
"""


def cli(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vla_runtime.cli", *args],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


@pytest.fixture(scope="module")
def graph(router: str) -> Iterator[None]:
    commands = [
        ["-m", "vla_runtime.drivers.emulators.franka_ros2"],
        [
            "-m",
            "vla_runtime.nodes.driver_node",
            "--ros-args",
            "--params-file",
            str(ROOT / "config/embodiments/franka.yaml"),
            "-p",
            "control_rate_hz:=100.0",
            "-p",
            "state_publish_rate_hz:=100.0",
        ],
        ["-c", "import sys; from vla_runtime.nodes.talker_node import main; sys.exit(main())"],
        ["-c", PIPELINE],
    ]
    processes = [
        subprocess.Popen(
            [sys.executable, *command],
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for command in commands
    ]
    time.sleep(3.0)  # every node up and its first statuses out
    try:
        assert all(p.poll() is None for p in processes), "a graph process died at start-up"
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            stop(process)


@pytest.fixture(scope="module")
def recording(graph: None, tmp_path_factory: Any) -> Path:
    path = tmp_path_factory.mktemp("record") / "graph.mcap"
    result = cli("record", "-o", str(path), "--duration", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "wrote" in result.stdout
    return path


EXPECTED = (
    "/chatter",
    "/cameras/top/image_raw",
    "/policy/action_chunk",
    "/robot/joint_commands",
    "/robot/mode",
    "/diagnostics",
)


def test_recording_opens_with_rosbags(recording: Path) -> None:
    with AnyReader([recording]) as reader:
        topics = {c.topic: c for c in reader.connections}
        assert set(EXPECTED) <= set(topics)
        chatter = [
            reader.deserialize(raw, c.msgtype)
            for c, _, raw in reader.messages(connections=[topics["/chatter"]])
        ]
        modes = [
            reader.deserialize(raw, c.msgtype).data
            for c, _, raw in reader.messages(connections=[topics["/robot/mode"]])
        ]
    assert chatter and chatter[0].data.startswith("hello")
    assert modes  # latched: recorded although it was published before the recorder started


def test_recording_opens_with_mcap_ros2_support(recording: Path) -> None:
    commands = list(read_ros2_messages(str(recording), topics=["/robot/joint_commands"]))
    assert len(commands) > 100  # 100 Hz for 3 s, minus discovery
    assert len(commands[0].ros_msg.name) == 8
    # publish_time is the header stamp (the driver's tick), log_time the receive time.
    first = commands[0]
    stamp = first.ros_msg.header.stamp
    assert first.publish_time_ns == stamp.sec * 10**9 + stamp.nanosec
    assert 0 <= first.log_time_ns - first.publish_time_ns < 2 * 10**9
    statuses = {
        s.name
        for m in read_ros2_messages(str(recording), topics=["/diagnostics"])
        for s in m.ros_msg.status
    }
    assert {"policy", "latency_monitor/stage/camera_top"} <= statuses
    assert any(name.startswith("driver") for name in statuses)


def test_report_has_every_plot(recording: Path) -> None:
    output = recording.with_suffix(".html")
    result = cli("report", str(recording), "-o", str(output))
    assert result.returncode == 0, result.stderr
    page = output.read_text()
    for section, title, _ in SECTIONS:
        assert f'id="{section}"' in page and title in page
    assert page.count("<svg") == len(SECTIONS)
    assert "camera top (capture → arrival)" in result.stdout
    assert "driver loop period: p50" in result.stdout


def test_top_once_shows_node_statuses(graph: None) -> None:
    result = cli("top", "--once", "--wait", "2.5")
    assert result.returncode == 0, result.stderr
    assert "policy" in result.stdout and "driver: franka" in result.stdout
    assert "camera_top" in result.stdout and "max_chunk_age" in result.stdout
