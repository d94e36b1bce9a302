"""What `camera_node` does to a frame between the source and the topic: crop, resize, count.

Pure Python (no middleware): `fit()` centre-crops to the output's aspect ratio then resizes,
`FrameStats` keeps the counters the node reports on /diagnostics once a second, and
`SourceReader` is the thread that reads a source, hands frames on and re-opens it after errors.

The resize is OpenCV's INTER_AREA: pixel-area averaging, the right filter for the downscaling
cameras do here (640x480 -> 224x224 or so), ~0.3 ms for 640x480 on one core, and no torch
import in a camera process. Upscaling falls back to bilinear inside OpenCV.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from vla_runtime.cameras.base import CameraTimeout, Frame, FrameSource

_NS_PER_S = 1_000_000_000


def crop_box(
    height: int, width: int, out_height: int, out_width: int
) -> tuple[int, int, int, int]:
    """(top, left, rows, cols) of the largest centred window with the output's aspect ratio."""
    if height * out_width > width * out_height:  # too tall: trim rows
        rows = max(1, round(width * out_height / out_width))
        return (height - rows) // 2, 0, rows, width
    cols = max(1, round(height * out_width / out_height))
    return 0, (width - cols) // 2, height, cols


def fit(image: npt.NDArray[np.uint8], out_height: int, out_width: int) -> npt.NDArray[np.uint8]:
    """Centre-crop `image` (HxWxC uint8) to the output's aspect, then resize to it.

    0 for both sizes returns the image unchanged; one 0 keeps that side of the crop.
    """
    if out_height <= 0 and out_width <= 0:
        return image
    height, width = image.shape[:2]
    out_height = out_height if out_height > 0 else height
    out_width = out_width if out_width > 0 else width
    if (height, width) == (out_height, out_width):
        return image
    top, left, rows, cols = crop_box(height, width, out_height, out_width)
    window = image[top : top + rows, left : left + cols]
    if (rows, cols) == (out_height, out_width):
        return np.ascontiguousarray(window)
    resized = cv2.resize(window, (out_width, out_height), interpolation=cv2.INTER_AREA)
    return np.asarray(resized, dtype=np.uint8).reshape(out_height, out_width, *image.shape[2:])


def fit_intrinsics(
    intrinsics: tuple[float, float, float, float],
    height: int,
    width: int,
    out_height: int,
    out_width: int,
) -> tuple[float, float, float, float]:
    """Pinhole (fx, fy, cx, cy) of a `height`x`width` image after `fit()` to the output size."""
    fx, fy, cx, cy = intrinsics
    if out_height <= 0 and out_width <= 0:
        return intrinsics
    out_height = out_height if out_height > 0 else height
    out_width = out_width if out_width > 0 else width
    top, left, rows, cols = crop_box(height, width, out_height, out_width)
    scale_x, scale_y = out_width / cols, out_height / rows
    # Pixel centres: x_out + 0.5 = (x_in + 0.5 - left) * scale (the resize's half-pixel model).
    return (
        fx * scale_x,
        fy * scale_y,
        (cx + 0.5 - left) * scale_x - 0.5,
        (cy + 0.5 - top) * scale_y - 0.5,
    )


def to_rgb(pixels: npt.NDArray[Any], encoding: str) -> npt.NDArray[np.uint8]:
    """An image of a common 8-bit encoding (rgb8, bgr8, rgba8, bgra8, mono8) as HxWx3 RGB.

    Raises:
        ValueError: another encoding.
    """
    if encoding == "rgb8":
        return np.ascontiguousarray(pixels, dtype=np.uint8)
    if encoding in ("bgr8", "bgra8"):
        return np.ascontiguousarray(pixels[..., 2::-1], dtype=np.uint8)
    if encoding == "rgba8":
        return np.ascontiguousarray(pixels[..., :3], dtype=np.uint8)
    if encoding == "mono8":
        gray = pixels.reshape(*pixels.shape[:2], 1).astype(np.uint8, copy=False)
        return np.ascontiguousarray(np.repeat(gray, 3, axis=2))
    raise ValueError(f"cannot ingest {encoding!r} images; rgb8, bgr8, rgba8, bgra8 or mono8")


@dataclass(frozen=True)
class StatsSnapshot:
    """Counters since start, and the rate over the last report period.

    Attributes:
        published: frames published.
        dropped: frames the source skipped (gaps in its sequence numbers).
        late: frames published more than `late_ms` after their capture.
        stalls: times no frame came for two frame periods.
        stalled: no frame for two frame periods right now.
        rate_hz: frames published per second since the previous snapshot.
        last_latency_ms: capture -> publish of the newest frame.
        error: the last source error (empty when none).
    """

    published: int
    dropped: int
    late: int
    stalls: int
    stalled: bool
    rate_hz: float
    last_latency_ms: float
    error: str


class FrameStats:
    """Thread-safe frame counters: the reader thread records, the timer thread snapshots.

    Args:
        fps: the source's nominal rate; a stall is no frame for two periods (1/fps each).
        late_ms: a frame published later than this after capture counts as late.
    """

    def __init__(self, fps: float, late_ms: float) -> None:
        self.stall_after_ns = int(2 * _NS_PER_S / fps) if fps > 0 else _NS_PER_S
        self.late_ns = int(late_ms * 1e6)
        self._lock = threading.Lock()
        self._published = 0
        self._dropped = 0
        self._late = 0
        self._stalls = 0
        self._stalled = False
        self._last_sequence: int | None = None
        self._last_frame_ns: int | None = None  # monotonic, when the last frame was published
        self._latency_ns = 0
        self._error = ""
        self._rate_count = 0
        self._rate_since_ns: int | None = None

    def started(self, now_ns: int) -> None:
        """The source opened at monotonic `now_ns`: the stall clock starts here."""
        with self._lock:
            self._last_frame_ns = now_ns
            self._last_sequence = None  # a re-opened source restarts its count
            if self._rate_since_ns is None:
                self._rate_since_ns = now_ns

    def published(self, sequence: int, capture_ns: int, publish_ns: int, now_ns: int) -> None:
        """One frame out: `capture_ns`/`publish_ns` on the system clock, `now_ns` monotonic."""
        with self._lock:
            if self._last_sequence is not None and sequence > self._last_sequence + 1:
                self._dropped += sequence - self._last_sequence - 1
            self._last_sequence = sequence
            self._published += 1
            self._rate_count += 1
            self._latency_ns = publish_ns - capture_ns
            if self._latency_ns > self.late_ns:
                self._late += 1
            self._last_frame_ns = now_ns
            self._stalled = False
            self._error = ""

    def failed(self, message: str) -> None:
        """The source raised (the reader re-opens it)."""
        with self._lock:
            self._error = message

    def check_stall(self, now_ns: int) -> bool:
        """True once per stall: when no frame came for two frame periods up to `now_ns`."""
        with self._lock:
            if self._stalled or self._last_frame_ns is None:
                return False
            if now_ns - self._last_frame_ns < self.stall_after_ns:
                return False
            self._stalled = True
            self._stalls += 1
            return True

    def snapshot(self, now_ns: int) -> StatsSnapshot:
        """The counters, and the rate since the previous snapshot (monotonic `now_ns`)."""
        with self._lock:
            since = self._rate_since_ns
            elapsed_s = (now_ns - since) / _NS_PER_S if since is not None else 0.0
            rate = self._rate_count / elapsed_s if elapsed_s > 0 else 0.0
            self._rate_count, self._rate_since_ns = 0, now_ns
            return StatsSnapshot(
                published=self._published,
                dropped=self._dropped,
                late=self._late,
                stalls=self._stalls,
                stalled=self._stalled,
                rate_hz=rate,
                last_latency_ms=self._latency_ns / 1e6,
                error=self._error,
            )


def diagnostics(name: str, snapshot: StatsSnapshot) -> tuple[str, str, dict[str, str]]:
    """(level, message, key-values) for the node's `camera: <name>` status."""
    values = {
        "published": str(snapshot.published),
        "dropped": str(snapshot.dropped),
        "late": str(snapshot.late),
        "stalls": str(snapshot.stalls),
        "stalled": str(snapshot.stalled).lower(),
        "rate_hz": f"{snapshot.rate_hz:.1f}",
        "latency_ms": f"{snapshot.last_latency_ms:.1f}",
        "error": snapshot.error,
    }
    if snapshot.error:
        return "ERROR", f"{name}: {snapshot.error}", values
    if snapshot.stalled:
        return "WARN", f"{name}: stalled (no frame for two frame periods)", values
    if snapshot.published == 0:
        return "WARN", f"{name}: waiting for the first frame", values
    return "OK", "streaming", values


class SourceReader:
    """The reader thread: reads `source` and hands every frame on at once (nothing queued).

    A timeout is left to the stall check; any other error is recorded in `stats`, reported
    through `on_error`, and the source is closed and re-opened after a backoff that doubles
    from `backoff_s[0]` to `backoff_s[1]` (reset by a successful open). The source must be
    open when `start()` is called.

    Args:
        source: an opened source.
        stats: counters; `started()` is called on every (re-)open.
        on_frame: called on the reader thread with each frame.
        on_error: called on the reader thread with each error's message.
        on_reopen: called on the reader thread after each successful re-open.
        read_timeout_s: the timeout of one `read()` (the longest `stop()` waits for it).
    """

    def __init__(
        self,
        source: FrameSource,
        stats: FrameStats,
        on_frame: Callable[[Frame], None],
        on_error: Callable[[str], None],
        read_timeout_s: float,
        on_reopen: Callable[[], None] = lambda: None,
        backoff_s: tuple[float, float] = (0.2, 5.0),
    ) -> None:
        self.source = source
        self.stats = stats
        self.on_frame = on_frame
        self.on_error = on_error
        self.read_timeout_s = read_timeout_s
        self.on_reopen = on_reopen
        self.backoff_s = backoff_s
        self.reopened = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="camera-reader", daemon=True)

    def start(self) -> None:
        self.stats.started(time.monotonic_ns())
        self._thread.start()

    def stop(self) -> None:
        """End the thread (waits for the read in progress) and close the source."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=max(5.0, 2 * self.read_timeout_s))
        self.source.close()

    def _run(self) -> None:
        backoff_s, is_open = self.backoff_s[0], True
        while not self._stop.is_set():
            try:
                if not is_open:
                    self.source.open()
                    is_open, backoff_s = True, self.backoff_s[0]
                    self.reopened += 1
                    self.stats.started(time.monotonic_ns())
                    self.on_reopen()
                frame = self.source.read(self.read_timeout_s)
            except CameraTimeout:
                continue  # the stall check reports it
            except Exception as exc:  # CameraError, a library's own: never end the thread
                message = str(exc) or type(exc).__name__
                self.stats.failed(message)
                self.on_error(message)
                self.source.close()
                is_open = False
                self._stop.wait(backoff_s)
                backoff_s = min(2 * backoff_s, self.backoff_s[1])
                continue
            try:
                self.on_frame(frame)
            except Exception as exc:  # a publish failing; at shutdown, the middleware gone
                if self._stop.is_set():
                    break
                self.on_error(f"frame not published: {exc}")
