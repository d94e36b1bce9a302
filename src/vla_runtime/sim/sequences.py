"""Rendered camera sequences from the simulated world, for MolmoThink tests and benchmarks.

    frames = arm_sweep(SweepConfig(moving_s=3.0, static_s=2.0))   # the arm moves, then rests
    write_recording(Path("sweep.mcap"), frames)                  # replayable by camera_node

The arm follows a smooth joint-space sweep over the static table (the joints are placed, not
simulated, so the sequence is deterministic and fast), then holds still. Every camera of the
embodiment's policy is rendered at each step: the third-person view sees the arm move over a
static background; the wrist view moves with the arm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from rosbags.typesys import Stores, get_typestore

from vla_runtime.profiling.recorder import McapRecorder
from vla_runtime.sim.world import WorldConfig, build_world

_TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
_NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class SweepConfig:
    """Attributes:
    embodiment: the world (config/embodiments/<name>.yaml).
    moving_s: duration of the sweep [s]; static_s: the rest after it [s].
    rate_hz: frames per second of every camera.
    width, height: render size [px].
    amplitude_rad: sweep amplitude of the first two joints.
    """

    embodiment: str = "so100"
    moving_s: float = 3.0
    static_s: float = 2.0
    rate_hz: float = 10.0
    width: int = 320
    height: int = 240
    amplitude_rad: float = 0.5


@dataclass(frozen=True)
class SequenceFrame:
    """One step: its time from the start [s], joint positions and each camera's RGB image."""

    time_s: float
    joint_positions: npt.NDArray[np.float64]
    images: dict[str, npt.NDArray[np.uint8]]
    moving: bool


def arm_sweep(config: SweepConfig | None = None) -> list[SequenceFrame]:
    """Render the sweep-then-rest sequence (deterministic)."""
    cfg = config or SweepConfig()
    world = build_world(WorldConfig(cfg.embodiment, width=cfg.width, height=cfg.height))
    try:
        start = world.joint_positions()
        frames: list[SequenceFrame] = []
        count = round((cfg.moving_s + cfg.static_s) * cfg.rate_hz)
        for k in range(count):
            t = k / cfg.rate_hz
            phase = min(t, cfg.moving_s) / cfg.moving_s
            # One full period of a raised cosine: starts and ends at rest, at the start pose.
            swing = cfg.amplitude_rad * 0.5 * (1.0 - math.cos(2.0 * math.pi * phase))
            positions = start.copy()
            positions[0] += swing * math.sin(math.pi * phase)
            positions[1] -= 0.6 * swing
            positions[2] += 0.4 * swing
            world.set_joint_positions(positions)
            images = {camera: world.render(camera) for camera in world.camera_names}
            frames.append(SequenceFrame(t, positions, images, t < cfg.moving_s))
        return frames
    finally:
        world.close()


def write_recording(
    path: Path,
    frames: Sequence[SequenceFrame],
    rate_hz: float = 10.0,
    start_ns: int = 1_700_000_000 * _NS_PER_S,
) -> Path:
    """Write the frames as /cameras/<camera>/image_raw rgb8 Images to an MCAP file."""
    recorder = McapRecorder(path)
    try:
        for k, frame in enumerate(frames):
            stamp_ns = start_ns + round(k * _NS_PER_S / rate_hz)
            for camera, image in frame.images.items():
                topic = f"/cameras/{camera}/image_raw"
                recorder.add_topic(topic, "sensor_msgs/msg/Image")
                recorder.write(topic, _image_cdr(image, camera, stamp_ns), stamp_ns + 1_000_000)
    finally:
        recorder.close()
    return path


def _image_cdr(image: npt.NDArray[np.uint8], frame_id: str, stamp_ns: int) -> bytes:
    types = _TYPESTORE.types
    height, width = image.shape[:2]
    msg = types["sensor_msgs/msg/Image"](
        header=types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](
                sec=stamp_ns // _NS_PER_S, nanosec=stamp_ns % _NS_PER_S
            ),
            frame_id=frame_id,
        ),
        height=height,
        width=width,
        encoding="rgb8",
        is_bigendian=0,
        step=3 * width,
        data=np.ascontiguousarray(image).reshape(-1),
    )
    return bytes(_TYPESTORE.serialize_cdr(msg, "sensor_msgs/msg/Image"))
