"""Frames from a recorded MCAP file (`vla-runtime record`, `ros2 bag record -s mcap`).

Options (`source.*` node parameters):
    file: the MCAP recording (required).
    topic: the sensor_msgs/Image topic to play (default /cameras/<camera>/image_raw, where
        `camera` is the node's camera name; a file with a single image topic needs none).
    loop: start again at the end (default false: the recording ends, reads time out).

Timing: frames come out with the spacing of their recorded `log_time`s (when the recorder
received them). Stamps: a replayed frame is stamped as if captured now, the whole recording
shifted by one constant: `capture_ns = recorded header.stamp + (system time when the first
frame played - its recorded log_time)`, so the recorded capture->receive latency and the
spacing survive, and the stamps sit on today's clock where the policy's sync tolerance expects
them (a frame without a stamp uses its log_time). Each loop picks a new constant so time keeps
moving forward.

A truncated file (recorder killed) plays as far as it is readable, then ends.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from mcap.records import Channel, Message, Schema
from mcap.stream_reader import StreamReader
from rosbags.typesys import Stores, get_typestore

from vla_runtime.cameras.base import CameraError, CameraTimeout, Frame, FrameSource, SourceConfig
from vla_runtime.cameras.ingest import to_rgb
from vla_runtime.ros import convert

_IMAGE = "sensor_msgs/msg/Image"
_NS_PER_S = 1_000_000_000
_TYPESTORE = get_typestore(Stores.ROS2_JAZZY)


def _flag(options: Any, key: str, default: bool) -> bool:
    value = options.get(key, default)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def image_topics(path: Path) -> dict[str, int]:
    """sensor_msgs/Image topics of a recording -> channel id (as far as the file reads)."""
    topics: dict[str, int] = {}
    schemas: dict[int, str] = {}
    try:
        with open(path, "rb") as stream:
            for record in StreamReader(stream, record_size_limit=1 << 31).records:
                if isinstance(record, Schema):
                    schemas[record.id] = record.name
                elif isinstance(record, Channel) and schemas.get(record.schema_id, "") in (
                    _IMAGE,
                    "sensor_msgs/Image",
                ):
                    topics[record.topic] = record.id
    except Exception:  # a truncated file lists what it has
        pass
    return topics


class ReplaySource(FrameSource):
    """Plays one image topic of an MCAP file at its recorded timing."""

    def __init__(self, config: SourceConfig) -> None:
        super().__init__(config)
        options = config.options
        if not options.get("file"):
            raise CameraError("the replay source needs source.file: an MCAP recording")
        self.path = Path(str(options["file"]))
        camera = str(options.get("camera", ""))
        self.topic = str(
            options.get("topic") or (f"/cameras/{camera}/image_raw" if camera else "")
        )
        self.loop = _flag(options, "loop", False)
        self._stream: IO[bytes] | None = None
        self._messages: Iterator[Message] | None = None
        self._pending: Message | None = None
        self._channel_id = -1
        self._sequence = 0
        self._start_log_ns = 0  # log_time of the first frame of this pass
        self._start_mono_ns = 0  # when it played (monotonic)
        self._shift_ns = 0  # recorded time -> system time, this pass

    def open(self) -> None:
        if not self.path.is_file():
            raise CameraError(f"recording {self.path} does not exist")
        topics = image_topics(self.path)
        if not self.topic and len(topics) == 1:
            self.topic = next(iter(topics))
        if self.topic not in topics:
            known = ", ".join(sorted(topics)) or "none"
            raise CameraError(
                f"recording {self.path} has no image topic {self.topic or '(none given)'}; "
                f"its image topics: {known} (set source.topic)"
            )
        self._channel_id = topics[self.topic]
        self._sequence = 0
        self._restart()
        if self._pending is None:
            self.close()
            raise CameraError(f"recording {self.path} has no readable frame on {self.topic}")

    def _restart(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._stream = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        self._messages = self._iterate(self._stream)
        self._pending = next(self._messages, None)
        self._start_log_ns = self._pending.log_time if self._pending else 0
        self._start_mono_ns = 0  # set when the first frame of the pass plays

    def _iterate(self, stream: IO[bytes]) -> Iterator[Message]:
        try:
            for record in StreamReader(stream, record_size_limit=1 << 31).records:
                if isinstance(record, Message) and record.channel_id == self._channel_id:
                    yield record
        except Exception:  # a truncated recording ends where it is cut
            return

    def read(self, timeout_s: float) -> Frame:
        if self._messages is None:
            raise CameraError("read() before open()")
        if self._pending is None and self.loop and self._sequence > 0:
            self._restart()
        message = self._pending
        if message is None:
            time.sleep(timeout_s)  # the end: the node sees a stall, not a busy loop
            raise CameraTimeout(f"end of recording {self.path}")
        now_mono = time.monotonic_ns()
        if self._start_mono_ns == 0:
            self._start_mono_ns = now_mono
            self._shift_ns = time.time_ns() - message.log_time
        due = self._start_mono_ns + (message.log_time - self._start_log_ns)
        if due - now_mono > timeout_s * _NS_PER_S:
            time.sleep(timeout_s)
            raise CameraTimeout(f"next recorded frame not due within {timeout_s} s")
        if due > now_mono:
            time.sleep((due - now_mono) / _NS_PER_S)
        self._pending = next(self._messages, None)
        try:
            msg: Any = _TYPESTORE.deserialize_cdr(message.data, _IMAGE)
            pixels = convert.image_to_numpy(msg)
        except Exception as exc:  # one corrupt message: skipped, the next read goes on
            raise CameraTimeout(f"undecodable frame in {self.path}: {exc}") from exc
        try:
            image = to_rgb(pixels, str(msg.encoding))
        except ValueError as exc:  # an encoding we cannot turn into RGB: every frame will fail
            raise CameraError(f"{self.topic} in {self.path}: {exc}") from exc
        stamp = convert.stamp_to_ns(msg.header.stamp) or message.log_time
        self._sequence += 1
        return Frame(image=image, capture_ns=stamp + self._shift_ns, sequence=self._sequence)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        self._messages = None
        self._pending = None
