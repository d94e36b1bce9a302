"""Messages to and from plain dicts and YAML, for the CLI (`topic echo`, `topic pub`, services).

Backend-neutral: works with the zenoh backend's dataclasses and with rclpy's generated classes,
through the API both share (`get_fields_and_field_types()` and attribute access). The YAML layout
follows `ros2 topic echo`: block style, fields in definition order.

    message_to_yaml(msg)                          # 'data: hello\\n'
    fill_message(String, {"data": "hello"})
    fill_message(Pose, {"position": {"x": 1.0}})
"""

from __future__ import annotations

import array
import numbers
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import yaml

from vla_runtime.ros.interfaces import get_message, type_name_of

# rosidl gives empty messages this member; rclpy hides it and so do we.
_PLACEHOLDER = "structure_needs_at_least_one_member"
_STRING_TYPES = ("string", "wstring")
_FLOAT_TYPES = ("float", "double", "float32", "float64", "long double")
_TRUNCATION_MARK = "..."


def message_to_dict(msg: Any) -> dict[str, Any]:
    """Return the fields of `msg` as nested plain Python data (numpy arrays become lists)."""
    return _message_to_plain(msg, None)


def message_to_yaml(msg: Any, *, truncate_arrays: int | None = None) -> str:
    """Return `msg` as block YAML, like `ros2 topic echo` prints it (without the '---').

    Args:
        msg: a message instance of either backend.
        truncate_arrays: if given, arrays and sequences longer than this show only their first
            `truncate_arrays` items followed by an item '...' (e.g. 64 for camera images).
    """
    if truncate_arrays is not None and truncate_arrays < 0:
        raise ValueError(f"truncate_arrays must be >= 0, got {truncate_arrays}")
    plain = _message_to_plain(msg, truncate_arrays)
    if not plain:
        return "{}\n"
    return yaml.safe_dump(
        plain, default_flow_style=False, sort_keys=False, allow_unicode=True, width=sys.maxsize
    )


def fill_message(cls: type, values: Mapping[str, Any] | None) -> Any:
    """Return a new `cls` message with the fields given in `values` (nested mappings allowed).

    Fields not named keep their defaults. Scalars are converted the way `ros2 topic pub` does it
    (an int for a float field, a number for a string field); numeric arrays get the container
    type the message class uses.

    Raises:
        ValueError: an unknown field name, or a value that does not fit its field.
    """
    msg = cls()
    if values is None:
        return msg
    name = type_name_of(cls)
    if not isinstance(values, Mapping):
        raise ValueError(f"values for {name} must be a mapping of field names, got {values!r:.60}")
    field_types = _field_types(cls)
    for key, value in values.items():
        if key not in field_types:
            raise ValueError(
                f'unknown field "{key}" for {name}; fields: {", ".join(field_types) or "(none)"}'
            )
        setattr(msg, key, _field_value(msg, key, field_types[key], value, name))
    return msg


def _field_types(cls: type) -> dict[str, str]:
    getter = getattr(cls, "get_fields_and_field_types", None)
    if getter is None:
        raise TypeError(f"{cls!r} is not a ROS 2 message class (no get_fields_and_field_types)")
    return {k: v for k, v in getter().items() if k != _PLACEHOLDER}


def _message_to_plain(msg: Any, limit: int | None) -> dict[str, Any]:
    return {key: _to_plain(getattr(msg, key), limit) for key in _field_types(type(msg))}


def _to_plain(value: Any, limit: int | None) -> Any:
    if hasattr(type(value), "get_fields_and_field_types"):
        return _message_to_plain(value, limit)
    if isinstance(value, (np.ndarray, array.array, bytes, bytearray, list, tuple)):
        truncated = limit is not None and len(value) > limit
        # Slice before converting: a camera image has a million items.
        items = value[:limit] if truncated else value
        if isinstance(items, (np.ndarray, array.array)):
            plain = items.tolist()
        elif isinstance(items, (bytes, bytearray)):
            plain = list(items)
        else:
            plain = [_to_plain(item, limit) for item in items]
        return [*plain, _TRUNCATION_MARK] if truncated else plain
    if isinstance(value, np.generic):
        return value.item()
    return value


def _parse_type(type_string: str) -> tuple[str, bool]:
    """Split a rosidl field type string into (element type, is_array_or_sequence)."""
    if type_string.startswith("sequence<"):
        return type_string[len("sequence<") : -1].split(",")[0].strip(), True
    if type_string.endswith("]"):
        return type_string[: type_string.rindex("[")], True
    return type_string, False


def _field_value(msg: Any, key: str, type_string: str, value: Any, owner: str) -> Any:
    element, is_container = _parse_type(type_string)
    where = f'field "{key}" of {owner}'
    nested = "/" in element
    if not is_container:
        if nested:
            if isinstance(value, Mapping):
                return fill_message(type(getattr(msg, key)), value)
            if hasattr(type(value), "get_fields_and_field_types"):
                return value
            raise ValueError(f"{where} expects a mapping for {element}, got {value!r:.60}")
        return _scalar(value, element, where)
    if isinstance(value, (str, Mapping)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{where} expects a list, got {value!r:.60}")
    if nested:
        item_cls = get_message(element)
        return [
            fill_message(item_cls, item) if isinstance(item, Mapping) else item for item in value
        ]
    current = getattr(msg, key)
    if isinstance(value, (bytes, bytearray)) and isinstance(current, np.ndarray):
        return np.frombuffer(value, dtype=current.dtype).copy()
    items = [
        _scalar(item, element, f'field "{key}[{i}]" of {owner}') for i, item in enumerate(value)
    ]
    # Keep the container kind the class uses: numpy (zenoh backend, rclpy fixed arrays),
    # array.array (rclpy numeric sequences) or list.
    if isinstance(current, np.ndarray):
        return np.asarray(items, dtype=current.dtype)
    if isinstance(current, array.array):
        return array.array(current.typecode, items)
    return items


def _scalar(value: Any, element: str, where: str) -> Any:
    if element.startswith(_STRING_TYPES):
        if isinstance(value, (str, int, float, bool)):
            return value if isinstance(value, str) else str(value)
    elif element in ("boolean", "bool"):
        if isinstance(value, (bool, np.bool_)) or (_is_integer(value) and value in (0, 1)):
            return bool(value)
    elif element in _FLOAT_TYPES:
        if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
            return float(value)
    elif _is_integer(value) or (isinstance(value, float) and value.is_integer()):
        return int(value)
    raise ValueError(f"{where} expects {element}, got {value!r:.60}")


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
