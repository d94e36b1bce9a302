"""Record the topics of a running graph to MCAP with the ROS 2 profile (`ros2 bag record -a`).

Payloads are written exactly as they arrived (raw CDR, no decode and re-encode), so a recording
costs the recorder one copy per message and preserves what was on the wire. Each channel carries
the schema as `ros2msg` text (the type's definition followed by every nested one, the format
`ros2 bag` writes), the publishers' QoS as `offered_qos_profiles` and the RIHS01 type hash.

    recorder = McapRecorder(Path("run.mcap"))
    recorder.add_topic("/chatter", "std_msgs/msg/String")
    recorder.write("/chatter", payload, log_time_ns=time.time_ns())
    recorder.close()
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mcap.writer import CompressionType, Writer
from rosbags.interfaces import Nodetype
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.base import TypesysError

from vla_runtime import __version__

# The definitions `ros2 bag` would write on Jazzy; the zenoh backend speaks the same types.
_TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
_HEADER = "std_msgs/msg/Header"
# Recording must not drop what the graph publishes in bursts: a deep KEEP_LAST queue.
RECORD_DEPTH = 1000
# ROS 2 "infinite" durations as rosbag2 serialises them.
_INFINITE = {"sec": 2147483647, "nsec": 4294967295}


class RecordError(Exception):
    """A recording that cannot be started (unwritable file, unknown type)."""


def message_definition(type_name: str) -> str:
    """Return the full `ros2msg` text for a type: its fields, then each nested type's.

    Raises:
        RecordError: the Jazzy type store does not know the type.
    """
    try:
        text, _ = _TYPESTORE.generate_msgdef(type_name, ros_version=2)
    except TypesysError as exc:
        raise RecordError(f"no message definition for {type_name}: {exc}") from exc
    return text


def has_header(type_name: str) -> bool:
    """Whether the type's first field is a `std_msgs/Header` (so the CDR starts with a stamp)."""
    if type_name not in _TYPESTORE.fielddefs:
        return False
    fields: Any = _TYPESTORE.fielddefs[type_name][1]
    return bool(fields) and fields[0][1][0] == Nodetype.NAME and fields[0][1][1] == _HEADER


def header_stamp_ns(payload: bytes | memoryview) -> int | None:
    """The `header.stamp` of a CDR message whose first field is a Header, in ns, or None.

    The stamp is the first 8 bytes after the 4-byte encapsulation header (int32 sec, uint32
    nanosec, both 4-aligned); byte 1 of the encapsulation says the byte order.
    """
    if len(payload) < 12:
        return None
    order = "<" if payload[1] & 1 else ">"
    sec, nanosec = struct.unpack_from(f"{order}iI", payload, 4)
    if nanosec >= 1_000_000_000:
        return None
    stamp = sec * 1_000_000_000 + nanosec
    return stamp if stamp > 0 else None


def qos_yaml(durability: str, reliability: str, depth: int) -> str:
    """`offered_qos_profiles` text as rosbag2 (Jazzy) writes it, for one publisher."""
    return (
        f"- history: keep_last\n  depth: {depth}\n  reliability: {reliability}\n"
        f"  durability: {durability}\n"
        f"  deadline:\n    sec: {_INFINITE['sec']}\n    nsec: {_INFINITE['nsec']}\n"
        f"  lifespan:\n    sec: {_INFINITE['sec']}\n    nsec: {_INFINITE['nsec']}\n"
        "  liveliness: automatic\n"
        f"  liveliness_lease_duration:\n    sec: {_INFINITE['sec']}\n"
        f"    nsec: {_INFINITE['nsec']}\n"
        "  avoid_ros_namespace_conventions: false\n"
    )


@dataclass
class _Channel:
    channel_id: int
    stamped: bool
    count: int = 0
    size_bytes: int = 0


class McapRecorder:
    """An MCAP file being written: one channel per topic, raw CDR messages, thread-safe.

    Args:
        output: the file to create (overwritten) or an open binary stream.
        chunk_size: bytes per compressed chunk; a crash loses at most the chunk being written.
    """

    def __init__(self, output: Path | IO[bytes], chunk_size: int = 1 << 20) -> None:
        self._stream: IO[bytes] = open(output, "wb") if isinstance(output, Path) else output  # noqa: SIM115
        self._owns_stream = isinstance(output, Path)
        self._writer = Writer(
            self._stream, chunk_size=chunk_size, compression=CompressionType.ZSTD
        )
        self._writer.start(profile="ros2", library=f"vla_runtime {__version__} (mcap-python)")
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, _Channel] = {}
        self._lock = threading.Lock()
        self._closed = False

    def add_topic(
        self,
        topic: str,
        type_name: str,
        offered_qos: str = "",
        type_hash: str = "",
    ) -> None:
        """Declare a channel for `topic` (once; later calls for the same topic are ignored)."""
        with self._lock:
            if topic in self._channels or self._closed:
                return
            if type_name not in self._schemas:
                text = message_definition(type_name)
                self._schemas[type_name] = self._writer.register_schema(
                    name=type_name, encoding="ros2msg", data=text.encode()
                )
            metadata = {
                "offered_qos_profiles": offered_qos or qos_yaml("volatile", "reliable", 10)
            }
            if type_hash:
                metadata["topic_type_hash"] = type_hash
            channel_id = self._writer.register_channel(
                topic=topic,
                message_encoding="cdr",
                schema_id=self._schemas[type_name],
                metadata=metadata,
            )
            self._channels[topic] = _Channel(channel_id, has_header(type_name))

    def write(self, topic: str, payload: bytes | memoryview, log_time_ns: int) -> None:
        """Append one message; publish_time is its header stamp when it has one."""
        with self._lock:
            channel = self._channels.get(topic)
            if channel is None or self._closed:
                return
            publish_time = (header_stamp_ns(payload) if channel.stamped else None) or log_time_ns
            self._writer.add_message(
                channel.channel_id,
                log_time=log_time_ns,
                data=bytes(payload),
                publish_time=publish_time,
                sequence=channel.count,
            )
            channel.count += 1
            channel.size_bytes += len(payload)

    def counts(self) -> dict[str, tuple[int, int]]:
        """(messages, payload bytes) per topic so far."""
        with self._lock:
            return {topic: (c.count, c.size_bytes) for topic, c in self._channels.items()}

    def close(self) -> None:
        """Write the summary and footer (idempotent); the file is complete after this."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            finish: Callable[[], None] = self._writer.finish  # mcap leaves it unannotated
            finish()
            if self._owns_stream:
                self._stream.close()


# --------------------------------------------------------------------------------------------
# Recording a live graph


@dataclass
class RecordOptions:
    """What `vla-runtime record` records.

    Attributes:
        output: the MCAP file to write.
        topics: only these topics (empty: every topic that appears).
        duration_s: stop after this long (None: until Ctrl-C or `stop`).
        poll_s: how often the graph is polled for new topics.
    """

    output: Path
    topics: Sequence[str] = ()
    duration_s: float | None = None
    poll_s: float = 0.5
    stop: threading.Event = field(default_factory=threading.Event)


def _subscription_qos(ros: Any, publishers: list[Any]) -> tuple[Any, str]:
    """Match the publishers like `ros2 bag`: latched ones get TRANSIENT_LOCAL, best-effort ones
    BEST_EFFORT; return the QoS and the offered-QoS text to store."""
    durability, reliability = ros.DurabilityPolicy.VOLATILE, ros.ReliabilityPolicy.RELIABLE
    depth = RECORD_DEPTH
    if publishers and all(
        p.qos_profile.durability == ros.DurabilityPolicy.TRANSIENT_LOCAL for p in publishers
    ):
        durability = ros.DurabilityPolicy.TRANSIENT_LOCAL
        depth = max(max(1, p.qos_profile.depth) for p in publishers)
    if any(p.qos_profile.reliability == ros.ReliabilityPolicy.BEST_EFFORT for p in publishers):
        reliability = ros.ReliabilityPolicy.BEST_EFFORT
    offered = "".join(
        qos_yaml(
            p.qos_profile.durability.name.lower(),
            p.qos_profile.reliability.name.lower(),
            p.qos_profile.depth,
        )
        for p in publishers
    )
    qos = ros.QoSProfile(depth=depth, reliability=reliability, durability=durability)
    return qos, offered


def record(
    options: RecordOptions, log: Callable[[str], None] = print
) -> dict[str, tuple[int, int]]:
    """Record a running graph until the duration ends, `options.stop` is set or Ctrl-C.

    Returns:
        (messages, bytes) per recorded topic. The file is finished (readable) in every case.
    """
    from vla_runtime import ros
    from vla_runtime.ros.interfaces import get_message

    wanted = {t if t.startswith("/") else f"/{t}" for t in options.topics}
    try:
        recorder = McapRecorder(options.output)
    except OSError as exc:
        raise RecordError(f"cannot write {options.output}: {exc.strerror or exc}") from exc
    ros.init(args=[])
    node = ros.Node(f"vla_runtime_record_{os.getpid()}")
    skipped: set[str] = set()
    subscribed: set[str] = set()
    started = time.monotonic()
    next_poll = started
    try:
        while ros.ok() and not options.stop.is_set():
            now = time.monotonic()
            if options.duration_s is not None and now - started >= options.duration_s:
                break
            if now >= next_poll:
                next_poll = now + options.poll_s
                for topic, types in node.get_topic_names_and_types():
                    if topic in subscribed or topic in skipped or (wanted and topic not in wanted):
                        continue
                    if len(types) != 1:
                        log(f"skipping {topic}: it carries several types {types}")
                        skipped.add(topic)
                        continue
                    publishers = node.get_publishers_info_by_topic(topic)
                    if not publishers:
                        continue  # only subscribers so far: subscribe once someone publishes
                    qos, offered = _subscription_qos(ros, publishers)
                    type_hash = str(getattr(publishers[0], "topic_type_hash", "") or "")
                    try:
                        recorder.add_topic(topic, types[0], offered, type_hash)
                        cls = get_message(types[0])
                    except (RecordError, LookupError, ValueError) as exc:
                        log(f"skipping {topic}: {exc}")
                        skipped.add(topic)
                        continue
                    node.create_subscription(
                        cls, topic, _writer_for(recorder, topic), qos, raw=True
                    )
                    subscribed.add(topic)
                    log(f"recording {topic} [{types[0]}]")
            ros.spin_once(node, timeout_sec=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        recorder.close()
        node.destroy_node()
        ros.try_shutdown()
    return recorder.counts()


def _writer_for(recorder: McapRecorder, topic: str) -> Callable[[Any], None]:
    def on_message(payload: Any) -> None:
        # Wall clock on purpose: log_time is compared with header stamps (capture times).
        recorder.write(topic, payload, time.time_ns())

    return on_message
