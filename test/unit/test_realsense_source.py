"""RealSenseSource against pyrealsense2 software devices: frames and timestamps are injected with
`software_sensor.on_video_frame` and travel through the real SDK (sensor → frame queue → align)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from vla_runtime.cameras.base import CameraError, CameraTimeout, SourceConfig, source_class
from vla_runtime.cameras.realsense_source import ClockOffset, RealSenseSource

rs = pytest.importorskip("pyrealsense2", exc_type=ImportError)

WIDTH, HEIGHT, FPS = 64, 48, 30
SERIAL = "000123"
BPP = {"rgb8": 3, "bgr8": 3, "yuyv": 2}


def _intrinsics(width: int, height: int) -> Any:
    intrinsics = rs.intrinsics()
    intrinsics.width, intrinsics.height = width, height
    intrinsics.fx = intrinsics.fy = 60.0
    intrinsics.ppx, intrinsics.ppy = width / 2, height / 2
    intrinsics.model = rs.distortion.none
    return intrinsics


def _stream(kind: Any, uid: int, fmt: Any, bpp: int) -> Any:
    stream = rs.video_stream()
    stream.type, stream.index, stream.uid = kind, 0, uid
    stream.width, stream.height, stream.fps, stream.bpp, stream.fmt = WIDTH, HEIGHT, FPS, bpp, fmt
    stream.intrinsics = _intrinsics(WIDTH, HEIGHT)
    return stream


@dataclass
class SoftwareCamera:
    """A software device with a colour sensor (and a depth sensor) and helpers to push frames."""

    device: Any
    colour_sensor: Any
    colour_profile: Any
    depth_sensor: Any = None
    depth_profile: Any = None

    @classmethod
    def build(
        cls, colour_format: str = "rgb8", depth: bool = False, one_sensor: bool = False
    ) -> SoftwareCamera:
        device = rs.software_device()
        device.register_info(rs.camera_info.serial_number, SERIAL)
        device.register_info(rs.camera_info.name, "Software RealSense")
        colour_sensor = device.add_sensor("Color")
        colour_profile = colour_sensor.add_video_stream(
            _stream(rs.stream.color, 0, getattr(rs.format, colour_format), BPP[colour_format])
        )
        camera = cls(device, colour_sensor, colour_profile)
        if depth:
            camera.depth_sensor = colour_sensor if one_sensor else device.add_sensor("Depth")
            camera.depth_profile = camera.depth_sensor.add_video_stream(
                _stream(rs.stream.depth, 1, rs.format.z16, 2)
            )
            camera.depth_sensor.add_read_only_option(rs.option.depth_units, 0.001)
            identity = rs.extrinsics()
            identity.rotation, identity.translation = [1, 0, 0, 0, 1, 0, 0, 0, 1], [0, 0, 0]
            camera.depth_profile.register_extrinsics_to(camera.colour_profile, identity)
        return camera

    def push(self, pixels: np.ndarray, number: int, stamp_ms: float, domain: Any) -> None:
        self._push(self.colour_sensor, self.colour_profile, pixels, number, stamp_ms, domain)

    def push_depth(self, depth_mm: np.ndarray, number: int, stamp_ms: float, domain: Any) -> None:
        self._push(self.depth_sensor, self.depth_profile, depth_mm, number, stamp_ms, domain)

    @staticmethod
    def _push(
        sensor: Any, profile: Any, pixels: np.ndarray, number: int, stamp_ms: float, domain: Any
    ) -> None:
        frame = rs.software_video_frame()
        frame.pixels = np.ascontiguousarray(pixels)
        frame.bpp = pixels.itemsize * (pixels.shape[2] if pixels.ndim == 3 else 1)
        frame.stride = frame.bpp * pixels.shape[1]
        frame.timestamp, frame.domain, frame.frame_number = stamp_ms, domain, number
        frame.profile = profile.as_video_stream_profile()
        if sensor is not None and pixels.dtype == np.uint16:
            frame.depth_units = 0.001
        sensor.on_video_frame(frame)


def _source(camera: SoftwareCamera, **options: Any) -> RealSenseSource:
    return RealSenseSource(
        SourceConfig(WIDTH, HEIGHT, FPS, options={"device": camera.device, **options})
    )


def _pattern(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def test_registry_finds_the_source() -> None:
    assert source_class("realsense") is RealSenseSource


def test_rgb_frames_come_back_with_sequence_and_system_time() -> None:
    camera = SoftwareCamera.build()
    with _source(camera) as source:
        for number in (7, 8, 10):  # 9 is "dropped" by the camera: the gap shows in sequence
            image = _pattern(number)
            stamp_ms = time.time() * 1000.0
            camera.push(image, number, stamp_ms, rs.timestamp_domain.system_time)
            frame = source.read(timeout_s=1.0)
            np.testing.assert_array_equal(frame.image, image)
            assert frame.image.dtype == np.uint8 and frame.image.shape == (HEIGHT, WIDTH, 3)
            assert frame.sequence == number
            assert abs(frame.capture_ns - stamp_ms * 1e6) < 1e3  # the stamp itself, to 1 µs
            assert frame.depth_m is None


def test_bgr_frames_are_converted_to_rgb() -> None:
    camera = SoftwareCamera.build("bgr8")
    with _source(camera) as source:
        image = _pattern(1)
        camera.push(image[:, :, ::-1], 1, 0.0, rs.timestamp_domain.system_time)
        np.testing.assert_array_equal(source.read(timeout_s=1.0).image, image)


def test_yuyv_frames_are_converted_to_rgb() -> None:
    camera = SoftwareCamera.build("yuyv")
    with _source(camera) as source:
        # BT.601 limited range: Y 81, U 90, V 240 is pure red; Y 235, U = V = 128 is white.
        yuyv = np.zeros((HEIGHT, WIDTH // 2, 4), np.uint8)
        yuyv[: HEIGHT // 2] = (81, 90, 81, 240)
        yuyv[HEIGHT // 2 :] = (235, 128, 235, 128)
        camera.push(yuyv.reshape(HEIGHT, WIDTH, 2), 1, 0.0, rs.timestamp_domain.system_time)
        image = source.read(timeout_s=1.0).image
        np.testing.assert_allclose(image[0, 0], (255, 0, 0), atol=3)
        np.testing.assert_allclose(image[-1, -1], (255, 255, 255), atol=1)


def test_hardware_clock_is_mapped_to_the_system_clock() -> None:
    camera = SoftwareCamera.build()
    device_start_ms = 5_000.0  # the camera's clock started 5 s after its power-up
    with _source(camera) as source:
        captures = []
        for number in range(5):
            host_before = time.time_ns()
            stamp_ms = device_start_ms + number * 1000.0 / FPS
            camera.push(_pattern(number), number, stamp_ms, rs.timestamp_domain.hardware_clock)
            frame = source.read(timeout_s=1.0)
            host_after = time.time_ns()
            captures.append(frame.capture_ns)
            # Mapped time lies on the host clock, no later than when we got the frame.
            assert frame.capture_ns <= host_after
            assert frame.capture_ns > host_before - 10**9
        # Hardware intervals are kept: the offset is one constant across the window minimum.
        intervals = np.diff(captures)
        assert np.all(intervals <= round(1e9 / FPS) + 1_000)


def test_clock_offset_keeps_the_fastest_arrival_and_follows_a_jump() -> None:
    offset = ClockOffset(window=4)
    assert offset.to_host_ns(1_000, 11_000) == 11_000  # offset 10 000
    assert offset.to_host_ns(2_000, 15_000) == 12_000  # slower arrival: offset stays 10 000
    assert offset.to_host_ns(3_000, 12_500) == 12_500  # faster arrival: offset 9 500
    # A wrapped/reset device clock restarts the estimate instead of keeping a stale offset.
    assert offset.to_host_ns(0, 5_000_000_000) == 5_000_000_000


@pytest.mark.parametrize("one_sensor", [False, True], ids=["two_sensors", "one_sensor"])
def test_depth_is_aligned_and_in_metres(one_sensor: bool) -> None:
    camera = SoftwareCamera.build(depth=True, one_sensor=one_sensor)
    with _source(camera, depth=True) as source:
        depth_mm = np.full((HEIGHT, WIDTH), 1500, np.uint16)
        frame = None
        for number in range(1, 6):  # colour and depth are paired by timestamp
            stamp_ms = 1000.0 + number * 1000.0 / FPS
            camera.push(_pattern(number), number, stamp_ms, rs.timestamp_domain.hardware_clock)
            camera.push_depth(depth_mm, number, stamp_ms, rs.timestamp_domain.hardware_clock)
            try:
                frame = source.read(timeout_s=0.2)
                break
            except CameraTimeout:
                continue
        assert frame is not None and frame.depth_m is not None
        assert frame.depth_m.dtype == np.float32 and frame.depth_m.shape == (HEIGHT, WIDTH)
        # Identity extrinsics and equal intrinsics: alignment keeps the depth (1.5 m); the
        # reprojection leaves holes (0 = no depth) on a few rows and at the border.
        valid = frame.depth_m[frame.depth_m > 0]
        assert valid.size > 0.8 * frame.depth_m.size
        np.testing.assert_allclose(valid, 1.5, atol=1e-3)
        np.testing.assert_array_equal(frame.image, _pattern(frame.sequence))


def test_no_frame_times_out() -> None:
    with _source(SoftwareCamera.build()) as source, pytest.raises(CameraTimeout):
        source.read(timeout_s=0.05)


def test_unsupported_mode_lists_the_supported_ones() -> None:
    camera = SoftwareCamera.build()
    source = RealSenseSource(SourceConfig(1280, 720, 30, options={"device": camera.device}))
    with pytest.raises(CameraError, match=r"1280x720@30.*supported modes: 64x48@30 rgb8"):
        source.open()


def test_busy_device_is_reported() -> None:
    camera = SoftwareCamera.build()
    with _source(camera), pytest.raises(CameraError, match="another process"):
        _source(camera).open()


def test_wrong_serial_is_reported() -> None:
    camera = SoftwareCamera.build()
    with pytest.raises(CameraError, match="does not have serial '999'"):
        _source(camera, serial="999").open()


def test_no_device_is_reported() -> None:
    # No RealSense on the test machine (software devices are not enumerated by the SDK).
    if len(rs.context().query_devices()) > 0:
        pytest.skip("a RealSense device is connected")
    with pytest.raises(CameraError, match="no RealSense device found"):
        RealSenseSource(SourceConfig()).open()
