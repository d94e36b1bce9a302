"""Numpy <-> ROS 2 message conversions for images, joint states and joint trajectories.

Backend-neutral (message classes come from `vla_runtime.ros.interfaces`). The rule is at most one
copy of array data: images decoded from the zenoh backend become numpy views of the received
payload; images built from numpy keep a reference to the caller's (contiguous) array on the zenoh
backend and take one copy into the rosidl message on rclpy.
"""

from __future__ import annotations

import array
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vla_runtime.ros.interfaces import get_message

_NS_PER_S = 1_000_000_000
_INT32_MAX = 2**31 - 1

# sensor_msgs/image_encodings.hpp: encoding -> (element dtype, channels).
_ENCODINGS: dict[str, tuple[np.dtype[Any], int]] = {
    **{name: (np.dtype(np.uint8), 3) for name in ("rgb8", "bgr8")},
    **{name: (np.dtype(np.uint8), 4) for name in ("rgba8", "bgra8")},
    **{name: (np.dtype(np.uint16), 3) for name in ("rgb16", "bgr16")},
    **{name: (np.dtype(np.uint16), 4) for name in ("rgba16", "bgra16")},
    "mono8": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    # Packed YUV 4:2:2 is two bytes per pixel.
    **{name: (np.dtype(np.uint8), 2) for name in ("yuv422", "yuv422_yuy2", "uyvy", "yuyv")},
    **{
        f"bayer_{pattern}{bits}": (np.dtype(np.uint8 if bits == 8 else np.uint16), 1)
        for pattern in ("rggb", "bggr", "gbrg", "grbg")
        for bits in (8, 16)
    },
    **{
        f"{bits}{kind}C{channels}": (np.dtype(code), channels)
        for bits, kind, code in (
            (8, "U", np.uint8),
            (8, "S", np.int8),
            (16, "U", np.uint16),
            (16, "S", np.int16),
            (32, "S", np.int32),
            (32, "F", np.float32),
            (64, "F", np.float64),
        )
        for channels in (1, 2, 3, 4)
    },
}

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class JointStateArrays:
    """A sensor_msgs/JointState as arrays; a field the message left empty is a length-0 array."""

    names: tuple[str, ...]
    position_rad: FloatArray  # shape (joints,) or (0,)
    velocity: FloatArray  # shape (joints,) or (0,), rad/s (m/s for prismatic joints)
    effort: FloatArray  # shape (joints,) or (0,), N*m (N for prismatic joints)
    stamp_ns: int


@dataclass(frozen=True)
class TrajectoryArrays:
    """A trajectory_msgs/JointTrajectory's positions as one (points x joints) array."""

    joint_names: tuple[str, ...]
    positions: FloatArray  # shape (points, joints)
    time_from_start_s: FloatArray  # shape (points,)
    stamp_ns: int


# --------------------------------------------------------------------------------------------
# Time


def stamp_to_ns(stamp: Any) -> int:
    """Return a builtin_interfaces/Time (or Duration) as integer nanoseconds."""
    return int(stamp.sec) * _NS_PER_S + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Any:
    """Return a builtin_interfaces/msg/Time for integer nanoseconds (nanosec always >= 0)."""
    return _split_ns(get_message("builtin_interfaces/msg/Time"), int(ns))


def _split_ns(cls: type, ns: int) -> Any:
    sec, nanosec = divmod(ns, _NS_PER_S)
    if not -_INT32_MAX - 1 <= sec <= _INT32_MAX:
        raise ValueError(f"{ns} ns does not fit a ROS 2 time stamp (int32 seconds)")
    msg = cls()
    msg.sec, msg.nanosec = sec, nanosec
    return msg


# --------------------------------------------------------------------------------------------
# Images


def image_to_numpy(msg: Any) -> np.ndarray:
    """Return a view of a sensor_msgs/Image's pixels: shape (H, W, C), or (H, W) for one channel.

    No copy is made when `msg.data` supports the buffer protocol (numpy on zenoh, array.array on
    rclpy); row padding (`step` larger than a row) is skipped through strides. The view is
    read-only when the message data is (e.g. a decoded zenoh payload).

    Raises:
        ValueError: unknown encoding, or data length / step inconsistent with the header.
    """
    dtype, channels = _encoding(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    data = _byte_view(msg.data)
    if data.size != step * height:
        raise ValueError(
            f"image data has {data.size} bytes but step * height = {step} * {height} = "
            f"{step * height}"
        )
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ValueError(
            f"image step {step} is shorter than a row of {width} {msg.encoding} pixels "
            f"({row_bytes} bytes)"
        )
    shape: tuple[int, ...] = (height, width)
    strides: tuple[int, ...] = (step, channels * dtype.itemsize)
    if channels > 1:
        shape, strides = (*shape, channels), (*strides, dtype.itemsize)
    view: np.ndarray = np.ndarray(shape, dtype=dtype, buffer=data, strides=strides)
    return view


def numpy_to_image(
    array_hwc: np.ndarray, encoding: str, stamp_ns: int | None = None, frame_id: str = ""
) -> Any:
    """Return a sensor_msgs/msg/Image holding `array_hwc` (shape (H, W, C) or (H, W)).

    On the zenoh backend the message references the array (made contiguous only if it is not),
    so do not modify the array until the message is published.

    Raises:
        ValueError: unknown encoding, or a dtype / channel count that does not match it.
    """
    dtype, channels = _encoding(encoding)
    pixels = np.asarray(array_hwc)
    if pixels.dtype.kind != dtype.kind or pixels.dtype.itemsize != dtype.itemsize:
        raise ValueError(f"encoding {encoding} needs {dtype.name} pixels, got {pixels.dtype}")
    single = channels == 1 and pixels.ndim == 2
    if not single and (pixels.ndim != 3 or pixels.shape[2] != channels):
        expected = "(H, W) or (H, W, 1)" if channels == 1 else f"(H, W, {channels})"
        raise ValueError(f"encoding {encoding} needs shape {expected}, got {pixels.shape}")
    pixels = np.ascontiguousarray(pixels)
    msg = get_message("sensor_msgs/msg/Image")()
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    big_endian = pixels.dtype.byteorder == ">" or (
        pixels.dtype.byteorder == "=" and sys.byteorder == "big"
    )
    msg.is_bigendian = int(big_endian and pixels.dtype.itemsize > 1)
    msg.step = msg.width * channels * pixels.dtype.itemsize
    if stamp_ns is not None:
        msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    _assign_numeric(msg, "data", pixels.reshape(-1).view(np.uint8), "B")
    return msg


def _encoding(encoding: str) -> tuple[np.dtype[Any], int]:
    try:
        return _ENCODINGS[encoding]
    except KeyError:
        raise ValueError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(sorted(_ENCODINGS))}"
        ) from None


def _byte_view(data: Any) -> np.ndarray:
    """Return the bytes of `data` as a flat uint8 array, without copying where possible."""
    if isinstance(data, np.ndarray):
        if data.flags.c_contiguous:
            return data.reshape(-1).view(np.uint8)
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8).reshape(-1)  # a list: one unavoidable copy


def _assign_numeric(msg: Any, field_name: str, values: np.ndarray, typecode: str) -> None:
    """Set a numeric array field, zero-copy where the class stores numpy arrays.

    The zenoh backend's classes hold numpy arrays; rclpy's hold `array.array` for sequences and
    check the type on assignment, so they get one copy into an array.array.
    """
    if isinstance(getattr(msg, field_name), np.ndarray):
        setattr(msg, field_name, values)
        return
    target = array.array(typecode)
    target.frombytes(np.ascontiguousarray(values).data.cast("B"))
    setattr(msg, field_name, target)


# --------------------------------------------------------------------------------------------
# Joint states and trajectories


def joint_state_to_numpy(msg: Any) -> JointStateArrays:
    """Return a sensor_msgs/JointState as arrays (views of the message data where possible).

    Raises:
        ValueError: position/velocity/effort neither empty nor one value per joint name.
    """
    names = tuple(msg.name)
    arrays = {}
    for field_name in ("position", "velocity", "effort"):
        values = _float64_view(getattr(msg, field_name))
        if values.size not in (0, len(names)):
            raise ValueError(
                f"JointState has {len(names)} names but {values.size} {field_name} values"
            )
        arrays[field_name] = values
    return JointStateArrays(
        names=names,
        position_rad=arrays["position"],
        velocity=arrays["velocity"],
        effort=arrays["effort"],
        stamp_ns=stamp_to_ns(msg.header.stamp),
    )


def numpy_to_joint_state(
    names: Any,
    position: Any,
    velocity: Any = None,
    effort: Any = None,
    stamp_ns: int | None = None,
) -> Any:
    """Return a sensor_msgs/msg/JointState; velocity and effort stay empty when not given.

    Raises:
        ValueError: an array whose length differs from the number of names.
    """
    names = [str(name) for name in names]
    msg = get_message("sensor_msgs/msg/JointState")()
    msg.name = names
    for field_name, values in (("position", position), ("velocity", velocity), ("effort", effort)):
        if values is None:
            continue
        vector = np.ascontiguousarray(values, dtype=np.float64)
        if vector.shape != (len(names),):
            raise ValueError(
                f"{field_name} has shape {vector.shape}, expected ({len(names)},): one value "
                "per joint name"
            )
        _assign_numeric(msg, field_name, vector, "d")
    if stamp_ns is not None:
        msg.header.stamp = ns_to_stamp(stamp_ns)
    return msg


def joint_trajectory_to_numpy(msg: Any) -> TrajectoryArrays:
    """Return a trajectory_msgs/JointTrajectory's positions and timing as arrays (one copy).

    Raises:
        ValueError: a point whose positions are not one per joint name.
    """
    names = tuple(msg.joint_names)
    points = list(msg.points)
    positions = np.empty((len(points), len(names)), dtype=np.float64)
    times = np.empty(len(points), dtype=np.float64)
    for index, point in enumerate(points):
        row = _float64_view(point.positions)
        if row.shape != (len(names),):
            raise ValueError(
                f"trajectory point {index} has {row.size} positions, expected {len(names)} "
                "(one per joint name)"
            )
        positions[index] = row
        times[index] = stamp_to_ns(point.time_from_start) / _NS_PER_S
    return TrajectoryArrays(
        joint_names=names,
        positions=positions,
        time_from_start_s=times,
        stamp_ns=stamp_to_ns(msg.header.stamp),
    )


def numpy_to_joint_trajectory(
    joint_names: Any,
    positions: Any,
    time_from_start_s: Any,
    stamp_ns: int | None = None,
) -> Any:
    """Return a trajectory_msgs/msg/JointTrajectory with one point per row of `positions`.

    Args:
        joint_names: one name per column.
        positions: shape (points, joints), radians (metres for prismatic joints).
        time_from_start_s: shape (points,), strictly increasing, >= 0.
        stamp_ns: header stamp; None leaves it zero, which controllers read as "start now".

    Raises:
        ValueError: shapes that do not match, or times that are negative, not finite or not
            strictly increasing (ros2_control's trajectory controller rejects those).
    """
    names = [str(name) for name in joint_names]
    table = np.ascontiguousarray(positions, dtype=np.float64)
    times = np.asarray(time_from_start_s, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != len(names):
        raise ValueError(
            f"positions has shape {table.shape}, expected (points, {len(names)}): one column "
            "per joint name"
        )
    if times.shape != (table.shape[0],):
        raise ValueError(
            f"time_from_start_s has shape {times.shape}, expected ({table.shape[0]},): one time "
            "per row of positions"
        )
    if not np.all(np.isfinite(times)) or np.any(times < 0) or np.any(np.diff(times) <= 0):
        raise ValueError(
            f"time_from_start_s must be finite, >= 0 and strictly increasing, got {times}"
        )
    msg = get_message("trajectory_msgs/msg/JointTrajectory")()
    msg.joint_names = names
    point_cls = get_message("trajectory_msgs/msg/JointTrajectoryPoint")
    duration_cls = get_message("builtin_interfaces/msg/Duration")
    points = []
    for row, time_s in zip(table, times, strict=True):
        point = point_cls()
        _assign_numeric(point, "positions", row, "d")
        point.time_from_start = _split_ns(duration_cls, round(float(time_s) * _NS_PER_S))
        points.append(point)
    msg.points = points
    if stamp_ns is not None:
        msg.header.stamp = ns_to_stamp(stamp_ns)
    return msg


def _float64_view(values: Any) -> FloatArray:
    # np.asarray shares memory with float64 numpy arrays and array.array('d') (buffer protocol).
    return np.asarray(values, dtype=np.float64).reshape(-1)
