"""Intel RealSense colour (and optionally aligned depth) through `pyrealsense2`.

The source talks to the SDK at the sensor level: it opens the colour sensor (and the depth
sensor) with the requested stream profile and starts each into an `rs.frame_queue`, which this
source reads. The same path serves a USB camera and a `pyrealsense2` software device
(DESIGN §8): librealsense 2.59 no longer lists software devices in `context.query_devices()`, so
`rs.pipeline` cannot select one, while `sensor.open/start` works for both. Tests and benchmarks
inject a software device with the `device` option; frames they push with
`software_sensor.on_video_frame` flow through the real SDK (sensor → frame queue → align) to
`read()`.

Capture time: RealSense frames carry a timestamp in one of three domains.
- `system_time` and `global_time` are already on the host's system clock [ms since the epoch]
  (global time is the SDK's own mapping of the hardware clock to the host) and are used directly.
- `hardware_clock` is the camera's free-running clock. Its offset to `time.time_ns()` is estimated
  as the minimum, over a sliding window of recent frames, of (host arrival time - hardware time):
  the frame that reached us fastest bounds the offset best, and the window follows clock drift.
  A jump of more than a second (clock wrap, device reset) restarts the window.
"""

from __future__ import annotations

import collections
import contextlib
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from vla_runtime.cameras.base import CameraError, CameraTimeout, Frame, FrameSource, SourceConfig

# Colour formats we convert to RGB, most preferred first (rgb8 needs no conversion).
COLOUR_FORMATS = ("rgb8", "bgr8", "rgba8", "bgra8", "yuyv")
# Frames in the offset estimation window (about 2 s at 30 fps).
OFFSET_WINDOW_FRAMES = 64
# A hardware-to-host offset change larger than this restarts the estimate [ns].
OFFSET_JUMP_NS = 1_000_000_000


def _import_sdk() -> Any:
    """pyrealsense2, imported on first use so that other sources work without it."""
    try:
        import pyrealsense2 as rs  # type: ignore[import-not-found,unused-ignore]
    except ImportError as error:
        raise CameraError(
            "the realsense source needs pyrealsense2 (`pip install pyrealsense2`; PyPI has wheels "
            f"for x86_64 only, elsewhere build librealsense with its Python bindings; it also "
            f"needs libusb-1.0, e.g. `apt install libusb-1.0-0`): {error}"
        ) from error
    return rs


class ClockOffset:
    """Maps a device clock to the host clock by a windowed minimum of arrival - device time."""

    def __init__(self, window: int = OFFSET_WINDOW_FRAMES) -> None:
        self._samples: collections.deque[int] = collections.deque(maxlen=window)

    def to_host_ns(self, device_ns: int, arrival_ns: int) -> int:
        sample = arrival_ns - device_ns
        if self._samples and abs(sample - min(self._samples)) > OFFSET_JUMP_NS:
            self._samples.clear()
        self._samples.append(sample)
        return device_ns + min(self._samples)


def _to_rgb(data: npt.NDArray[Any], fmt: str, width: int, height: int) -> npt.NDArray[np.uint8]:
    """An RGB uint8 copy of a colour frame's buffer (the SDK reuses the buffer)."""
    if fmt == "rgb8":
        return np.array(data, dtype=np.uint8).reshape(height, width, 3)
    if fmt == "bgr8":
        return np.ascontiguousarray(np.asarray(data).reshape(height, width, 3)[:, :, ::-1])
    if fmt == "rgba8":
        return np.ascontiguousarray(np.asarray(data).reshape(height, width, 4)[:, :, :3])
    if fmt == "bgra8":
        return np.ascontiguousarray(np.asarray(data).reshape(height, width, 4)[:, :, 2::-1])
    # yuyv (YUY2): Y0 U Y1 V per two pixels; BT.601 limited range.
    # The SDK exposes a 2-byte-per-pixel buffer as uint16; read its bytes.
    packed_bytes = np.ascontiguousarray(data).view(np.uint8).reshape(height, width // 2, 4)
    packed = packed_bytes.astype(np.float32)
    y = np.empty((height, width), np.float32)
    y[:, 0::2], y[:, 1::2] = packed[:, :, 0], packed[:, :, 2]
    u = np.repeat(packed[:, :, 1], 2, axis=1) - 128.0
    v = np.repeat(packed[:, :, 3], 2, axis=1) - 128.0
    c = 1.164 * (y - 16.0)
    rgb = np.stack((c + 1.596 * v, c - 0.392 * u - 0.813 * v, c + 2.017 * u), axis=-1)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


class RealSenseSource(FrameSource):
    """A RealSense camera: colour as RGB, optionally depth aligned to colour.

    Options:
        serial: the device's serial number; empty selects the only connected device.
        depth: also stream depth, aligned to the colour image (Frame.depth_m) [bool].
        device: an `rs.device` to use instead of enumerating (tests and benchmarks pass a
            `rs.software_device`); `serial`, when given, must match it.
    """

    def __init__(self, config: SourceConfig) -> None:
        super().__init__(config)
        self._rs: Any = None
        self._sensors: list[Any] = []
        self._colour_queue: Any = None
        self._depth_queue: Any = None
        self._depth_frames: collections.deque[Any] = collections.deque(maxlen=4)
        self._pair: Any = None  # processing block: (colour, depth) → frameset for rs.align
        self._pair_depth: Any = None
        self._paired: Any = None
        self._align: Any = None
        self._colour_format = ""
        self._offset = ClockOffset()

    def open(self) -> None:
        rs = self._rs = _import_sdk()
        options = self.config.options
        device = options.get("device") or self._find_device(str(options.get("serial", "") or ""))
        colour_sensor, colour_profile = self._choose(device, rs.stream.color, COLOUR_FORMATS)
        self._colour_format = str(colour_profile.format()).rsplit(".", 1)[-1]
        # Two frames per queue (keep_frames: the SDK must not recycle a frame we still hold);
        # the reader drains to the newest and the SDK drops the older ones.
        self._colour_queue = rs.frame_queue(2, True)
        chosen = [(colour_sensor, colour_profile, self._colour_queue)]
        depth_option = options.get("depth", False)
        if isinstance(depth_option, str):  # a node parameter given as text
            depth_option = depth_option.strip().lower() in ("1", "true", "yes", "on")
        if depth_option:
            depth_sensor, depth_profile = self._choose(device, rs.stream.depth, ("z16",))
            self._depth_queue = rs.frame_queue(2, True)
            chosen.append((depth_sensor, depth_profile, self._depth_queue))
            # Colour and depth are paired by timestamp here rather than by rs.syncer: with
            # software devices the 2.59 syncer hands the streams out one by one after the
            # first pair. The pair is made a frameset by a processing block, for rs.align.
            self._paired = rs.frame_queue(1, True)
            self._pair = rs.processing_block(self._compose)
            self._pair.start(self._paired)
            self._align = rs.align(rs.stream.color)
        try:
            if len(chosen) == 2 and self._same_sensor(chosen[0][0], chosen[1][1]):
                # One sensor streams both (D405: colour from the stereo module): open both
                # profiles together and route the frames to their queues by stream.
                sensor, queues = chosen[0][0], {rs.stream.color: self._colour_queue}
                queues[rs.stream.depth] = self._depth_queue
                sensor.open([chosen[0][1], chosen[1][1]])
                self._sensors.append(sensor)
                sensor.start(
                    lambda frame: queues[frame.get_profile().stream_type()].enqueue(frame)
                )
            else:
                for sensor, profile, _ in chosen:
                    sensor.open(profile)
                    self._sensors.append(sensor)
                for sensor, _, queue in chosen:
                    sensor.start(queue)
        except RuntimeError as error:
            self.close()
            raise CameraError(
                f"RealSense {self._name(device)} could not be opened; is another process "
                f"(realsense2_camera, realsense-viewer, another camera_node) using it? ({error})"
            ) from error

    def read(self, timeout_s: float) -> Frame:
        if self._colour_queue is None:
            raise CameraError("RealSense source read before open()")
        deadline = time.monotonic() + timeout_s
        colour = self._newest(self._colour_queue, deadline)
        if colour is None:
            raise CameraTimeout(f"no RealSense frame within {timeout_s:.3f} s")
        arrival_ns = time.time_ns()
        depth_m = None
        if self._align is not None:
            depth = self._matching_depth(colour, deadline)
            if depth is None:
                raise CameraTimeout(f"no RealSense depth frame within {timeout_s:.3f} s")
            self._pair_depth = depth  # _compose (called by invoke) pairs it with the colour
            self._pair.invoke(colour)
            aligned = self._align.process(self._paired.wait_for_frame(1000).as_frameset())
            colour, depth = aligned.get_color_frame(), aligned.get_depth_frame()
            raw = np.asanyarray(depth.get_data()).astype(np.float32)
            depth_m = raw * np.float32(depth.get_units())
        colour = colour.as_video_frame()
        image = _to_rgb(
            np.asanyarray(colour.get_data()),
            self._colour_format,
            colour.get_width(),
            colour.get_height(),
        )
        return Frame(
            image=image,
            capture_ns=self._capture_ns(colour, arrival_ns, self._rs),
            sequence=int(colour.get_frame_number()),
            depth_m=depth_m,
        )

    def close(self) -> None:
        for sensor in self._sensors:
            for step in (sensor.stop, sensor.close):
                with contextlib.suppress(RuntimeError):  # not started / already closed
                    step()
        self._sensors = []
        self._colour_queue = self._depth_queue = self._pair = self._paired = self._align = None
        self._depth_frames.clear()
        self._pair_depth = None

    @staticmethod
    def _newest(queue: Any, deadline: float) -> Any:
        """The newest frame in `queue`, waiting until `deadline` for one; None on timeout."""
        remaining_ms = max(int((deadline - time.monotonic()) * 1000), 0)
        ok, frame = queue.try_wait_for_frame(remaining_ms)
        if not ok:
            return None
        while True:  # newest wins: drop what queued up meanwhile
            newer = queue.poll_for_frame()
            if not newer:
                return frame
            frame = newer

    def _matching_depth(self, colour: Any, deadline: float) -> Any:
        """The depth frame nearest in time to `colour` (within half a frame period)."""
        tolerance_ms = 500.0 / (self.config.fps or 30.0)
        while True:
            while frame := self._depth_queue.poll_for_frame():
                self._depth_frames.append(frame)
            near = [
                d
                for d in self._depth_frames
                if abs(d.get_timestamp() - colour.get_timestamp()) <= tolerance_ms
            ]
            if near:
                return min(near, key=lambda d: abs(d.get_timestamp() - colour.get_timestamp()))
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                return None
            ok, frame = self._depth_queue.try_wait_for_frame(remaining_ms)
            if ok:
                self._depth_frames.append(frame)

    @staticmethod
    def _same_sensor(sensor: Any, profile: Any) -> bool:
        """Whether `profile` belongs to `sensor` (pybind sensors do not compare equal)."""
        return any(p.unique_id() == profile.unique_id() for p in sensor.get_stream_profiles())

    def _compose(self, colour: Any, source: Any) -> None:
        source.frame_ready(source.allocate_composite_frame([colour, self._pair_depth]))

    def _capture_ns(self, colour: Any, arrival_ns: int, rs: Any) -> int:
        stamp_ns = round(colour.get_timestamp() * 1e6)
        domain = colour.get_frame_timestamp_domain()
        if domain in (rs.timestamp_domain.system_time, rs.timestamp_domain.global_time):
            return int(stamp_ns)
        arrival = rs.frame_metadata_value.time_of_arrival
        if colour.supports_frame_metadata(arrival):  # the SDK's host arrival time [ms]
            arrival_ns = colour.get_frame_metadata(arrival) * 1_000_000
        return self._offset.to_host_ns(int(stamp_ns), arrival_ns)

    def _find_device(self, serial: str) -> Any:
        rs = self._rs
        devices = list(rs.context().query_devices())
        if not devices:
            raise CameraError(
                "no RealSense device found; check the USB cable (USB 3 port), the udev rules "
                "(99-realsense-libusb.rules) and `rs-enumerate-devices`"
            )
        found = {d.get_info(rs.camera_info.serial_number): d for d in devices}
        if serial:
            if serial not in found:
                raise CameraError(
                    f"no RealSense device with serial {serial!r}; connected: {self._list(found)}"
                )
            return found[serial]
        if len(found) > 1:
            raise CameraError(
                f"{len(found)} RealSense devices connected ({self._list(found)}); "
                "set source.serial to choose one"
            )
        return devices[0]

    def _choose(self, device: Any, stream: Any, formats: tuple[str, ...]) -> tuple[Any, Any]:
        """The sensor and video profile of `stream` matching the requested mode."""
        serial = self.config.options.get("serial", "")
        if serial and self._serial(device) != serial:
            raise CameraError(f"device {self._name(device)} does not have serial {serial!r}")
        candidates = []
        for sensor in device.query_sensors():
            for profile in sensor.get_stream_profiles():
                fmt = str(profile.format()).rsplit(".", 1)[-1]
                if profile.stream_type() == stream and profile.is_video_stream_profile():
                    candidates.append((sensor, profile.as_video_stream_profile(), fmt))
        kind = str(stream).rsplit(".", 1)[-1]
        if not candidates:
            raise CameraError(f"RealSense {self._name(device)} has no {kind} stream")
        width, height, fps = self.config.width, self.config.height, self.config.fps

        def matches(profile: Any, fmt: str) -> bool:
            return (
                fmt in formats
                and (width == 0 or profile.width() == width)
                and (height == 0 or profile.height() == height)
                and (fps == 0 or profile.fps() == round(fps))
            )

        usable = [(s, p, f) for s, p, f in candidates if matches(p, f)]
        if not usable:
            modes = sorted({f"{p.width()}x{p.height()}@{p.fps()} {f}" for _, p, f in candidates})
            raise CameraError(
                f"RealSense {self._name(device)} does not support {kind} {width}x{height}@{fps:g} "
                f"in {'/'.join(formats)}; supported modes: {', '.join(modes)}"
            )
        # Prefer the SDK's default profile, then the format needing the least conversion.
        usable.sort(key=lambda c: (not c[1].is_default(), formats.index(c[2])))
        sensor, profile, _ = usable[0]
        return sensor, profile

    def _serial(self, device: Any) -> str:
        rs = self._rs
        if device.supports(rs.camera_info.serial_number):
            return str(device.get_info(rs.camera_info.serial_number))
        return ""

    def _name(self, device: Any) -> str:
        rs = self._rs
        name = device.get_info(rs.camera_info.name) if device.supports(rs.camera_info.name) else ""
        return f"{name or 'device'} (serial {self._serial(device) or '?'})"

    @staticmethod
    def _list(found: dict[str, Any]) -> str:
        return ", ".join(sorted(found))
