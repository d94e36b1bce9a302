"""What every camera source provides, and the registry that finds them.

A source delivers RGB frames stamped with their capture time on the system clock (hardware time
mapped to it where the device gives one). `camera_node` owns one source, asks it for the newest
frame, resizes/crops on ingest and publishes; it never queues frames (newest wins).
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from vla_runtime.drivers.parameters import did_you_mean


class CameraError(RuntimeError):
    """A camera that cannot be opened or read (the message says what to check)."""


class CameraTimeout(CameraError):
    """No frame within the read timeout; the node reports it and keeps trying."""


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    Attributes:
        image: HxWx3 uint8 RGB.
        capture_ns: capture time on the system clock (time.time_ns() domain).
        sequence: the source's frame counter (gaps = frames the source dropped).
        depth_m: optional HxW float32 depth aligned to the colour image [m].
    """

    image: npt.NDArray[np.uint8]
    capture_ns: int
    sequence: int
    depth_m: npt.NDArray[np.float32] | None = None


@dataclass(frozen=True)
class SourceConfig:
    """Settings every source understands; source-specific ones go in `options`.

    Attributes:
        width, height, fps: requested capture mode (0 = the source's default).
        options: source parameters (`source.*` node parameters without the prefix).
    """

    width: int = 640
    height: int = 480
    fps: float = 30.0
    options: Mapping[str, Any] = field(default_factory=dict)


class FrameSource(abc.ABC):
    """One camera. `open()` then `read()` repeatedly from one thread, `close()` at the end."""

    def __init__(self, config: SourceConfig) -> None:
        self.config = config

    @abc.abstractmethod
    def open(self) -> None:
        """Connect; raises CameraError naming what is wrong (no device, busy, bad mode)."""

    @abc.abstractmethod
    def read(self, timeout_s: float) -> Frame:
        """The next frame; raises CameraTimeout when none arrives in time."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device; safe to call twice."""

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


SOURCES: dict[str, str] = {
    "opencv": "vla_runtime.cameras.opencv_source:OpenCVSource",
    "realsense": "vla_runtime.cameras.realsense_source:RealSenseSource",
    "replay": "vla_runtime.cameras.replay_source:ReplaySource",
}
"""Sources read by `camera_node` itself. `ros_topic` re-publishes a subscription instead (it
needs the node), see nodes/camera_node.py."""


def source_class(name: str) -> type[FrameSource]:
    if name not in SOURCES:
        raise CameraError(
            f"unknown camera source {name!r}{did_you_mean(name, SOURCES)}; "
            f"known: {', '.join(sorted(SOURCES))}, ros_topic"
        )
    module_name, _, attribute = SOURCES[name].partition(":")
    cls: type[FrameSource] = getattr(importlib.import_module(module_name), attribute)
    return cls
