"""rmw_zenoh wire format against the golden values of ros2/rmw_zenoh docs/design.md."""

from __future__ import annotations

import pytest
import xxhash
import zenoh.ext

from vla_runtime.ros.zenoh import wire
from vla_runtime.ros.zenoh.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from vla_runtime.ros.zenoh.typesupport import message_support, service_support

STRING_HASH = "RIHS01_df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18"
ADD_TWO_INTS_HASH = "RIHS01_e118de6bf5eeb66a2491b5bda11202e7b68f198d6f67922cf30364858239c81a"


def test_golden_data_keys() -> None:
    string = message_support("std_msgs/msg/String")
    add_two_ints = service_support("example_interfaces/srv/AddTwoInts")
    assert wire.data_key(0, "/chatter", string.dds_name, string.type_hash) == (
        f"0/chatter/std_msgs::msg::dds_::String_/{STRING_HASH}"
    )
    assert wire.data_key(0, "/robot1/chatter", string.dds_name, string.type_hash) == (
        f"0/robot1/chatter/std_msgs::msg::dds_::String_/{STRING_HASH}"
    )
    assert wire.data_key(2, "/add_two_ints", add_two_ints.dds_name, add_two_ints.type_hash) == (
        f"2/add_two_ints/example_interfaces::srv::dds_::AddTwoInts_/{ADD_TWO_INTS_HASH}"
    )


NODE_TOKEN = "@ros2_lv/2/aac3178e146ba6f1fc6e6a4085e77f21/0/0/NN/%/%/listener"
SUB_TOKEN = (
    "@ros2_lv/2/aac3178e146ba6f1fc6e6a4085e77f21/0/10/MS/%/%/listener/%chatter/"
    f"std_msgs::msg::dds_::String_/{STRING_HASH}/::,10:,:,:,,"
)
PUB_TOKEN = (
    "@ros2_lv/2/8b20917502ee955ac4476e0266340d5c/0/10/MP/%/%/talker/%chatter/"
    f"std_msgs::msg::dds_::String_/{STRING_HASH}/::,7:,:,:,,"
)


@pytest.mark.parametrize("key", [NODE_TOKEN, SUB_TOKEN, PUB_TOKEN])
def test_golden_tokens_parse_and_rebuild_byte_for_byte(key: str) -> None:
    token = wire.EntityToken.parse(key)
    assert token.key() == key


def test_subscription_token_fields() -> None:
    token = wire.EntityToken.parse(SUB_TOKEN)
    assert (token.domain_id, token.node_id, token.entity_id) == (2, 0, 10)
    assert token.kind == wire.SUBSCRIPTION
    assert token.topic == "/chatter"
    assert token.namespace == "/" and token.enclave == "/"
    assert token.qos is not None and token.qos.depth == 10


def test_service_tokens_have_the_documented_shape() -> None:
    support = service_support("example_interfaces/srv/AddTwoInts")
    for kind in (wire.SERVICE, wire.CLIENT):
        token = wire.EntityToken(
            domain_id=2,
            session_id="aac3178e146ba6f1fc6e6a4085e77f21",
            node_id=0,
            entity_id=10,
            kind=kind,
            enclave="/",
            namespace="/",
            node_name="add_two_ints_server",
            topic="/add_two_ints",
            dds_type=support.dds_name,
            type_hash=support.type_hash,
            qos=QoSProfile(depth=10),
        )
        assert token.key() == (
            f"@ros2_lv/2/aac3178e146ba6f1fc6e6a4085e77f21/0/10/{kind}/%/%/add_two_ints_server/"
            f"%add_two_ints/example_interfaces::srv::dds_::AddTwoInts_/{ADD_TWO_INTS_HASH}/"
            "::,10:,:,:,,"
        )


def test_namespaced_token_mangles_slashes() -> None:
    token = wire.EntityToken(
        domain_id=0,
        session_id="ab",
        node_id=3,
        entity_id=4,
        kind=wire.PUBLISHER,
        enclave="/",
        namespace="/robot1",
        node_name="talker",
        topic="/robot1/chatter",
        dds_type="std_msgs::msg::dds_::String_",
        type_hash=STRING_HASH,
        qos=QoSProfile(depth=10),
    )
    key = token.key()
    assert "/%robot1/talker/%robot1%chatter/" in key
    parsed = wire.EntityToken.parse(key)
    assert (parsed.namespace, parsed.topic, parsed.node_name) == (
        "/robot1",
        "/robot1/chatter",
        "talker",
    )
    assert parsed.key() == key


@pytest.mark.parametrize(
    ("qos", "chunk"),
    [
        (QoSProfile(depth=10), "::,10:,:,:,,"),
        (QoSProfile(depth=7), "::,7:,:,:,,"),
        (qos_profile_sensor_data, "2::,5:,:,:,,"),
        (QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL), ":1:,1:,:,:,,"),
        (QoSProfile(depth=42), "::,:,:,:,,"),
        (QoSProfile(history=HistoryPolicy.KEEP_ALL), "::2,:,:,:,,"),
    ],
)
def test_qos_chunk_encoding(qos: QoSProfile, chunk: str) -> None:
    assert wire.qos_to_keyexpr(qos) == chunk
    decoded = wire.keyexpr_to_qos(chunk)
    assert wire.qos_to_keyexpr(decoded) == chunk


def test_qos_chunk_rejects_garbage() -> None:
    with pytest.raises(wire.WireError, match="expected 6"):
        wire.keyexpr_to_qos("1:2")
    with pytest.raises(wire.WireError, match="malformed"):
        wire.keyexpr_to_qos("x::,10:,:,:,,")


def test_attachment_is_33_bytes_and_matches_zenoh_ext_serialisation() -> None:
    gid = bytes(range(16))
    attachment = wire.Attachment(1, 1_700_000_000_123_456_789, gid)
    encoded = attachment.encode()
    assert len(encoded) == wire.ATTACHMENT_SIZE == 33
    expected = zenoh.ext.z_serialize(
        (zenoh.ext.Int64(1), zenoh.ext.Int64(1_700_000_000_123_456_789), gid)
    ).to_bytes()
    assert encoded == expected
    assert wire.Attachment.decode(encoded) == attachment


@pytest.mark.parametrize("bad", [None, b"", b"\x00" * 32, b"\x00" * 16 + b"\x05" + b"\x00" * 16])
def test_attachment_decode_rejects_missing_or_malformed(bad: bytes | None) -> None:
    with pytest.raises(wire.WireError):
        wire.Attachment.decode(bad)


def test_gid_is_xxh3_128_of_the_token_low_then_high_little_endian() -> None:
    gid = wire.gid_of(PUB_TOKEN)
    value = xxhash.xxh3_128_intdigest(PUB_TOKEN.encode())
    low, high = value & (2**64 - 1), value >> 64
    assert gid == low.to_bytes(8, "little") + high.to_bytes(8, "little")
    assert len(gid) == 16


@pytest.mark.parametrize(
    ("name", "namespace", "node", "expected"),
    [
        ("chatter", "/", "talker", "/chatter"),
        ("chatter", "/robot1", "talker", "/robot1/chatter"),
        ("/abs", "/robot1", "talker", "/abs"),
        ("~/state", "/robot1", "driver", "/robot1/driver/state"),
        ("~", "/", "driver", "/driver"),
    ],
)
def test_name_resolution(name: str, namespace: str, node: str, expected: str) -> None:
    assert wire.resolve_name(name, namespace, node) == expected


@pytest.mark.parametrize("bad", ["", "a//b", "bad name", "trailing/", "semi;colon"])
def test_invalid_names_are_rejected_with_a_reason(bad: str) -> None:
    with pytest.raises(ValueError, match="name"):
        wire.resolve_name(bad, "/", "node")


def test_token_parser_rejects_foreign_keys() -> None:
    for key in [
        "@other/0/x",
        "@ros2_lv/0/z/0/0/XX/%/%/n",
        "@ros2_lv/0/z/a/0/NN/%/%/n",
        "@ros2_lv/0/z/0/1/MP/%/%/n/%t",
    ]:
        with pytest.raises(wire.WireError):
            wire.EntityToken.parse(key)


def test_dds_type_names() -> None:
    assert wire.dds_type_from_ros("sensor_msgs/msg/Image") == "sensor_msgs::msg::dds_::Image_"
    assert wire.ros_type_from_dds("std_srvs::srv::dds_::Trigger_") == "std_srvs/srv/Trigger"


def test_reliability_enum_values_are_rmw_values() -> None:
    assert int(ReliabilityPolicy.BEST_EFFORT) == 2
    assert int(DurabilityPolicy.TRANSIENT_LOCAL) == 1
