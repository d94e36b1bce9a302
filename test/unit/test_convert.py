"""Numpy <-> message conversions (images, joint states, trajectories), zenoh backend classes."""

from __future__ import annotations

import array
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest

from vla_runtime.ros import convert, interfaces
from vla_runtime.ros.backend import backend_module, backend_name
from vla_runtime.ros.convert import (
    JointStateArrays,
    image_to_numpy,
    joint_state_to_numpy,
    joint_trajectory_to_numpy,
    ns_to_stamp,
    numpy_to_image,
    numpy_to_joint_state,
    numpy_to_joint_trajectory,
    stamp_to_ns,
)
from vla_runtime.ros.zenoh.typesupport import support_for


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


def _wire(msg: object) -> object:
    """Send a message through CDR, as a subscriber would receive it."""
    support = support_for(msg)
    return support.deserialize(bytes(support.serialize(msg)))


# --------------------------------------------------------------------------------------------
# Time


def test_stamps_round_trip_through_nanoseconds() -> None:
    stamp = ns_to_stamp(1_700_000_000_123_456_789)
    assert (stamp.sec, stamp.nanosec) == (1_700_000_000, 123_456_789)
    assert type(stamp) is get_message("builtin_interfaces/msg/Time")
    assert stamp_to_ns(stamp) == 1_700_000_000_123_456_789
    negative = ns_to_stamp(-1)
    assert (negative.sec, negative.nanosec) == (-1, 999_999_999)
    with pytest.raises(ValueError, match="int32"):
        ns_to_stamp(2**31 * 1_000_000_000)


# --------------------------------------------------------------------------------------------
# Images


@pytest.mark.parametrize(
    ("encoding", "dtype", "shape"),
    [
        ("rgb8", np.uint8, (4, 5, 3)),
        ("bgra8", np.uint8, (4, 5, 4)),
        ("mono8", np.uint8, (4, 5)),
        ("mono16", np.uint16, (4, 5)),
        ("16UC1", np.uint16, (4, 5)),
        ("32FC1", np.float32, (4, 5)),
        ("8UC2", np.uint8, (4, 5, 2)),
        ("64FC3", np.float64, (4, 5, 3)),
    ],
)
def test_image_round_trip_without_copies(
    encoding: str, dtype: type, shape: tuple[int, ...]
) -> None:
    pixels = np.arange(np.prod(shape)).astype(dtype).reshape(shape)
    msg = numpy_to_image(pixels, encoding, stamp_ns=2_500_000_000, frame_id="camera")
    assert (msg.height, msg.width, msg.encoding) == (4, 5, encoding)
    assert msg.step == 5 * pixels.itemsize * (shape[2] if len(shape) == 3 else 1)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (
        2,
        500_000_000,
        "camera",
    )
    assert np.shares_memory(msg.data, pixels)  # the message references the caller's array
    view = image_to_numpy(msg)
    assert view.shape == shape and view.dtype == dtype
    assert np.shares_memory(view, pixels)
    np.testing.assert_array_equal(view, pixels)
    received = image_to_numpy(_wire(msg))
    np.testing.assert_array_equal(received, pixels)


def test_received_image_is_a_view_of_the_payload() -> None:
    msg = numpy_to_image(np.zeros((48, 64, 3), dtype=np.uint8), "rgb8")
    payload = bytes(support_for(msg).serialize(msg))
    decoded = support_for(msg).deserialize(payload)
    view = image_to_numpy(decoded)
    assert np.shares_memory(view, np.frombuffer(payload, dtype=np.uint8))
    assert not view.flags.writeable


def test_mono_accepts_a_trailing_channel_axis() -> None:
    msg = numpy_to_image(np.ones((2, 3, 1), dtype=np.uint8), "mono8")
    assert image_to_numpy(msg).shape == (2, 3)


def test_step_padding_is_skipped_with_strides() -> None:
    height, width, step = 3, 4, 16  # 12 bytes of rgb8 pixels per row, 4 bytes of padding
    raw = np.full((height, step), 255, dtype=np.uint8)
    raw[:, :12] = np.arange(height * 12, dtype=np.uint8).reshape(height, 12)
    msg = get_message("sensor_msgs/msg/Image")(
        height=height, width=width, encoding="rgb8", step=step, data=raw.reshape(-1)
    )
    view = image_to_numpy(msg)
    assert view.shape == (3, 4, 3)
    assert np.shares_memory(view, raw)
    np.testing.assert_array_equal(view.reshape(height, 12), raw[:, :12])
    assert not (view == 255).any()


def test_image_data_from_rclpy_style_containers() -> None:
    pixels = np.arange(24, dtype=np.uint16).reshape(3, 4, 2).astype("<u2")
    data = array.array("B", pixels.tobytes())
    msg = get_message("sensor_msgs/msg/Image")(
        height=3, width=4, encoding="16UC2", step=16, data=np.zeros(0, np.uint8)
    )
    msg.data = data  # rclpy keeps uint8[] as array.array
    view = image_to_numpy(msg)
    assert np.shares_memory(view, np.frombuffer(data, dtype=np.uint8))
    np.testing.assert_array_equal(view, pixels)


def test_rclpy_style_sequences_get_one_copy_into_array_array() -> None:
    # rclpy's uint8[]/float64[] fields are array.array and refuse numpy arrays on assignment.
    msg = SimpleNamespace(data=array.array("B"), position=array.array("d"))
    pixels = np.arange(6, dtype=np.uint16)
    convert._assign_numeric(msg, "data", pixels.view(np.uint8), "B")
    assert msg.data == array.array("B", pixels.tobytes())
    convert._assign_numeric(msg, "position", np.array([0.5, 1.5]), "d")
    assert msg.position == array.array("d", [0.5, 1.5])


def test_big_endian_images_decode_to_the_right_values() -> None:
    pixels = np.array([[1, 256], [2, 513]], dtype=">u2")
    msg = numpy_to_image(pixels, "mono16")
    assert msg.is_bigendian == 1
    np.testing.assert_array_equal(image_to_numpy(_wire(msg)), [[1, 256], [2, 513]])


def test_non_contiguous_arrays_are_copied_once_into_the_message() -> None:
    pixels = np.arange(2 * 6 * 3, dtype=np.uint8).reshape(2, 6, 3)[:, ::2]
    msg = numpy_to_image(pixels, "rgb8")
    assert msg.step == 9
    np.testing.assert_array_equal(image_to_numpy(msg), pixels)


@pytest.mark.parametrize(
    ("pixels", "encoding", "expected"),
    [
        (np.zeros((2, 2, 3), np.uint8), "rgb9", "unsupported image encoding 'rgb9'"),
        (np.zeros((2, 2, 3), np.float32), "rgb8", "needs uint8 pixels, got float32"),
        (np.zeros((2, 2), np.uint8), "rgb8", r"needs shape \(H, W, 3\), got \(2, 2\)"),
        (np.zeros((2, 2, 3), np.uint16), "mono16", r"needs shape \(H, W\) or \(H, W, 1\)"),
    ],
)
def test_numpy_to_image_validates(pixels: np.ndarray, encoding: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        numpy_to_image(pixels, encoding)


def test_image_to_numpy_validates_the_header() -> None:
    image_cls = get_message("sensor_msgs/msg/Image")
    data = np.zeros(24, dtype=np.uint8)
    with pytest.raises(ValueError, match=r"24 bytes but step \* height = 12 \* 3 = 36"):
        image_to_numpy(image_cls(height=3, width=4, encoding="rgb8", step=12, data=data))
    with pytest.raises(ValueError, match="step 8 is shorter than a row"):
        image_to_numpy(image_cls(height=3, width=4, encoding="rgb8", step=8, data=data))
    with pytest.raises(ValueError, match="unsupported image encoding 'jpeg'"):
        image_to_numpy(image_cls(height=1, width=1, encoding="jpeg", step=1, data=data[:1]))


# --------------------------------------------------------------------------------------------
# Joint states


def test_joint_state_round_trip() -> None:
    msg = numpy_to_joint_state(
        ["a", "b", "c"], np.array([0.1, 0.2, 0.3]), velocity=[1, 2, 3], stamp_ns=1_000_000_001
    )
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1, 1)
    result = joint_state_to_numpy(_wire(msg))
    assert isinstance(result, JointStateArrays)
    assert result.names == ("a", "b", "c")
    np.testing.assert_array_equal(result.position_rad, [0.1, 0.2, 0.3])
    np.testing.assert_array_equal(result.velocity, [1.0, 2.0, 3.0])
    assert result.effort.shape == (0,) and result.effort.dtype == np.float64
    assert result.stamp_ns == 1_000_000_001


def test_joint_state_arrays_share_memory_with_the_message() -> None:
    position = np.array([0.5, 1.5])
    msg = numpy_to_joint_state(["a", "b"], position)
    assert np.shares_memory(msg.position, position)
    assert np.shares_memory(joint_state_to_numpy(msg).position_rad, position)
    msg.velocity = array.array("d", [1.0, 2.0])  # rclpy's container for float64[]
    assert np.shares_memory(
        joint_state_to_numpy(msg).velocity, np.frombuffer(msg.velocity, dtype=np.float64)
    )


def test_joint_state_length_errors() -> None:
    with pytest.raises(ValueError, match=r"position has shape \(3,\), expected \(2,\)"):
        numpy_to_joint_state(["a", "b"], [1.0, 2.0, 3.0])
    msg = get_message("sensor_msgs/msg/JointState")(name=["a", "b"], effort=np.zeros(1))
    with pytest.raises(ValueError, match="2 names but 1 effort values"):
        joint_state_to_numpy(msg)


# --------------------------------------------------------------------------------------------
# Trajectories


def test_joint_trajectory_round_trip() -> None:
    positions = np.array([[0.0, 1.0], [0.5, 1.5], [1.0, 2.0]])
    msg = numpy_to_joint_trajectory(["a", "b"], positions, [0.1, 0.2, 1.25], stamp_ns=42)
    assert len(msg.points) == 3
    assert (msg.points[2].time_from_start.sec, msg.points[2].time_from_start.nanosec) == (
        1,
        250_000_000,
    )
    assert np.shares_memory(msg.points[1].positions, positions)
    result = joint_trajectory_to_numpy(_wire(msg))
    assert result.joint_names == ("a", "b")
    np.testing.assert_array_equal(result.positions, positions)
    np.testing.assert_allclose(result.time_from_start_s, [0.1, 0.2, 1.25])
    assert result.stamp_ns == 42


def test_joint_trajectory_without_stamp_starts_now() -> None:
    msg = numpy_to_joint_trajectory(["a"], [[0.0]], [0.5])
    assert stamp_to_ns(msg.header.stamp) == 0


def test_joint_trajectory_with_ragged_points_is_rejected() -> None:
    point_cls = get_message("trajectory_msgs/msg/JointTrajectoryPoint")
    msg = get_message("trajectory_msgs/msg/JointTrajectory")(
        joint_names=["a", "b"],
        points=[point_cls(positions=np.zeros(2)), point_cls(positions=np.zeros(3))],
    )
    with pytest.raises(ValueError, match="point 1 has 3 positions, expected 2"):
        joint_trajectory_to_numpy(msg)


@pytest.mark.parametrize(
    ("positions", "times", "expected"),
    [
        ([[0.0, 1.0, 2.0]], [0.1], r"positions has shape \(1, 3\), expected \(points, 2\)"),
        ([0.0, 1.0], [0.1], r"positions has shape \(2,\)"),
        ([[0.0, 1.0], [1.0, 2.0]], [0.1], r"time_from_start_s has shape \(1,\), expected \(2,\)"),
        ([[0.0, 1.0], [1.0, 2.0]], [0.2, 0.2], "strictly increasing"),
        ([[0.0, 1.0]], [-0.1], ">= 0"),
        ([[0.0, 1.0]], [float("nan")], "finite"),
    ],
)
def test_numpy_to_joint_trajectory_validates(
    positions: object, times: object, expected: str
) -> None:
    with pytest.raises(ValueError, match=expected):
        numpy_to_joint_trajectory(["a", "b"], positions, times)
