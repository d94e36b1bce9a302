"""cameras/ingest.py: centre-crop + resize, encodings to RGB, and the node's frame counters."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from vla_runtime.cameras import ingest
from vla_runtime.cameras.base import CameraError, CameraTimeout, Frame, FrameSource, SourceConfig

MS = 1_000_000


def test_crop_box_keeps_the_centre_at_the_output_aspect() -> None:
    assert ingest.crop_box(480, 640, 224, 224) == (0, 80, 480, 480)  # wide: trim columns
    assert ingest.crop_box(640, 480, 224, 224) == (80, 0, 480, 480)  # tall: trim rows
    assert ingest.crop_box(480, 640, 240, 320) == (0, 0, 480, 640)  # same aspect: all of it


def test_fit_crops_the_centre_then_resizes() -> None:
    image = np.zeros((480, 640, 3), np.uint8)
    image[:, :80] = 255  # the left band the square crop removes
    image[:, 560:] = 255  # and the right one
    image[:, 80:560, 1] = 100
    out = ingest.fit(image, 224, 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert (out[..., 0] == 0).all() and (out[..., 1] == 100).all()


def test_fit_with_zero_sizes_is_the_identity_and_one_zero_keeps_that_side() -> None:
    image = np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3)
    assert ingest.fit(image, 0, 0) is image
    assert ingest.fit(image, 48, 0).shape == (48, 64, 3)
    assert ingest.fit(image, 24, 0).shape == (24, 64, 3)  # same width, rows cropped + halved


def test_fit_area_averages_when_downscaling() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    image[::2, ::2] = 200  # a checkerboard of 2x2 blocks' top-left pixels
    out = ingest.fit(image, 2, 2)
    assert (out == 50).all()  # the mean of each 2x2 block, not a sample of it


def test_intrinsics_follow_the_crop_and_the_scale() -> None:
    fx, fy, cx, cy = ingest.fit_intrinsics((600.0, 600.0, 319.5, 239.5), 480, 640, 240, 240)
    assert fx == pytest.approx(300.0) and fy == pytest.approx(300.0)
    # The principal point at the image centre stays at the (square) output's centre.
    assert cx == pytest.approx(119.5) and cy == pytest.approx(119.5)
    assert ingest.fit_intrinsics((1.0, 2.0, 3.0, 4.0), 10, 10, 0, 0) == (1.0, 2.0, 3.0, 4.0)


def test_to_rgb_handles_the_common_encodings() -> None:
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0] = 9  # blue
    assert (ingest.to_rgb(bgr, "bgr8")[..., 2] == 9).all()
    assert (ingest.to_rgb(bgr, "rgb8")[..., 0] == 9).all()
    rgba = np.zeros((2, 3, 4), np.uint8)
    assert ingest.to_rgb(rgba, "rgba8").shape == (2, 3, 3)
    mono = np.full((2, 3), 7, np.uint8)
    assert (ingest.to_rgb(mono, "mono8") == 7).all() and ingest.to_rgb(mono, "mono8").shape[2] == 3
    with pytest.raises(ValueError, match="16UC1"):
        ingest.to_rgb(np.zeros((2, 3), np.uint16), "16UC1")


def test_stats_count_published_dropped_and_late_frames() -> None:
    stats = ingest.FrameStats(fps=30.0, late_ms=20.0)
    stats.started(0)
    stats.published(1, capture_ns=0, publish_ns=5 * MS, now_ns=10 * MS)
    stats.published(2, capture_ns=0, publish_ns=25 * MS, now_ns=20 * MS)  # late
    stats.published(5, capture_ns=0, publish_ns=5 * MS, now_ns=1_000 * MS)  # 3 dropped
    snap = stats.snapshot(now_ns=1_000 * MS)
    assert (snap.published, snap.dropped, snap.late, snap.stalls) == (3, 2, 1, 0)
    assert snap.last_latency_ms == pytest.approx(5.0)
    level, _, values = ingest.diagnostics("wrist", snap)
    assert level == "OK" and values["published"] == "3" and values["dropped"] == "2"


def test_a_stall_is_reported_once_after_two_frame_periods_and_clears_with_a_frame() -> None:
    stats = ingest.FrameStats(fps=10.0, late_ms=50.0)  # a stall is 200 ms without a frame
    stats.started(0)
    assert not stats.check_stall(199 * MS)
    assert stats.check_stall(200 * MS)
    assert not stats.check_stall(300 * MS)  # once per stall
    level, message, _ = ingest.diagnostics("wrist", stats.snapshot(300 * MS))
    assert level == "WARN" and "stalled" in message
    stats.published(1, 0, 1, 310 * MS)
    assert not stats.snapshot(310 * MS).stalled
    assert stats.check_stall(510 * MS)
    assert stats.snapshot(510 * MS).stalls == 2


def test_rate_is_frames_per_second_between_snapshots_and_errors_show_as_error() -> None:
    stats = ingest.FrameStats(fps=30.0, late_ms=50.0)
    stats.snapshot(0)
    for index in range(15):
        stats.published(index, 0, 0, index * 33 * MS)
    assert stats.snapshot(500 * MS).rate_hz == pytest.approx(30.0)
    stats.failed("video device 0 stopped delivering frames")
    level, message, values = ingest.diagnostics("top", stats.snapshot(600 * MS))
    assert level == "ERROR" and "stopped delivering" in message and values["error"]


class Scripted(FrameSource):
    """A source playing a script: "frame", "timeout" or "error" per read (then timeouts)."""

    def __init__(self, script: list[str]) -> None:
        super().__init__(SourceConfig())
        self.script = script
        self.opens = 0
        self.closes = 0
        self.sequence = 0

    def open(self) -> None:
        self.opens += 1

    def read(self, timeout_s: float) -> Frame:
        step = self.script.pop(0) if self.script else "timeout"
        if step == "timeout":
            time.sleep(timeout_s)
            raise CameraTimeout("nothing")
        if step == "error":
            raise CameraError("unplugged")
        self.sequence += 1
        return Frame(np.zeros((2, 2, 3), np.uint8), time.time_ns(), self.sequence)

    def close(self) -> None:
        self.closes += 1


def test_the_reader_hands_frames_on_and_reopens_after_an_error_with_backoff() -> None:
    source = Scripted(["frame", "timeout", "frame", "error", "error", "frame"])
    stats = ingest.FrameStats(fps=100.0, late_ms=50.0)
    frames: list[Frame] = []
    errors: list[str] = []
    reopened = threading.Event()
    reader = ingest.SourceReader(
        source, stats, frames.append, errors.append, read_timeout_s=0.01,
        on_reopen=reopened.set, backoff_s=(0.01, 0.02),
    )  # fmt: skip
    reader.start()
    deadline = time.monotonic() + 5.0
    while len(frames) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    reader.stop()
    assert len(frames) == 3 and errors == ["unplugged", "unplugged"]
    assert reopened.is_set() and reader.reopened == 2 and source.opens == 2
    assert source.closes >= 3  # after each error, and at stop()


def test_a_failing_frame_callback_does_not_end_the_reader() -> None:
    source = Scripted(["frame", "frame"])
    errors: list[str] = []

    def explode(_frame: Frame) -> None:
        raise RuntimeError("publisher gone")

    reader = ingest.SourceReader(
        source, ingest.FrameStats(100.0, 50.0), explode, errors.append, read_timeout_s=0.01
    )
    reader.start()
    deadline = time.monotonic() + 5.0
    while len(errors) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    reader.stop()
    assert errors == ["frame not published: publisher gone"] * 2 and source.opens == 0
