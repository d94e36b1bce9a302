"""OpenCVSource on video files written here with cv2.VideoWriter (MJPG in AVI)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from vla_runtime.cameras.base import (
    CameraError,
    CameraTimeout,
    FrameSource,
    SourceConfig,
    source_class,
)

cv2 = pytest.importorskip("cv2")

FPS = 20.0
COLOURS_RGB = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def write_video(path: Path, frames: int = 4, size: tuple[int, int] = (64, 48)) -> Path:
    """Frames of solid colours (COLOURS_RGB in turn), written as BGR like OpenCV expects."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, size)
    assert writer.isOpened()
    for index in range(frames):
        rgb = np.zeros((size[1], size[0], 3), np.uint8)
        rgb[:] = COLOURS_RGB[index % len(COLOURS_RGB)]
        writer.write(np.ascontiguousarray(rgb[..., ::-1]))
    writer.release()
    return path


def source(device: object, **options: object) -> FrameSource:
    config = SourceConfig(0, 0, FPS, {"device": device, **options})
    return source_class("opencv")(config)


def dominant(image: np.ndarray) -> int:
    return int(np.argmax(image.reshape(-1, 3).mean(axis=0)))


def test_frames_of_a_file_come_out_rgb_with_sequence_and_capture_time(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.avi")
    with source(str(path), pace=False) as camera:
        frames = []
        for _ in range(3):
            before = time.time_ns()
            frames.append(camera.read(1.0))
            assert before - 1_000_000_000 <= frames[-1].capture_ns <= time.time_ns()
    assert [f.sequence for f in frames] == [1, 2, 3]
    assert [dominant(f.image) for f in frames] == [0, 1, 2]  # red, green, blue: RGB order
    assert frames[0].image.shape == (48, 64, 3) and frames[0].image.dtype == np.uint8


def test_a_file_without_loop_ends_with_timeouts_and_with_loop_starts_again(
    tmp_path: Path,
) -> None:
    path = write_video(tmp_path / "clip.avi", frames=2)
    with source(str(path), pace=False) as camera:
        camera.read(1.0), camera.read(1.0)
        with pytest.raises(CameraTimeout, match="end of video file"):
            camera.read(0.01)
    with source(str(path), pace=False, loop=True) as camera:
        frames = [camera.read(1.0) for _ in range(5)]
    assert [dominant(f.image) for f in frames] == [0, 1, 0, 1, 0]
    assert [f.sequence for f in frames] == [1, 2, 3, 4, 5]  # a loop is not a gap


def test_pace_plays_at_the_file_rate(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.avi", frames=6)
    with source(str(path), pace="true") as camera:
        stamps = [camera.read(1.0).capture_ns for _ in range(6)]
    spacing_s = np.diff(stamps) / 1e9
    # 50 ms apart on average; generous bounds for a loaded 2-core machine.
    assert 0.04 <= float(np.mean(spacing_s)) <= 0.09


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match="does not exist"):
        source(str(tmp_path / "nope.avi")).open()


def test_a_corrupt_file_is_a_camera_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.avi"
    path.write_bytes(b"RIFF\x00\x01\x00\x00AVI LIST" + bytes(range(256)) * 20)
    with pytest.raises(CameraError, match=r"corrupt|cannot open"):
        source(str(path)).open()


def test_a_missing_device_is_a_clear_error() -> None:
    with pytest.raises(CameraError, match="no video device /dev/video99"):
        source("/dev/video99").open()


def test_the_device_option_is_required() -> None:
    with pytest.raises(CameraError, match=r"source\.device"):
        source_class("opencv")(SourceConfig())


def test_an_unknown_source_suggests_the_close_name() -> None:
    with pytest.raises(CameraError, match="Did you mean 'opencv'"):
        source_class("opencvv")
