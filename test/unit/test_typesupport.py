"""Type support of the zenoh backend: RIHS01 hashes, DDS names, classes and CDR."""

from __future__ import annotations

import array
import contextlib
import copy
import pickle
import random
import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from vla_runtime.ros import interfaces
from vla_runtime.ros.backend import backend_module, backend_name
from vla_runtime.ros.zenoh import service_definitions, typehash
from vla_runtime.ros.zenoh.typesupport import (
    TypeSupportError,
    known_message_types,
    known_service_types,
    message_class,
    message_support,
    service_class,
    service_support,
    support_for,
)


def _clear_backend_caches() -> None:
    for cached in (backend_name, backend_module, interfaces.get_message, interfaces.get_service):
        cached.cache_clear()


@pytest.fixture(autouse=True)
def _zenoh_backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run on the zenoh backend's classes, then let later tests choose their backend afresh."""
    monkeypatch.setenv("VLA_RUNTIME_MIDDLEWARE", "zenoh")
    _clear_backend_caches()
    yield
    _clear_backend_caches()


# Hashes from upstream: rmw_zenoh's design document (String, AddTwoInts), the rosbags checks of
# the reference notes (Twist, Image), and rosidl_generator_c `*__description.c` files of Jazzy
# builds (the rest).
GOLDEN_MESSAGE_HASHES = {
    "std_msgs/msg/String": "df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18",
    "sensor_msgs/msg/Image": "d31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47",
    "geometry_msgs/msg/Twist": "9c45bf16fe0983d80e3cfe750d6835843d265a9a6c46bd2e609fcddde6fb8d2a",
    "builtin_interfaces/msg/Time": (
        "b106235e25a4c5ed35098aa0a61a3ee9c9b18d197f398b0e4206cea9acf9c197"
    ),
    "service_msgs/msg/ServiceEventInfo": (
        "41bcbbe07a75c9b52bc96bfd5c24d7f0fc0a08c0cb7921b3373c5732345a6f45"
    ),
    "rcl_interfaces/srv/GetParameterTypes_Request": (
        "87d7ec5ef545d4daa289d500025d31fb2437bc8b8365ca367161c4dac4be33fd"
    ),
    "rcl_interfaces/srv/GetParameterTypes_Response": (
        "ac1335dce67c478e669434f6ac2fbff34fcd529580f272d3006785ba8b54e47f"
    ),
}
GOLDEN_SERVICE_HASHES = {
    "example_interfaces/srv/AddTwoInts": (
        "e118de6bf5eeb66a2491b5bda11202e7b68f198d6f67922cf30364858239c81a"
    ),
    "std_srvs/srv/Empty": "5888399dedec5ccc85ea6451949fd2c9f97bfdf963f9a588821639fcd31b5d19",
    "std_srvs/srv/SetBool": "abe9e4bb6b41b40e6789712c00ec8871923e089af3f667a79992a428cff2da0a",
    "rcl_interfaces/srv/GetParameterTypes": (
        "da199c878688b3e530bdfe3ca8f74cb9fa0c303101e980a9e8f260e25e1c80ca"
    ),
    "rcl_interfaces/srv/ListParameters": (
        "3e6062bfbb27bfb8730d4cef2558221f51a11646d78e7bb30a1e83afac3aad9d"
    ),
    "rcl_interfaces/srv/DescribeParameters": (
        "845b484d71eb0673dae682f2e3ba3c4851a65a3dcfb97bddd82c5b57e91e4cff"
    ),
}


# --------------------------------------------------------------------------------------------
# Hashes and names


@pytest.mark.parametrize(("name", "digest"), GOLDEN_MESSAGE_HASHES.items())
def test_message_hash_matches_upstream(name: str, digest: str) -> None:
    assert message_support(name).type_hash == f"RIHS01_{digest}"


@pytest.mark.parametrize(("name", "digest"), GOLDEN_SERVICE_HASHES.items())
def test_service_hash_matches_upstream(name: str, digest: str) -> None:
    assert service_support(name).type_hash == f"RIHS01_{digest}"


def test_service_hash_of_a_definition_outside_the_registry() -> None:
    # example_interfaces/srv/Trigger: upstream RIHS01 from its generated description.c.
    table = dict(get_typestore(Stores.ROS2_JAZZY).fielddefs)
    table.update(
        service_definitions.service_fielddefs(
            "example_interfaces/srv/Trigger", "---\nbool success\nstring message\n"
        )
    )
    assert typehash.service_type_hash(table, "example_interfaces/srv/Trigger") == (
        "RIHS01_cfeeee47f8105dd7685e4c92d46d4074669cb1c477402be1dea37486542a69e0"
    )


def test_message_hashes_agree_with_rosbags_except_for_char_fields() -> None:
    store = get_typestore(Stores.ROS2_JAZZY)
    differing = {
        name
        for name in store.fielddefs
        if message_support(name).type_hash != store.hash_rihs01(name)
    }
    # rosbags hashes `char` as FIELD_TYPE_CHAR; rosidl turns .msg char into uint8 first.
    assert differing == {
        "std_msgs/msg/Char",
        "rmw_dds_common/msg/Gid",
        "rmw_dds_common/msg/NodeEntitiesInfo",
        "rmw_dds_common/msg/ParticipantEntitiesInfo",
        "service_msgs/msg/ServiceEventInfo",
    }


def test_char_is_described_as_uint8() -> None:
    table = get_typestore(Stores.ROS2_JAZZY).fielddefs
    description = typehash.type_description(table, "std_msgs/msg/Char")
    assert description["type_description"]["fields"][0]["type"]["type_id"] == 3


def test_service_description_has_rosidl_layout() -> None:
    table = dict(get_typestore(Stores.ROS2_JAZZY).fielddefs)
    table.update(service_definitions.all_service_fielddefs())
    overlay = {**table, **dict(typehash.service_structs("std_srvs/srv/SetBool"))}
    description = typehash.type_description(overlay, "std_srvs/srv/SetBool")
    top = description["type_description"]["fields"]
    assert [f["name"] for f in top] == ["request_message", "response_message", "event_message"]
    referenced = [t["type_name"] for t in description["referenced_type_descriptions"]]
    assert referenced == sorted(referenced)
    event = next(
        t for t in description["referenced_type_descriptions"] if "_Event" in t["type_name"]
    )
    request = event["fields"][1]["type"]
    assert (request["type_id"], request["capacity"]) == (97, 1)


def test_dds_names() -> None:
    assert message_support("sensor_msgs/msg/Image").dds_name == "sensor_msgs::msg::dds_::Image_"
    trigger = service_support("std_srvs/srv/Trigger")
    assert trigger.dds_name == "std_srvs::srv::dds_::Trigger_"
    assert trigger.request.dds_name == "std_srvs::srv::dds_::Trigger_Request_"
    assert trigger.response.dds_name == "std_srvs::srv::dds_::Trigger_Response_"
    assert trigger.request.name == "std_srvs/srv/Trigger_Request"


def test_short_and_dotted_names_are_accepted_and_cached() -> None:
    assert message_support("std_msgs/String") is message_support("std_msgs/msg/String")
    assert message_support("std_msgs.msg.String") is message_support("std_msgs/msg/String")
    assert service_support("std_srvs/Trigger") is service_support("std_srvs/srv/Trigger")


def test_required_packages_are_known() -> None:
    known = set(known_message_types())
    for name in (
        "rcl_interfaces/msg/ParameterDescriptor",
        "rcl_interfaces/msg/SetParametersResult",
        "rcl_interfaces/msg/Parameter",
        "rcl_interfaces/msg/ParameterValue",
        "rcl_interfaces/msg/ParameterType",
        "rcl_interfaces/msg/Log",
        "diagnostic_msgs/msg/DiagnosticArray",
        "trajectory_msgs/msg/JointTrajectory",
        "sensor_msgs/msg/JointState",
        "std_msgs/msg/Header",
        "builtin_interfaces/msg/Duration",
        "service_msgs/msg/ServiceEventInfo",
    ):
        assert name in known
    assert known_service_types() == sorted(service_definitions.SERVICE_DEFINITIONS)
    assert len(known_service_types()) == 10


def test_unknown_types_fail_with_a_hint() -> None:
    with pytest.raises(
        TypeSupportError, match=r"sensor_msgs/msg/Imag.*did you mean sensor_msgs/msg/Image"
    ):
        message_support("sensor_msgs/msg/Imag")
    # Also a LookupError, so callers of interfaces.get_message can catch UnknownTypeError.
    with pytest.raises(interfaces.UnknownTypeError):
        message_class("nope_msgs/msg/Nothing")
    with pytest.raises(TypeSupportError, match="not a ROS 2 type name"):
        message_support("String")
    with pytest.raises(TypeSupportError, match=r"unknown service type std_srvs/srv/Trig\b"):
        service_support("std_srvs/srv/Trig")


# --------------------------------------------------------------------------------------------
# Classes


def test_default_construction_matches_rclpy_defaults() -> None:
    image = message_class("sensor_msgs/msg/Image")()
    assert (image.height, image.encoding, image.header.frame_id) == (0, "", "")
    assert image.header.stamp.sec == 0
    assert image.data.dtype == np.uint8 and image.data.size == 0
    joint_state = message_class("sensor_msgs/msg/JointState")()
    assert joint_state.name == [] and joint_state.position.dtype == np.float64
    trajectory = message_class("trajectory_msgs/msg/JointTrajectory")()
    assert trajectory.points == [] and trajectory.joint_names == []
    diagnostics = message_class("diagnostic_msgs/msg/DiagnosticArray")()
    assert diagnostics.status == []
    assert message_class("std_msgs/msg/String")().data == ""
    imu = message_class("sensor_msgs/msg/Imu")()
    np.testing.assert_array_equal(imu.orientation_covariance, np.zeros(9))
    # .msg default values that rclpy honours even though rosbags drops them.
    assert message_class("geometry_msgs/msg/Quaternion")().w == 1.0
    assert message_class("std_msgs/msg/Bool")().data is False


def test_defaults_are_not_shared_between_instances() -> None:
    cls = message_class("sensor_msgs/msg/Imu")
    first, second = cls(), cls()
    first.orientation_covariance[0] = 5.0
    first.header.frame_id = "imu"
    assert second.orientation_covariance[0] == 0.0 and second.header.frame_id == ""


def test_keyword_and_positional_construction() -> None:
    string_cls = message_class("std_msgs/msg/String")
    assert string_cls("hi").data == "hi" == string_cls(data="hi").data
    vector = message_class("geometry_msgs/msg/Vector3")(1.0, z=3.0)
    assert (vector.x, vector.y, vector.z) == (1.0, 0.0, 3.0)
    assert vector.__msgtype__ == "geometry_msgs/msg/Vector3"


def test_classes_reject_unknown_attributes_and_carry_constants() -> None:
    msg = message_class("std_msgs/msg/String")()
    with pytest.raises(AttributeError):
        msg.dta = "typo"  # type: ignore[attr-defined]
    assert message_class("rcl_interfaces/msg/ParameterType").PARAMETER_DOUBLE == 3
    assert message_class("diagnostic_msgs/msg/DiagnosticStatus").ERROR == 2


def test_get_fields_and_field_types_uses_rclpy_type_names() -> None:
    fields = message_class("sensor_msgs/msg/Imu").get_fields_and_field_types()
    assert fields["header"] == "std_msgs/Header"
    assert fields["orientation_covariance"] == "double[9]"
    assert message_class("sensor_msgs/msg/Image").get_fields_and_field_types()["data"] == (
        "sequence<uint8>"
    )
    descriptor = message_class("rcl_interfaces/msg/ParameterDescriptor")
    assert descriptor.get_fields_and_field_types()["integer_range"] == (
        "sequence<rcl_interfaces/IntegerRange, 1>"
    )


def test_equality_copy_and_pickle() -> None:
    cls = message_class("sensor_msgs/msg/JointState")
    msg = cls(name=["a"], position=np.array([1.0]))
    assert msg == cls(name=["a"], position=np.array([1.0]))
    assert msg != cls(name=["a"], position=np.array([2.0]))
    assert copy.deepcopy(msg) == msg and copy.copy(msg) == msg
    restored = pickle.loads(pickle.dumps(msg))
    assert type(restored) is cls and restored == msg


def test_interfaces_hands_out_the_same_classes() -> None:
    assert interfaces.get_message("std_msgs/String") is message_class("std_msgs/msg/String")
    trigger = interfaces.get_service("std_srvs/srv/Trigger")
    assert trigger is service_class("std_srvs/srv/Trigger")
    assert interfaces.type_name_of(trigger) == "std_srvs/srv/Trigger"


def test_support_for_instances_and_classes() -> None:
    twist_cls = message_class("geometry_msgs/msg/Twist")
    assert (
        support_for(twist_cls())
        is support_for(twist_cls)
        is message_support("geometry_msgs/msg/Twist")
    )
    with pytest.raises(TypeSupportError, match="no __msgtype__"):
        support_for(object())


# --------------------------------------------------------------------------------------------
# CDR


def test_string_cdr_bytes() -> None:
    support = message_support("std_msgs/msg/String")
    payload = bytes(support.serialize(support.cls("hello")))
    assert payload == bytes.fromhex("00010000 06000000") + b"hello\x00"


def test_big_endian_payloads_decode() -> None:
    support = message_support("std_msgs/msg/String")
    assert support.deserialize(bytes.fromhex("00000000 00000006") + b"hello\x00").data == "hello"


def _filled_messages() -> list[object]:
    header = message_class("std_msgs/msg/Header")(
        message_class("builtin_interfaces/msg/Time")(12, 345), "base"
    )
    point_cls = message_class("trajectory_msgs/msg/JointTrajectoryPoint")
    duration = message_class("builtin_interfaces/msg/Duration")
    status_cls = message_class("diagnostic_msgs/msg/DiagnosticStatus")
    key_value = message_class("diagnostic_msgs/msg/KeyValue")
    value_cls = message_class("rcl_interfaces/msg/ParameterValue")
    return [
        message_class("std_msgs/msg/String")("grüße ✓"),
        message_class("sensor_msgs/msg/Image")(
            header, 2, 3, "rgb8", 0, 9, np.arange(18, dtype=np.uint8)
        ),
        message_class("sensor_msgs/msg/JointState")(
            header, ["a", "b"], np.array([0.1, 0.2]), np.array([1.0, 2.0]), np.zeros(0)
        ),
        message_class("trajectory_msgs/msg/JointTrajectory")(
            header,
            ["a", "b"],
            [
                point_cls(positions=np.array([1.0, 2.0]), time_from_start=duration(0, 5)),
                point_cls(positions=np.array([3.0, 4.0]), time_from_start=duration(1, 0)),
            ],
        ),
        message_class("diagnostic_msgs/msg/DiagnosticArray")(
            header,
            [
                status_cls(level=b"\x02"[0], name="arm", values=[key_value("temp", "41")]),
                status_cls(name="gripper"),
            ],
        ),
        message_class("sensor_msgs/msg/Imu")(header=header, orientation_covariance=np.ones(9)),
        value_cls(
            type=7,
            bool_array_value=np.array([True, False]),
            integer_array_value=np.array([-1, 2**40]),
            string_array_value=["x", ""],
        ),
        service_support("std_srvs/srv/SetBool").cls.Request(True),
    ]


@pytest.mark.parametrize("msg", _filled_messages(), ids=lambda m: type(m).__msgtype__)
def test_round_trip(msg: object) -> None:
    support = support_for(msg)
    decoded = support.deserialize(support.serialize(msg))
    assert decoded == msg
    assert type(decoded) is type(msg)


def test_decoded_nested_messages_are_our_classes() -> None:
    msg = _filled_messages()[3]
    decoded = support_for(msg).deserialize(support_for(msg).serialize(msg))
    assert type(decoded.header) is message_class("std_msgs/msg/Header")
    assert type(decoded.points[0]) is message_class("trajectory_msgs/msg/JointTrajectoryPoint")
    assert decoded.points[1].time_from_start.sec == 1


def test_decoding_does_not_copy_array_data() -> None:
    support = message_support("sensor_msgs/msg/Image")
    payload = bytes(support.serialize(_filled_messages()[1]))
    decoded = support.deserialize(payload)
    assert np.shares_memory(decoded.data, np.frombuffer(payload, dtype=np.uint8))
    assert support.deserialize(bytearray(payload)) == decoded
    assert support.deserialize(memoryview(payload)) == decoded


def test_serializing_an_image_copies_the_pixels_once() -> None:
    support = message_support("sensor_msgs/msg/Image")
    pixels = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    msg = support.cls(height=480, width=640, encoding="rgb8", step=1920, data=pixels)
    tracemalloc.start()
    try:
        payload = support.serialize(msg)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(payload) == 4 + 44 + pixels.nbytes  # encapsulation, header fields, pixels
    # The output buffer is the only allocation of pixel size.
    assert peak < 1.2 * pixels.nbytes
    assert bytes(payload[-pixels.nbytes :]) == pixels.tobytes()
    assert msg.data is pixels  # the (H, W, 3) array was flattened for writing, not replaced


@pytest.mark.parametrize(
    "data",
    [
        [1, 2, 3],
        (1, 2, 3),
        array.array("B", [1, 2, 3]),
        b"\x01\x02\x03",
        bytearray(b"\x01\x02\x03"),
        memoryview(b"\x01\x02\x03"),
        np.array([1, 2, 3], dtype=np.int64),
    ],
    ids=lambda d: type(d).__name__,
)
def test_byte_sequences_accept_rclpy_style_values(data: object) -> None:
    support = message_support("sensor_msgs/msg/Image")
    msg = support.cls(data=data)
    decoded = support.deserialize(support.serialize(msg))
    np.testing.assert_array_equal(decoded.data, [1, 2, 3])
    assert msg.data is data  # the user's message is left alone


def test_numeric_sequences_accept_lists_and_array_array() -> None:
    support = message_support("sensor_msgs/msg/JointState")
    msg = support.cls(
        name=["a", "b"],
        position=[1, 2.5],
        velocity=array.array("d", [0.5, -0.5]),
        effort=np.array([1.0, 2.0], dtype=">f8"),
    )
    decoded = support.deserialize(support.serialize(msg))
    np.testing.assert_array_equal(decoded.position, [1.0, 2.5])
    np.testing.assert_array_equal(decoded.velocity, [0.5, -0.5])
    np.testing.assert_array_equal(decoded.effort, [1.0, 2.0])
    assert isinstance(msg.position, list)


def test_nested_coercion_copies_only_what_it_converts() -> None:
    support = message_support("trajectory_msgs/msg/JointTrajectory")
    point = message_class("trajectory_msgs/msg/JointTrajectoryPoint")(positions=[1.0, 2.0])
    msg = support.cls(joint_names=["a", "b"], points=[point])
    decoded = support.deserialize(support.serialize(msg))
    np.testing.assert_array_equal(decoded.points[0].positions, [1.0, 2.0])
    assert msg.points[0] is point and point.positions == [1.0, 2.0]


@pytest.mark.parametrize(
    ("type_name", "setup", "expected"),
    [
        ("geometry_msgs/msg/Twist", lambda m: setattr(m.linear, "x", "fast"), r'"linear\.x"'),
        ("std_msgs/msg/String", lambda m: setattr(m, "data", 5), r'"data" expects string'),
        ("sensor_msgs/msg/Image", lambda m: setattr(m, "data", [1.5]), r'"data" expects uint8'),
        ("sensor_msgs/msg/Image", lambda m: setattr(m, "data", [256]), r"outside the uint8"),
        ("sensor_msgs/msg/Image", lambda m: setattr(m, "height", -1), r'"height".*uint32'),
        (
            "sensor_msgs/msg/Imu",
            lambda m: setattr(m, "orientation_covariance", [0.0] * 8),
            r"expects 9 elements",
        ),
        ("sensor_msgs/msg/Imu", lambda m: setattr(m, "header", None), r'"header" expects a std'),
        (
            "rcl_interfaces/msg/ParameterDescriptor",
            lambda m: setattr(m, "integer_range", [m.integer_range, m.integer_range]),
            r"at most 1",
        ),
        (
            "trajectory_msgs/msg/JointTrajectory",
            lambda m: setattr(m, "points", [5]),
            r'"points\[0\]" expects a trajectory_msgs/msg/JointTrajectoryPoint, got int',
        ),
    ],
)
def test_wrong_field_values_are_named(type_name: str, setup: object, expected: str) -> None:
    support = message_support(type_name)
    msg = support.cls()
    setup(msg)  # type: ignore[operator]
    with pytest.raises(TypeSupportError, match=rf"cannot serialize {type_name}: .*{expected}"):
        support.serialize(msg)


def test_serializing_the_wrong_message_type_fails() -> None:
    with pytest.raises(TypeSupportError, match="geometry_msgs/msg/Twist as std_msgs/msg/String"):
        message_support("std_msgs/msg/String").serialize(
            message_class("geometry_msgs/msg/Twist")()
        )


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00\x01",
        b"\x07\x07\x00\x00\x06\x00\x00\x00hello\x00",
        b"\x00\x01\x00\x00\x06\x00\x00\x00hel",
        b"\x00\x01\x00\x00\xff\xff\xff\x7fhello\x00",
        b"\x00\x01\x00\x00\x06\x00\x00\x00hello!",
        b"\x00\x01\x00\x00\x03\x00\x00\x00\xff\xfe\x00",
        b"\x00\x01\x00\x00\x06\x00\x00\x00hello\x00" + bytes(16),
    ],
)
def test_malformed_payloads_raise_type_support_error(payload: bytes) -> None:
    with pytest.raises(TypeSupportError, match="could not decode std_msgs/msg/String"):
        message_support("std_msgs/msg/String").deserialize(payload)


def test_payload_of_another_type_is_rejected() -> None:
    string = message_support("std_msgs/msg/String")
    with pytest.raises(TypeSupportError, match="could not decode sensor_msgs/msg/Image"):
        message_support("sensor_msgs/msg/Image").deserialize(string.serialize(string.cls("hi")))
    with pytest.raises(TypeSupportError):
        string.deserialize("not bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "type_name",
    ["sensor_msgs/msg/Image", "trajectory_msgs/msg/JointTrajectory", "rcl_interfaces/msg/Log"],
)
def test_random_corruption_never_escapes_as_another_exception(type_name: str) -> None:
    support = message_support(type_name)
    valid = bytes(support.serialize(support.cls()))
    rng = random.Random(type_name)
    for _ in range(300):
        corrupt = bytearray(valid + bytes(rng.randrange(8)))
        for _ in range(rng.randrange(1, 4)):
            corrupt[rng.randrange(len(corrupt))] = rng.randrange(256)
        corrupt = corrupt[: rng.randrange(len(corrupt) + 1)]
        # Decoding may succeed (the bytes can still be valid); any failure must be ours.
        with contextlib.suppress(TypeSupportError):
            support.deserialize(bytes(corrupt))


# --------------------------------------------------------------------------------------------
# Services


def test_service_classes_look_like_rclpy_ones() -> None:
    trigger = service_class("std_srvs/srv/Trigger")
    assert trigger.__srvtype__ == "std_srvs/srv/Trigger"
    assert trigger.Request.__msgtype__ == "std_srvs/srv/Trigger_Request"
    response = trigger.Response(success=True, message="done")
    assert (response.success, response.message) == (True, "done")
    assert service_support("std_srvs/srv/Trigger").cls is trigger


def test_service_request_and_response_round_trip() -> None:
    add = service_support("example_interfaces/srv/AddTwoInts")
    request = add.cls.Request(a=2, b=-3)
    payload = bytes(add.request.serialize(request))
    assert payload == bytes.fromhex("00010000") + (2).to_bytes(8, "little") + (-3).to_bytes(
        8, "little", signed=True
    )
    assert add.request.deserialize(payload) == request
    response = add.cls.Response(sum=-1)
    assert add.response.deserialize(add.response.serialize(response)).sum == -1


def test_empty_requests_carry_the_placeholder_byte() -> None:
    empty = service_support("std_srvs/srv/Empty")
    assert bytes(empty.request.serialize(empty.cls.Request())) == bytes.fromhex("0001000000")


def test_parameter_service_round_trip() -> None:
    get_parameters = service_support("rcl_interfaces/srv/GetParameters")
    value_cls = message_class("rcl_interfaces/msg/ParameterValue")
    response = get_parameters.cls.Response(
        values=[value_cls(type=3, double_value=0.5), value_cls(type=4, string_value="x")]
    )
    decoded = get_parameters.response.deserialize(get_parameters.response.serialize(response))
    assert decoded == response
    assert service_class("rcl_interfaces/srv/ListParameters").Request.DEPTH_RECURSIVE == 0
