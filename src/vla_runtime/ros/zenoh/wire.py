"""The rmw_zenoh wire format (Jazzy 0.2.x / Kilted 0.6.x): keys, attachments, GIDs, tokens.

Every fact here is from ros2/rmw_zenoh (docs/design.md and src/detail/*), summarised with
sources in shared/reference/ros2-middleware.md §1. Golden values from the design document are
unit tests (test/unit/test_wire.py). Pure functions, no session: testable without sockets.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import xxhash

from vla_runtime.ros.zenoh.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    LivelinessPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from vla_runtime.ros.zenoh.time import Duration

ADMIN_SPACE = "@ros2_lv"
GID_SIZE = 16
ATTACHMENT_SIZE = 33
_ATTACHMENT = struct.Struct("<qqB16s")

# Entity kinds in liveliness tokens.
NODE = "NN"
PUBLISHER = "MP"
SUBSCRIPTION = "MS"
SERVICE = "SS"
CLIENT = "SC"
ENTITY_KINDS = (NODE, PUBLISHER, SUBSCRIPTION, SERVICE, CLIENT)


class WireError(ValueError):
    """Bytes or keys that do not follow the rmw_zenoh format."""


# ---------------------------------------------------------------------------------------------
# Names


_NAME_RE = re.compile(r"^[~/]?[A-Za-z0-9_{}/]*$")


def resolve_name(name: str, namespace: str, node_name: str) -> str:
    """Expand a topic or service name to its fully qualified form (rcl_expand_topic_name).

    `chatter` in namespace `/robot1` → `/robot1/chatter`; `~/state` → `/robot1/<node>/state`.
    """
    if not name:
        raise ValueError("topic or service name must not be empty")
    if not _NAME_RE.match(name) or "//" in name or (len(name) > 1 and name.endswith("/")):
        raise ValueError(
            f"invalid ROS name {name!r}: use letters, digits, '_' and '/' separators "
            "(optionally a leading '~' or '/')"
        )
    ns = namespace.rstrip("/")
    if name.startswith("/"):
        return name
    if name == "~":
        return f"{ns}/{node_name}"
    if name.startswith("~/"):
        return f"{ns}/{node_name}/{name[2:]}"
    return f"{ns}/{name}"


def normalize_namespace(namespace: str | None) -> str:
    if not namespace:
        return "/"
    namespace = "/" + namespace.strip("/")
    return namespace


def mangle(name: str) -> str:
    """Token chunks cannot contain '/', so rmw_zenoh replaces every '/' with '%'."""
    return name.replace("/", "%")


def demangle(chunk: str) -> str:
    return chunk.replace("%", "/")


def data_key(domain_id: int, fq_name: str, dds_type: str, type_hash: str) -> str:
    """`<domain>/<fq name without leading/trailing '/'>/<dds type>/<RIHS01 hash>`."""
    return f"{domain_id}/{fq_name.strip('/')}/{dds_type}/{type_hash}"


# ---------------------------------------------------------------------------------------------
# Attachment and GID


@dataclass(frozen=True)
class Attachment:
    """The 33 bytes rmw_zenoh puts on every sample, query and reply."""

    sequence_number: int
    source_timestamp_ns: int
    gid: bytes

    def encode(self) -> bytes:
        return _ATTACHMENT.pack(self.sequence_number, self.source_timestamp_ns, GID_SIZE, self.gid)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview | None) -> Attachment:
        if data is None:
            raise WireError("missing attachment (rmw_zenoh requires 33 bytes on every sample)")
        if len(data) != ATTACHMENT_SIZE:
            raise WireError(f"attachment is {len(data)} bytes, expected {ATTACHMENT_SIZE}")
        seq, stamp_ns, gid_len, gid = _ATTACHMENT.unpack(data)
        if gid_len != GID_SIZE:
            raise WireError(f"attachment GID length prefix is {gid_len}, expected {GID_SIZE}")
        return cls(seq, stamp_ns, gid)


def gid_of(token_key: str) -> bytes:
    """An entity's GID: XXH3-128 of its liveliness key, low 64 bits then high, little-endian."""
    return xxhash.xxh3_128_intdigest(token_key.encode()).to_bytes(16, "little")


# ---------------------------------------------------------------------------------------------
# QoS in tokens

# rmw_zenoh's default profile (src/detail/qos.cpp): fields equal to it are left empty.
_DEFAULT_DEPTH = 42
_INFINITE_S = 9223372036
_INFINITE_NS = 854775807


def _adapt(qos: QoSProfile) -> tuple[int, int, int, int, int]:
    """rmw_zenoh's best_available_qos: unspecified values become its defaults."""
    reliability = int(qos.reliability)
    if reliability not in (ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT):
        reliability = ReliabilityPolicy.RELIABLE
    durability = int(qos.durability)
    if durability not in (DurabilityPolicy.VOLATILE, DurabilityPolicy.TRANSIENT_LOCAL):
        durability = DurabilityPolicy.VOLATILE
    history = int(qos.history)
    if history not in (HistoryPolicy.KEEP_LAST, HistoryPolicy.KEEP_ALL):
        history = HistoryPolicy.KEEP_LAST
    depth = qos.depth or _DEFAULT_DEPTH
    liveliness = int(qos.liveliness)
    if liveliness in (
        LivelinessPolicy.SYSTEM_DEFAULT,
        LivelinessPolicy.UNKNOWN,
        LivelinessPolicy.BEST_AVAILABLE,
    ):
        liveliness = LivelinessPolicy.AUTOMATIC
    return reliability, durability, history, depth, liveliness


def _duration_chunk(duration: Duration) -> str:
    ns = duration.nanoseconds
    if ns <= 0:  # zero means "unspecified", adapted to infinite: written as empty
        return ","
    sec, nsec = divmod(ns, 1_000_000_000)
    if (sec, nsec) == (_INFINITE_S, _INFINITE_NS):
        return ","
    return f"{sec},{nsec}"


def qos_to_keyexpr(qos: QoSProfile) -> str:
    """`R:D:H,depth:deadline_s,ns:lifespan_s,ns:L,lease_s,ns`, defaults left empty."""
    reliability, durability, history, depth, liveliness = _adapt(qos)
    r = "" if reliability == ReliabilityPolicy.RELIABLE else str(reliability)
    d = "" if durability == DurabilityPolicy.VOLATILE else str(durability)
    h = "" if history == HistoryPolicy.KEEP_LAST else str(history)
    dp = "" if depth == _DEFAULT_DEPTH else str(depth)
    lv = "" if liveliness == LivelinessPolicy.AUTOMATIC else str(liveliness)
    return (
        f"{r}:{d}:{h},{dp}:{_duration_chunk(qos.deadline)}:{_duration_chunk(qos.lifespan)}"
        f":{lv},{_duration_chunk(qos.liveliness_lease_duration)}"
    )


def _parse_duration(sec: str, nsec: str) -> Duration:
    if not sec and not nsec:
        return Duration()
    return Duration(seconds=int(sec or 0), nanoseconds=int(nsec or 0))


def keyexpr_to_qos(chunk: str) -> QoSProfile:
    parts = chunk.split(":")
    if len(parts) != 6:
        raise WireError(f"QoS chunk {chunk!r} has {len(parts)} policies, expected 6")
    r, d, hist, deadline, lifespan, live = parts
    try:
        h, depth = hist.split(",")
        dl_s, dl_ns = deadline.split(",")
        ls_s, ls_ns = lifespan.split(",")
        lv, lease_s, lease_ns = live.split(",")
        return QoSProfile(
            reliability=ReliabilityPolicy(int(r)) if r else ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy(int(d)) if d else DurabilityPolicy.VOLATILE,
            history=HistoryPolicy(int(h)) if h else HistoryPolicy.KEEP_LAST,
            depth=int(depth) if depth else _DEFAULT_DEPTH,
            deadline=_parse_duration(dl_s, dl_ns),
            lifespan=_parse_duration(ls_s, ls_ns),
            liveliness=LivelinessPolicy(int(lv)) if lv else LivelinessPolicy.AUTOMATIC,
            liveliness_lease_duration=_parse_duration(lease_s, lease_ns),
        )
    except ValueError as exc:
        raise WireError(f"malformed QoS chunk {chunk!r}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Liveliness tokens


@dataclass(frozen=True)
class EntityToken:
    """One parsed `@ros2_lv/...` liveliness token (node or endpoint)."""

    domain_id: int
    session_id: str
    node_id: int
    entity_id: int
    kind: str
    enclave: str
    namespace: str
    node_name: str
    topic: str = ""  # fully qualified, demangled ('' for nodes)
    dds_type: str = ""
    type_hash: str = ""
    qos: QoSProfile | None = None

    def key(self) -> str:
        head = (
            f"{ADMIN_SPACE}/{self.domain_id}/{self.session_id}/{self.node_id}/{self.entity_id}/"
            f"{self.kind}/{mangle(self.enclave)}/{mangle(self.namespace)}/{self.node_name}"
        )
        if self.kind == NODE:
            return head
        assert self.qos is not None
        return (
            f"{head}/{mangle(self.topic)}/{mangle(self.dds_type)}/{mangle(self.type_hash)}/"
            f"{qos_to_keyexpr(self.qos)}"
        )

    @property
    def node_fqn(self) -> str:
        return f"{self.namespace.rstrip('/')}/{self.node_name}"

    @classmethod
    def parse(cls, key: str) -> EntityToken:
        chunks = key.split("/")
        if len(chunks) < 9 or chunks[0] != ADMIN_SPACE or any(not c for c in chunks):
            raise WireError(f"not an rmw_zenoh liveliness token: {key!r}")
        kind = chunks[5]
        if kind not in ENTITY_KINDS:
            raise WireError(f"unknown entity kind {kind!r} in {key!r}")
        try:
            domain_id, node_id, entity_id = int(chunks[1]), int(chunks[3]), int(chunks[4])
        except ValueError as exc:
            raise WireError(f"non-numeric id in token {key!r}") from exc
        common = dict(
            domain_id=domain_id,
            session_id=chunks[2],
            node_id=node_id,
            entity_id=entity_id,
            kind=kind,
            enclave=demangle(chunks[6]),
            namespace=demangle(chunks[7]),
            node_name=chunks[8],
        )
        if kind == NODE:
            return cls(**common)  # type: ignore[arg-type]
        # Rolling adds an optional 14th chunk (buffer backends); Jazzy/Kilted have 13.
        if len(chunks) < 13:
            raise WireError(f"endpoint token needs 13 chunks, got {len(chunks)}: {key!r}")
        return cls(
            **common,  # type: ignore[arg-type]
            topic=demangle(chunks[9]),
            dds_type=demangle(chunks[10]),
            type_hash=demangle(chunks[11]),
            qos=keyexpr_to_qos(chunks[12]),
        )


def ros_type_from_dds(dds_type: str) -> str:
    """`std_msgs::msg::dds_::String_` → `std_msgs/msg/String`."""
    parts = dds_type.split("::")
    if len(parts) != 4 or parts[2] != "dds_" or not parts[3].endswith("_"):
        raise WireError(f"not a DDS type name: {dds_type!r}")
    return f"{parts[0]}/{parts[1]}/{parts[3][:-1]}"


def dds_type_from_ros(type_name: str) -> str:
    pkg, kind, name = type_name.split("/")
    return f"{pkg}::{kind}::dds_::{name}_"
