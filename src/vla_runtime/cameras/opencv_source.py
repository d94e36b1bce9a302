"""OpenCV capture: a V4L2 device (index or /dev/videoN) or a video file.

Options (`source.*` node parameters):
    device: int index, "/dev/videoN", or a video file path (required).
    loop: files only; start again at the end (default false: the file ends, reads time out).
    pace: files only; deliver frames at the file's frame rate (default true); false = as fast
        as they decode (benchmarks).

The capture time is `time.time_ns()` right after `grab()` returns, before `retrieve()` decodes:
the closest OpenCV gets to the exposure (V4L2 buffer timestamps are not exposed through
`VideoCapture`). For a device the requested width/height/fps are set and read back; a mode
the device refuses is an error naming the mode it gave (OpenCV cannot list a device's modes:
`v4l2-ctl --list-formats-ext` does). A file plays at its own size; `camera_node` resizes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from vla_runtime.cameras.base import CameraError, CameraTimeout, Frame, FrameSource, SourceConfig

_NS_PER_S = 1_000_000_000


def _flag(options: Any, key: str, default: bool) -> bool:
    value = options.get(key, default)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class OpenCVSource(FrameSource):
    """One `cv2.VideoCapture`; `read()` grabs, stamps, decodes and converts BGR to RGB."""

    def __init__(self, config: SourceConfig) -> None:
        super().__init__(config)
        options = config.options
        if "device" not in options or options["device"] in ("", None):
            raise CameraError(
                "the opencv source needs source.device: an index (0), /dev/videoN or a file"
            )
        device = options["device"]
        self.device: int | str = device
        if isinstance(device, str) and device.strip().isdigit():
            self.device = int(device)
        self.is_file = isinstance(self.device, str) and not self.device.startswith("/dev/")
        self.loop = _flag(options, "loop", False)
        self.pace = _flag(options, "pace", True)
        self._capture: Any = None
        self._sequence = 0
        self._pending = False  # a grabbed frame waits for retrieve() (the file check in open())
        self._pending_ns = 0
        self._period_ns = 0
        self._next_due_ns = 0  # monotonic

    def open(self) -> None:
        if self.is_file:
            self._open_file(str(self.device))
        else:
            self._open_device()
        self._sequence = 0
        self._next_due_ns = time.monotonic_ns()

    def _open_file(self, path: str) -> None:
        if not Path(path).is_file():
            raise CameraError(f"video file {path} does not exist")
        capture = cv2.VideoCapture(path)
        if not capture.isOpened():
            capture.release()
            raise CameraError(f"cannot open video file {path}: not a video OpenCV can decode")
        # Some corrupt files open but yield nothing: grab once so open() fails, not read().
        if not capture.grab():
            capture.release()
            raise CameraError(f"video file {path} has no readable frame (corrupt or empty)")
        self._capture = capture
        self._pending, self._pending_ns = True, time.time_ns()
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        if not 0 < fps < 1000:  # containers without a rate report 0 (or nonsense)
            fps = self.config.fps if self.config.fps > 0 else 30.0
        self._period_ns = int(_NS_PER_S / fps) if self.pace else 0

    def _open_device(self) -> None:
        device = self.device
        if isinstance(device, str) and not os.path.exists(device):
            raise CameraError(f"no video device {device} (ls /dev/video* lists those present)")
        capture = cv2.VideoCapture(device)
        if not capture.isOpened():
            capture.release()
            raise CameraError(f"cannot open video device {device!r} (missing, or busy?)")
        width, height, fps = self.config.width, self.config.height, self.config.fps
        if width > 0 and height > 0:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps > 0:
            capture.set(cv2.CAP_PROP_FPS, fps)
        got = (
            int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
        if width > 0 and height > 0 and got != (width, height):
            capture.release()
            raise CameraError(
                f"video device {device!r} refused {width}x{height}: it gave {got[0]}x{got[1]} "
                f"at {capture.get(cv2.CAP_PROP_FPS):g} fps; set width/height to a mode it "
                "supports (v4l2-ctl --list-formats-ext) or 0 for its default"
            )
        self._capture = capture
        self._pending = False
        self._period_ns = 0  # the device paces itself

    def read(self, timeout_s: float) -> Frame:
        capture = self._capture
        if capture is None:
            raise CameraError("read() before open()")
        if self._period_ns:
            wait_ns = self._next_due_ns - time.monotonic_ns()
            if wait_ns > timeout_s * _NS_PER_S:
                time.sleep(timeout_s)
                raise CameraTimeout(f"next frame of {self.device} not due within {timeout_s} s")
            if wait_ns > 0:
                time.sleep(wait_ns / _NS_PER_S)
            # Steady pacing from the schedule; after a long pause resynchronise, never burst.
            self._next_due_ns = max(self._next_due_ns + self._period_ns, time.monotonic_ns())
        if self._pending:
            self._pending = False
            capture_ns = time.time_ns() if self._period_ns else self._pending_ns
        else:
            capture_ns = self._grab(capture, timeout_s)
        ok, bgr = capture.retrieve()
        if not ok or bgr is None:
            raise CameraError(f"cannot decode a frame of {self.device} (corrupt data?)")
        self._sequence += 1
        return Frame(image=self._to_rgb(bgr), capture_ns=capture_ns, sequence=self._sequence)

    def _grab(self, capture: Any, timeout_s: float) -> int:
        if capture.grab():
            return time.time_ns()
        if not self.is_file:
            raise CameraError(f"video device {self.device!r} stopped delivering frames")
        if self.loop and self._sequence > 0:
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            if capture.grab():
                return time.time_ns()
        time.sleep(timeout_s)  # the end of the file: the node sees a stall, not a busy loop
        raise CameraTimeout(f"end of video file {self.device}")

    @staticmethod
    def _to_rgb(bgr: Any) -> npt.NDArray[np.uint8]:
        pixels = np.asarray(bgr, dtype=np.uint8)
        if pixels.ndim == 2:
            return np.asarray(cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB), dtype=np.uint8)
        if pixels.shape[2] == 4:
            return np.asarray(cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGB), dtype=np.uint8)
        return np.asarray(cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB), dtype=np.uint8)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        self._pending = False
