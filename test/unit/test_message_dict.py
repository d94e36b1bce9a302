"""Messages to and from dicts and YAML (the CLI's echo/pub format), zenoh backend classes."""

from __future__ import annotations

import array
from collections.abc import Iterator

import numpy as np
import pytest
import yaml

from vla_runtime.ros import interfaces
from vla_runtime.ros.backend import backend_module, backend_name
from vla_runtime.ros.message_dict import fill_message, message_to_dict, message_to_yaml


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


get_message = interfaces.get_message


def test_message_to_dict_converts_nested_messages_and_arrays() -> None:
    msg = get_message("sensor_msgs/msg/JointState")(
        name=["shoulder", "elbow"], position=np.array([0.5, -1.0])
    )
    msg.header.stamp.sec = 7
    result = message_to_dict(msg)
    assert result == {
        "header": {"stamp": {"sec": 7, "nanosec": 0}, "frame_id": ""},
        "name": ["shoulder", "elbow"],
        "position": [0.5, -1.0],
        "velocity": [],
        "effort": [],
    }
    assert type(result["position"][0]) is float


def test_message_to_dict_handles_sequences_of_messages_and_hides_placeholders() -> None:
    status = get_message("diagnostic_msgs/msg/DiagnosticStatus")(
        name="arm", values=[get_message("diagnostic_msgs/msg/KeyValue")("temp", "41")]
    )
    array_msg = get_message("diagnostic_msgs/msg/DiagnosticArray")(status=[status])
    assert message_to_dict(array_msg)["status"][0]["values"] == [{"key": "temp", "value": "41"}]
    assert message_to_dict(get_message("std_msgs/msg/Empty")()) == {}


def test_message_to_yaml_looks_like_topic_echo() -> None:
    text = message_to_yaml(get_message("std_msgs/msg/String")("hello"))
    assert text == "data: hello\n"
    pose = get_message("geometry_msgs/msg/Pose")()
    assert message_to_yaml(pose).splitlines()[:3] == ["position:", "  x: 0.0", "  y: 0.0"]
    assert message_to_yaml(get_message("std_msgs/msg/Empty")()) == "{}\n"


def test_message_to_yaml_truncates_long_arrays_only_when_asked() -> None:
    image = get_message("sensor_msgs/msg/Image")(data=np.arange(100, dtype=np.uint8))
    full = yaml.safe_load(message_to_yaml(image))
    assert full["data"] == list(range(100))
    short = yaml.safe_load(message_to_yaml(image, truncate_arrays=64))
    assert short["data"] == [*range(64), "..."]
    assert yaml.safe_load(message_to_yaml(image, truncate_arrays=200))["data"] == full["data"]
    with pytest.raises(ValueError, match="truncate_arrays"):
        message_to_yaml(image, truncate_arrays=-1)


def test_fill_message_from_a_cli_style_dict() -> None:
    msg = fill_message(get_message("std_msgs/msg/String"), yaml.safe_load("{data: hello}"))
    assert msg.data == "hello"
    stamped = fill_message(
        get_message("geometry_msgs/msg/PointStamped"),
        {"header": {"stamp": {"sec": 1}, "frame_id": "map"}, "point": {"x": 1, "y": 2.5}},
    )
    assert (stamped.header.stamp.sec, stamped.header.stamp.nanosec) == (1, 0)
    assert stamped.header.frame_id == "map"
    assert (stamped.point.x, stamped.point.y, stamped.point.z) == (1.0, 2.5, 0.0)
    assert type(stamped.point.x) is float


def test_fill_message_arrays_get_the_class_container() -> None:
    joint_state = fill_message(
        get_message("sensor_msgs/msg/JointState"), {"name": ["a", "b"], "position": [1, 2.0]}
    )
    assert joint_state.position.dtype == np.float64
    np.testing.assert_array_equal(joint_state.position, [1.0, 2.0])
    image = fill_message(get_message("sensor_msgs/msg/Image"), {"data": b"\x01\x02"})
    np.testing.assert_array_equal(image.data, [1, 2])


def test_fill_message_builds_sequences_of_messages() -> None:
    trajectory = fill_message(
        get_message("trajectory_msgs/msg/JointTrajectory"),
        {
            "joint_names": ["a"],
            "points": [
                {"positions": [0.5], "time_from_start": {"sec": 1}},
                {"positions": [1.0], "time_from_start": {"sec": 2}},
            ],
        },
    )
    assert [p.time_from_start.sec for p in trajectory.points] == [1, 2]
    assert type(trajectory.points[0]) is get_message("trajectory_msgs/msg/JointTrajectoryPoint")


def test_fill_message_round_trips_message_to_dict() -> None:
    cls = get_message("sensor_msgs/msg/Imu")
    original = fill_message(
        cls, {"header": {"frame_id": "imu"}, "orientation_covariance": [0.1] * 9}
    )
    assert fill_message(cls, message_to_dict(original)) == original


def test_fill_message_converts_scalars_like_topic_pub() -> None:
    msg = fill_message(get_message("std_msgs/msg/String"), {"data": 123})
    assert msg.data == "123"
    assert fill_message(get_message("std_msgs/msg/Bool"), {"data": True}).data is True
    assert fill_message(get_message("std_msgs/msg/Int32"), {"data": 4.0}).data == 4


def test_fill_message_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError) as error:
        fill_message(get_message("std_msgs/msg/String"), {"x": 1})
    assert str(error.value) == 'unknown field "x" for std_msgs/msg/String; fields: data'
    with pytest.raises(ValueError, match=r'unknown field "secs" for builtin_interfaces/msg/Time'):
        fill_message(get_message("std_msgs/msg/Header"), {"stamp": {"secs": 1}})


@pytest.mark.parametrize(
    ("type_name", "values", "expected"),
    [
        ("std_msgs/msg/Int32", {"data": "seven"}, r'"data" of std_msgs/msg/Int32 expects int32'),
        ("std_msgs/msg/Float64", {"data": True}, r"expects double"),
        ("std_msgs/msg/Bool", {"data": "yes"}, r"expects boolean"),
        ("std_msgs/msg/Header", {"stamp": 5}, r"expects a mapping for builtin_interfaces/Time"),
        ("sensor_msgs/msg/JointState", {"name": "a"}, r'"name" .* expects a list'),
        ("sensor_msgs/msg/JointState", {"position": [1, "x"]}, r"position\[1\].*expects double"),
    ],
)
def test_fill_message_rejects_values_that_do_not_fit(
    type_name: str, values: dict[str, object], expected: str
) -> None:
    with pytest.raises(ValueError, match=expected):
        fill_message(get_message(type_name), values)


def test_fill_message_with_no_values_gives_defaults() -> None:
    cls = get_message("geometry_msgs/msg/Quaternion")
    assert fill_message(cls, None) == cls() == fill_message(cls, {})
    with pytest.raises(ValueError, match="must be a mapping"):
        fill_message(cls, [1, 2])  # type: ignore[arg-type]


class _RosidlStyleJointState:
    """Stand-in for an rclpy generated class: slots, array.array sequences, type strings."""

    __slots__ = ("name", "position")

    def __init__(self) -> None:
        self.name: list[str] = []
        self.position = array.array("d")

    @classmethod
    def get_fields_and_field_types(cls) -> dict[str, str]:
        return {"name": "sequence<string>", "position": "sequence<double>"}


_RosidlStyleJointState.__module__ = "sensor_msgs.msg._joint_state"
_RosidlStyleJointState.__name__ = "JointState"


def test_rosidl_style_classes_keep_their_containers() -> None:
    msg = fill_message(_RosidlStyleJointState, {"name": ["a"], "position": [1]})
    assert msg.position == array.array("d", [1.0])
    assert message_to_dict(msg) == {"name": ["a"], "position": [1.0]}
    with pytest.raises(ValueError, match='unknown field "effort" for sensor_msgs/msg/JointState'):
        fill_message(_RosidlStyleJointState, {"effort": [1.0]})
