"""`camera_node`: one camera's frames on /cameras/<name>/image_raw (+ camera_info), newest first.

    camera_node --ros-args -p name:=wrist -p source:=opencv -p source.device:=/dev/video0 \
        -p output_width:=224 -p output_height:=224

A reader thread reads the source (cameras/: opencv, realsense, replay) and publishes each frame
as it comes: rgb8, header.stamp = capture time, frame_id = name, sensor-data QoS, nothing
queued (a slow subscriber loses old frames, never sees stale ones). `source:=ros_topic`
re-publishes `input_topic` instead, keeping its stamps. Frames are centre-cropped and resized to
output_width x output_height on the way (cameras/ingest.py). /diagnostics carries `camera: <name>`
at 1 Hz, and at once when no frame came for two frame periods; source errors re-open it with
backoff. A source that cannot open at start-up is a configuration error (exit code 2).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from vla_runtime import ros
from vla_runtime.cameras import ingest
from vla_runtime.cameras.base import CameraError, Frame, SourceConfig, source_class
from vla_runtime.nodes._diagnostics import diagnostic_array
from vla_runtime.nodes._runner import EXIT_CONFIG_ERROR, run_node
from vla_runtime.ros import convert
from vla_runtime.ros.interfaces import get_message

Image = get_message("sensor_msgs/msg/Image")
CameraInfo = get_message("sensor_msgs/msg/CameraInfo")
DiagnosticArray = get_message("diagnostic_msgs/msg/DiagnosticArray")

# name -> (default, description); `source.*` parameters go to the source as its options.
PARAMETERS: dict[str, tuple[Any, str]] = {
    "name": ("camera", "camera name: topics /cameras/<name>/image_raw and camera_info"),
    "source": ("opencv", "opencv | realsense | replay | ros_topic"),
    "width": (640, "requested capture width [px] (0 = the source's default)"),
    "height": (480, "requested capture height [px] (0 = the source's default)"),
    "fps": (30.0, "requested frame rate [Hz]; also sets the stall time (two periods)"),
    "output_width": (0, "published width [px] after centre-crop + resize (0 = as captured)"),
    "output_height": (0, "published height [px] after centre-crop + resize (0 = as captured)"),
    "input_topic": ("", "ros_topic source: the sensor_msgs/Image topic to re-publish"),
    "late_ms": (50.0, "a frame published later than this after capture counts as late [ms]"),
}


class CameraNodeConfigError(ValueError):
    """Parameters that cannot make a camera (message says what to change)."""


class CameraNode(ros.Node):
    def __init__(self) -> None:
        super().__init__("camera", automatically_declare_parameters_from_overrides=True)
        for key, (default, description) in PARAMETERS.items():
            if not self.has_parameter(key):
                self.declare_parameter(
                    key, default, ros.ParameterDescriptor(description=description)
                )
        value = {key: self.get_parameter(key).value for key in PARAMETERS}
        options = {k: p.value for k, p in self.get_parameters_by_prefix("source").items()}
        try:
            self.name = str(value["name"])
            self.out_size = (int(value["output_height"]), int(value["output_width"]))
            fps = float(value["fps"])
            config = SourceConfig(
                int(value["width"]), int(value["height"]), fps, {"camera": self.name, **options}
            )
            if fps <= 0 or min(self.out_size) < 0:
                raise ValueError("fps must be > 0 and output_width/output_height >= 0")
            self.stats = ingest.FrameStats(fps, float(value["late_ms"]))
            self.source = None
            if value["source"] == "ros_topic":
                if not value["input_topic"]:
                    raise ValueError("the ros_topic source needs input_topic (an Image topic)")
            else:
                self.source = source_class(str(value["source"]))(config)
                self.source.open()  # a wrong device, file or mode: say so now (exit code 2)
        except (ValueError, TypeError, CameraError) as exc:
            raise CameraNodeConfigError(str(exc)) from exc
        self.period_s = 1.0 / fps
        sensor = ros.qos_profile_sensor_data
        self._image = self.create_publisher(Image, f"/cameras/{self.name}/image_raw", sensor)
        self._info = self.create_publisher(CameraInfo, f"/cameras/{self.name}/camera_info", sensor)
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics)
        self.create_timer(self.period_s, self._check_stall)
        self._received = 0  # ros_topic frames (their sequence numbers)
        if self.source is None:
            self.stats.started(time.monotonic_ns())  # the stall clock (SourceReader's own)
            topic = str(value["input_topic"])
            self.create_subscription(Image, topic, self._on_image, sensor)
            what = f"re-publishing {topic}"
        else:
            self._reader = ingest.SourceReader(
                self.source,
                self.stats,
                self._on_frame,
                self._on_error,
                read_timeout_s=2 * self.period_s,
                on_reopen=lambda: self.get_logger().info(f"{self.name}: source re-opened"),
            )
            self._reader.start()
            what = f"{value['source']} {options}"
        size = "x".join(map(str, self.out_size[::-1])) if max(self.out_size) else "as captured"
        self.get_logger().info(f"{self.name}: {what} -> /cameras/{self.name}/image_raw ({size})")

    # -- frames in (reader thread, or the executor for ros_topic) -------------------------

    def _on_frame(self, frame: Frame) -> None:
        self._publish(frame, getattr(self.source, "intrinsics", None))

    def _on_error(self, message: str) -> None:
        self.get_logger().error(f"{self.name}: {message}", throttle_duration_sec=2.0)

    def _on_image(self, msg: Any) -> None:
        try:
            rgb = ingest.to_rgb(convert.image_to_numpy(msg), str(msg.encoding))
        except ValueError as exc:
            self.stats.failed(f"{msg.encoding} frame rejected: {exc}")
            return
        stamp = convert.stamp_to_ns(msg.header.stamp)
        self._received += 1
        self._publish(Frame(rgb, stamp, self._received), None)

    # -- frames out ------------------------------------------------------------------------

    def _publish(self, frame: Frame, intrinsics: Any) -> None:
        height, width = frame.image.shape[:2]
        image = ingest.fit(frame.image, *self.out_size)
        out_height, out_width = image.shape[:2]
        self._image.publish(convert.numpy_to_image(image, "rgb8", frame.capture_ns, self.name))
        info = CameraInfo()
        info.header.stamp = convert.ns_to_stamp(frame.capture_ns)
        info.header.frame_id = self.name
        info.height, info.width = out_height, out_width
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        if intrinsics is not None:  # (fx, fy, cx, cy) of the captured image
            fx, fy, cx, cy = ingest.fit_intrinsics(
                tuple(intrinsics), height, width, *self.out_size
            )
            info.distortion_model = "plumb_bob"
            info.d = [0.0] * 5
            info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
            info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        self._info.publish(info)
        self.stats.published(frame.sequence, frame.capture_ns, time.time_ns(), time.monotonic_ns())

    def _check_stall(self) -> None:
        if self.stats.check_stall(time.monotonic_ns()):
            self.get_logger().warning(
                f"{self.name}: no frame for two frame periods ({2 * self.period_s:.3f} s)"
            )
            self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        level, message, values = ingest.diagnostics(
            self.name, self.stats.snapshot(time.monotonic_ns())
        )
        self._diagnostics.publish(
            diagnostic_array(self, f"camera: {self.name}", self.name, level, message, values)
        )

    def destroy_node(self) -> None:
        if self.source is not None:
            self._reader.stop()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    try:
        return run_node("camera_node", CameraNode, args)
    except CameraNodeConfigError as exc:  # run_node has already shut the middleware down
        print(f"camera_node: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR


if __name__ == "__main__":
    sys.exit(main())
