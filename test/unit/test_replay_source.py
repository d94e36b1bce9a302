"""ReplaySource on MCAP files written with the project's McapRecorder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from vla_runtime.cameras.base import CameraError, CameraTimeout, SourceConfig, source_class
from vla_runtime.profiling.recorder import McapRecorder

STORE = get_typestore(Stores.ROS2_JAZZY)
T = STORE.types
START_NS = 1_700_000_000_000_000_000
TOPIC = "/cameras/wrist/image_raw"
LATENCY_NS = 4_000_000  # recorded capture -> log time


def image_cdr(stamp_ns: int, value: int, encoding: str = "bgr8") -> bytes:
    stamp = T["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    pixels = np.zeros((4, 6, 3), np.uint8)
    pixels[..., 0] = value % 256  # blue in bgr8
    msg = T["sensor_msgs/msg/Image"](
        header=T["std_msgs/msg/Header"](stamp=stamp, frame_id="wrist"),
        height=4,
        width=6,
        encoding=encoding,
        is_bigendian=0,
        step=18,
        data=pixels.reshape(-1),
    )
    return bytes(STORE.serialize_cdr(msg, "sensor_msgs/msg/Image"))


def record(
    path: Path, spacing_ms: list[int], topic: str = TOPIC, chunk_size: int = 1 << 20
) -> Path:
    recorder = McapRecorder(path, chunk_size=chunk_size)
    recorder.add_topic(topic, "sensor_msgs/msg/Image")
    recorder.add_topic("/chatter", "std_msgs/msg/String")
    log_ns = START_NS
    for index, gap in enumerate([0, *spacing_ms]):
        log_ns += gap * 1_000_000
        recorder.write(topic, image_cdr(log_ns - LATENCY_NS, 10 * (index + 1)), log_ns)
    recorder.close()
    return path


def replay(path: Path, **options: Any) -> Any:
    return source_class("replay")(SourceConfig(options={"file": str(path), **options}))


def test_frames_play_at_the_recorded_spacing_stamped_on_todays_clock(tmp_path: Path) -> None:
    path = record(tmp_path / "run.mcap", [100, 50, 150])
    with replay(path, camera="wrist") as camera:
        started = time.time_ns()
        frames = [camera.read(1.0) for _ in range(4)]
        arrivals_done = time.time_ns()
        with pytest.raises(CameraTimeout, match="end of recording"):
            camera.read(0.01)
    stamps = np.array([f.capture_ns for f in frames])
    # The recorded capture spacing, exactly (one constant shift).
    assert np.diff(stamps).tolist() == [100_000_000, 50_000_000, 150_000_000]
    # The first frame is stamped "now" minus its recorded capture->log latency.
    assert started - LATENCY_NS - 50_000_000 <= stamps[0] <= started
    assert arrivals_done - started >= 0.29e9  # played in real time, not all at once
    assert [int(f.image[0, 0, 2]) for f in frames] == [10, 20, 30, 40]  # bgr8 -> RGB
    assert [f.sequence for f in frames] == [1, 2, 3, 4]


def test_loop_plays_again_with_time_moving_forward(tmp_path: Path) -> None:
    path = record(tmp_path / "run.mcap", [20])
    with replay(path, topic=TOPIC, loop=True) as camera:
        frames = [camera.read(1.0) for _ in range(5)]
    assert [int(f.image[0, 0, 2]) for f in frames] == [10, 20, 10, 20, 10]
    stamps = [f.capture_ns for f in frames]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


def test_a_single_image_topic_needs_no_name_and_a_wrong_one_lists_the_topics(
    tmp_path: Path,
) -> None:
    path = record(tmp_path / "run.mcap", [10], topic="/sim/top/image")
    with replay(path) as camera:
        assert camera.read(1.0).image.shape == (4, 6, 3)
    with pytest.raises(CameraError, match="/sim/top/image"):
        replay(path, camera="wrist").open()


def test_a_truncated_recording_plays_as_far_as_it_goes(tmp_path: Path) -> None:
    path = record(tmp_path / "run.mcap", [10] * 40, chunk_size=1024)  # several chunks
    data = path.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: len(data) // 2])  # no summary, no footer, a chunk cut in half
    with replay(cut, loop=False, topic=TOPIC) as camera:
        count = 0
        with pytest.raises(CameraTimeout):
            while True:
                camera.read(0.2)
                count += 1
    assert 5 <= count < 41  # the whole chunks before the cut, then the end


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match="does not exist"):
        replay(tmp_path / "none.mcap").open()
