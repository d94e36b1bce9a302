"""camera_node in its own process, watched (and for ros_topic, fed) by this test over zenoh.

Covered: the opencv source on a generated video file (stamped, centre-cropped + resized rgb8
frames and a matching camera_info), the ros_topic source re-publishing this test's frames with
their original stamps, the replay source playing an MCAP written by the project's recorder at
the recorded spacing, a file that ends without loop reported as a stall while the node keeps
running, and a missing file ending the process with exit code 2.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from graph_helpers import start_process, stop
from rosbags.typesys import Stores, get_typestore

from vla_runtime import ros
from vla_runtime.profiling.recorder import McapRecorder
from vla_runtime.ros import convert
from vla_runtime.ros.interfaces import get_message

pytestmark = pytest.mark.integration
cv2 = pytest.importorskip("cv2")

Image = get_message("sensor_msgs/msg/Image")
CameraInfo = get_message("sensor_msgs/msg/CameraInfo")
DiagnosticArray = get_message("diagnostic_msgs/msg/DiagnosticArray")
START_S = 30.0  # node start-up on a loaded 2-core machine


def camera_node(name: str, *parameters: str) -> subprocess.Popen[str]:
    args = ["-p", f"name:={name}"]
    for parameter in parameters:
        args += ["-p", parameter]
    return start_process("-m", "vla_runtime.nodes.camera_node", "--ros-args", *args)


def write_video(path: Path, frames: int, fps: float = 20.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (80, 60))
    for index in range(frames):
        bgr = np.zeros((60, 80, 3), np.uint8)
        bgr[:, :, 2] = 200  # red
        bgr[:, :10] = 0  # left and right bands the square crop removes
        bgr[:, 70:] = 0
        bgr[0, 0, 1] = index  # keep frames distinct for the encoder
        writer.write(bgr)
    writer.release()
    return path


class Watcher:
    """This test's node: images, camera_info and diagnostics of one camera in, frames out."""

    def __init__(self, name: str) -> None:
        self.node = ros.Node(f"watch_{name}")
        self.lock = threading.Lock()
        self.images: list[tuple[int, Any]] = []  # (arrival ns, message)
        self.infos: list[Any] = []
        self.statuses: list[Any] = []
        sensor = ros.qos_profile_sensor_data
        self.node.create_subscription(Image, f"/cameras/{name}/image_raw", self._image, sensor)
        self.node.create_subscription(
            CameraInfo, f"/cameras/{name}/camera_info", self._info, sensor
        )
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._status(name), 10)
        self.feed = self.node.create_publisher(Image, "/test/raw", sensor)
        self.executor = ros.SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while ros.ok() and not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def _image(self, msg: Any) -> None:
        with self.lock:
            self.images.append((time.time_ns(), msg))

    def _info(self, msg: Any) -> None:
        with self.lock:
            self.infos.append(msg)

    def _status(self, name: str) -> Callable[[Any], None]:
        def on_status(msg: Any) -> None:
            with self.lock:
                self.statuses.extend(s for s in msg.status if s.name == f"camera: {name}")

        return on_status

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.node.destroy_node()


@pytest.fixture
def watch(ros_context: None) -> Iterator[Callable[[str], Watcher]]:
    watchers: list[Watcher] = []

    def make(name: str) -> Watcher:
        watchers.append(Watcher(name))
        return watchers[-1]

    yield make
    for watcher in watchers:
        watcher.close()


def wait_for(
    predicate: Callable[[], bool], timeout_s: float, what: str, process: subprocess.Popen[str]
) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert process.poll() is None, f"camera_node exited: {stop(process)}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def values_of(status: Any) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def test_opencv_file_frames_arrive_stamped_cropped_and_resized(
    watch: Callable[[str], Watcher], processes: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    video = write_video(tmp_path / "clip.avi", frames=10)
    watcher = watch("front")
    node = camera_node(
        "front", "source:=opencv", f"source.device:={video}", "source.loop:=true", "fps:=20.0",
        "output_width:=32", "output_height:=32",
    )  # fmt: skip
    processes.append(node)
    wait_for(lambda: len(watcher.images) >= 10, START_S, "ten frames", node)
    wait_for(lambda: any(s.level == 0 for s in watcher.statuses), 5.0, "an OK status", node)
    with watcher.lock:
        images, infos = list(watcher.images), list(watcher.infos)
        ok = [s for s in watcher.statuses if s.level == 0][-1]
    for arrival_ns, msg in images:
        assert (msg.encoding, msg.height, msg.width, msg.header.frame_id) == (
            "rgb8", 32, 32, "front",
        )  # fmt: skip
        stamp = convert.stamp_to_ns(msg.header.stamp)
        assert 0 <= arrival_ns - stamp < 2_000_000_000  # captured just before it arrived
        pixels = convert.image_to_numpy(msg)
        assert pixels[..., 0].min() > 150 and pixels[..., 2].max() < 60  # red, bands cropped
    assert infos and (infos[-1].width, infos[-1].height) == (32, 32)
    values = values_of(ok)
    assert int(values["published"]) >= 10 and float(values["rate_hz"]) > 5
    assert ok.hardware_id == "front"


def test_ros_topic_republishes_with_the_original_stamps(
    watch: Callable[[str], Watcher], processes: list[subprocess.Popen[str]]
) -> None:
    watcher = watch("sim_top")
    node = camera_node(
        "sim_top", "source:=ros_topic", "input_topic:=/test/raw", "output_width:=16",
        "output_height:=12",
    )  # fmt: skip
    processes.append(node)
    sent: list[int] = []
    bgr = np.zeros((48, 64, 3), np.uint8)
    bgr[..., 0] = 255  # blue in bgr8

    def received() -> bool:
        for _ in range(2):
            stamp = time.time_ns() - 7_000_000  # captured 7 ms ago
            sent.append(stamp)
            watcher.feed.publish(convert.numpy_to_image(bgr, "bgr8", stamp, "sim"))
            time.sleep(0.05)
        return len(watcher.images) >= 5

    wait_for(received, START_S, "re-published frames", node)
    with watcher.lock:
        images = list(watcher.images)
    for _, msg in images:
        assert convert.stamp_to_ns(msg.header.stamp) in sent
        assert (msg.encoding, msg.height, msg.width) == ("rgb8", 12, 16)
        assert (convert.image_to_numpy(msg)[..., 2] == 255).all()  # blue, now in RGB order


def record_frames(path: Path, spacing_ms: int, count: int, encoding: str = "rgb8") -> Path:
    store = get_typestore(Stores.ROS2_JAZZY)
    types = store.types
    recorder = McapRecorder(path)
    recorder.add_topic("/cameras/wrist/image_raw", "sensor_msgs/msg/Image")
    log_ns = 1_700_000_000_000_000_000
    bytes_per_channel = 2 if encoding.startswith("16") else 1
    for index in range(count):
        log_ns += spacing_ms * 1_000_000
        stamp = log_ns - 3_000_000
        msg = types["sensor_msgs/msg/Image"](
            header=types["std_msgs/msg/Header"](
                stamp=types["builtin_interfaces/msg/Time"](
                    sec=stamp // 10**9, nanosec=stamp % 10**9
                ),
                frame_id="wrist",
            ),
            height=8,
            width=8,
            encoding=encoding,
            is_bigendian=0,
            step=24 * bytes_per_channel,
            data=np.full(8 * 8 * 3 * bytes_per_channel, index, np.uint8),
        )
        payload = bytes(store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
        recorder.write("/cameras/wrist/image_raw", payload, log_ns)
    recorder.close()
    return path


def test_replay_plays_at_the_recorded_spacing_then_reports_the_stall(
    watch: Callable[[str], Watcher], processes: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    recording = record_frames(tmp_path / "run.mcap", spacing_ms=100, count=40)
    watcher = watch("wrist")
    node = camera_node("wrist", "source:=replay", f"source.file:={recording}", "fps:=10.0")
    processes.append(node)
    wait_for(lambda: len(watcher.images) >= 10, START_S, "replayed frames", node)

    def stalled() -> bool:
        with watcher.lock:
            return any(int(values_of(s)["stalls"]) >= 1 for s in watcher.statuses)

    # 40 frames at 100 ms: the recording ends ~4 s in; a stall within two frame periods.
    wait_for(stalled, 15.0, "a stall after the end of the recording", node)
    with watcher.lock:
        images = list(watcher.images)
        report = next(s for s in watcher.statuses if int(values_of(s)["stalls"]) >= 1)
    stamps = np.array([convert.stamp_to_ns(msg.header.stamp) for _, msg in images])
    values = [int(convert.image_to_numpy(msg)[0, 0, 0]) for _, msg in images]
    assert values == sorted(values)  # in recorded order
    # Stamps keep the recorded spacing exactly (the whole recording shifted by one constant);
    # a frame lost on the way leaves a multiple of it.
    gaps_ms = np.diff(stamps) / 1e6
    assert np.allclose(gaps_ms / 100.0, np.round(gaps_ms / 100.0), atol=1e-6)
    arrivals = np.array([arrival for arrival, _ in images])
    assert (arrivals[-1] - arrivals[0]) / 1e9 >= 0.08 * (values[-1] - values[0])  # real time
    assert report.level == 1 and "stalled" in report.message
    time.sleep(1.0)
    assert node.poll() is None  # keeps running (and trying)


def test_a_source_error_is_reported_and_the_source_re_opened(
    watch: Callable[[str], Watcher], processes: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    # 16UC3 frames (no RGB for them): the file opens, then every frame fails.
    recording = record_frames(tmp_path / "depth.mcap", 50, 20, encoding="16UC3")
    watcher = watch("depth")
    node = camera_node(
        "depth", "source:=replay", f"source.file:={recording}", "fps:=20.0",
        "source.topic:=/cameras/wrist/image_raw",
    )  # fmt: skip
    processes.append(node)

    def errors() -> list[Any]:
        with watcher.lock:
            return [s for s in watcher.statuses if s.level == 2]

    wait_for(lambda: len(errors()) >= 2, START_S, "ERROR statuses", node)
    assert "16UC3" in errors()[-1].message and values_of(errors()[-1])["published"] == "0"
    assert node.poll() is None
    assert "source re-opened" in stop(node)  # after the backoff, and again


def test_a_missing_video_file_exits_with_code_2_and_one_line() -> None:
    node = camera_node("front", "source:=opencv", "source.device:=/nonexistent/clip.avi")
    node.wait(timeout=60)
    output = stop(node)
    assert node.returncode == 2, output
    assert "camera_node: video file /nonexistent/clip.avi does not exist" in output
    assert "Traceback" not in output
