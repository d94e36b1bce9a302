"""`think_node`: MolmoThink change detection and the depth-token cache (DESIGN §6).

    think_node --ros-args -p embodiment:=so100
    think_node --ros-args -p camera_topic:=/cameras/front/image_raw -p threshold:=0.996

Subscribes to the primary camera (`camera_topic`; default the embodiment's first policy camera,
/cameras/<camera>/image_raw; rgb8, bgr8, rgba8, bgra8 or mono8, any size) and to
/policy/depth_tokens (10x10 mono8, stamped with the frame it answers). For every frame it
publishes /think/scene: a 10x10 `8UC2` image, channel 0 the cached depth code, channel 1 the
changed flag (1 = re-predict), header.stamp = the frame's capture stamp. A depth-token grid is
committed against the buffered frame of its stamp, for the cells flagged on that frame only
(core/depth_cache.py). /diagnostics carries `think` at 1 Hz: changed fraction, full refreshes,
commits, rejections, cache age per cell. `/think/reset` (std_srvs/Trigger) empties the cache:
the next scene asks for a full re-prediction. Bad frames and grids are reported and dropped;
they never touch the cache.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from vla_runtime import ros
from vla_runtime.cameras import ingest
from vla_runtime.core.change_detector import ChangeDetectorConfig, FrameError
from vla_runtime.core.depth_cache import DepthCacheError
from vla_runtime.core.think import MolmoThink, ThinkConfig
from vla_runtime.nodes._diagnostics import diagnostic_array
from vla_runtime.nodes._runner import EXIT_CONFIG_ERROR, run_node
from vla_runtime.policy.transforms import TransformConfigError, load_transform_config
from vla_runtime.ros import convert
from vla_runtime.ros.interfaces import get_message, get_service

Image = get_message("sensor_msgs/msg/Image")
DiagnosticArray = get_message("diagnostic_msgs/msg/DiagnosticArray")
Trigger = get_service("std_srvs/srv/Trigger")

_DEFAULTS = ChangeDetectorConfig()
# name -> (default, description); read once at start-up.
PARAMETERS: dict[str, tuple[Any, str]] = {
    "embodiment": ("so100", "config/embodiments/<name>.yaml: its first policy camera is primary"),
    "camera_topic": ("", "primary camera image topic; empty = /cameras/<first camera>/image_raw"),
    "threshold": (_DEFAULTS.threshold, "a cell changed below this cosine similarity"),
    "hysteresis": (_DEFAULTS.hysteresis, "flagged cells stay flagged below threshold + this"),
    "full_refresh_fraction": (0.0, "flag every cell when this fraction changed (0 = off)"),
    "refresh_every": (0, "full refresh after this many committed grids (0 = off)"),
    "history": (ThinkConfig().history, "frames buffered for late depth tokens"),
}


class ThinkNodeConfigError(ValueError):
    """Parameters the node cannot run with (message says what to change)."""


class ThinkNode(ros.Node):
    def __init__(self) -> None:
        super().__init__("think")
        for name, (default, description) in PARAMETERS.items():
            descriptor = ros.ParameterDescriptor(description=description, read_only=True)
            self.declare_parameter(name, default, descriptor)
        value = {name: self.get_parameter(name).value for name in PARAMETERS}
        self.embodiment = str(value["embodiment"])
        try:
            config = ThinkConfig(
                detector=ChangeDetectorConfig(
                    threshold=float(value["threshold"]),
                    hysteresis=float(value["hysteresis"]),
                    full_refresh_fraction=float(value["full_refresh_fraction"]),
                    refresh_every=int(value["refresh_every"]),
                ),
                history=int(value["history"]),
            )
            camera_topic = str(value["camera_topic"])
            if not camera_topic:
                primary = load_transform_config(self.embodiment).cameras[0]
                camera_topic = f"/cameras/{primary}/image_raw"
            self.think = MolmoThink(config)
        except (ValueError, TransformConfigError, OSError) as exc:
            raise ThinkNodeConfigError(str(exc)) from exc
        self._lock = threading.Lock()  # callbacks, the timer and the service share `think`
        self._reported_rejections = 0
        self._announce = True

        self._scene = self.create_publisher(Image, "/think/scene", ros.qos_profile_sensor_data)
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(Image, camera_topic, self._on_frame, ros.qos_profile_sensor_data)
        self.create_subscription(Image, "/policy/depth_tokens", self._on_depth_tokens, 10)
        self.create_service(Trigger, "/think/reset", self._on_reset)
        self.create_timer(1.0, self._publish_diagnostics)
        detector = config.detector
        self.get_logger().info(
            f"MolmoThink on {camera_topic}: threshold {detector.threshold:g}, hysteresis "
            f"{detector.hysteresis:g}, full refresh at {detector.full_refresh_fraction:g} "
            f"changed / every {detector.refresh_every} commits (0 = off)"
        )

    def _on_frame(self, msg: Any) -> None:
        stamp_ns = convert.stamp_to_ns(msg.header.stamp)
        with self._lock:
            try:
                rgb = ingest.to_rgb(convert.image_to_numpy(msg), str(msg.encoding))
            except ValueError as exc:
                self._warn(self.think.reject(f"frame rejected: {exc}"))
                return
            try:
                scene = self.think.on_frame(stamp_ns, rgb)
            except FrameError as exc:  # counted by MolmoThink
                self._warn(f"frame rejected: {exc}")
                return
        out = convert.numpy_to_image(scene.as_grid(), "8UC2", stamp_ns, msg.header.frame_id)
        self._scene.publish(out)
        if self._announce:
            self._announce = False
            self.get_logger().info(
                f"first scene: {msg.width}x{msg.height} {msg.encoding}, "
                f"{scene.detect_ms:.2f} ms, full refresh"
            )

    def _on_depth_tokens(self, msg: Any) -> None:
        stamp_ns = convert.stamp_to_ns(msg.header.stamp)
        with self._lock:
            try:
                if msg.encoding != "mono8":
                    raise ValueError(f"encoding must be mono8, got {msg.encoding!r}")
                grid = convert.image_to_numpy(msg).reshape(msg.height, msg.width)
            except ValueError as exc:
                self._warn(self.think.reject(f"depth tokens rejected: {exc}"))
                return
            try:
                self.think.on_depth_tokens(stamp_ns, grid)
            except DepthCacheError as exc:  # counted by MolmoThink
                self._warn(f"depth tokens rejected: {exc}")

    def _warn(self, problem: str) -> None:
        self.get_logger().warning(problem, throttle_duration_sec=2.0)

    def _on_reset(self, _request: Any, response: Any) -> Any:
        with self._lock:
            self.think.reset()
        response.success = True
        response.message = "depth cache cleared: the next scene re-predicts every cell"
        self.get_logger().info(response.message)
        return response

    def _publish_diagnostics(self) -> None:
        with self._lock:
            stats = self.think.stats
            values = self.think.diagnostics(time.time_ns())
            rejected, frames = stats.rejected, stats.frames
            new_rejections = rejected > self._reported_rejections
            self._reported_rejections = rejected
            last_error = stats.last_error
        if new_rejections:
            level, message = "WARN", last_error
        elif frames == 0:
            level, message = "WARN", "waiting for frames"
        else:
            level, message = "OK", f"changed {float(values['changed_fraction']) * 100:.0f} %"
        self._diagnostics.publish(
            diagnostic_array(self, "think", self.embodiment, level, message, values)
        )


def main(args: list[str] | None = None) -> int:
    try:
        return run_node("think_node", ThinkNode, args)
    except ThinkNodeConfigError as exc:  # run_node has already shut the middleware down
        print(f"think_node: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR


if __name__ == "__main__":
    sys.exit(main())
