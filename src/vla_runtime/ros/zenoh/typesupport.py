"""Message and service type support for the zenoh backend: classes, CDR and RIHS01 hashes.

Everything comes from one private rosbags type store (ROS 2 Jazzy definitions) extended with the
services in `service_definitions`. rosbags' own classes cannot stand in for rclpy's (every field
is a required argument), so each type gets a default-constructible dataclass with rclpy's
defaults, installed into the store before rosbags generates any (de)serialiser, so decoded
messages are of our classes all the way down.

    support = message_support("sensor_msgs/msg/Image")
    payload = support.serialize(msg)          # CDR with the 4-byte encapsulation header
    msg = support.deserialize(payload)        # numeric arrays are views into `payload`
    key = f"0/camera/{support.dds_name}/{support.type_hash}"
"""

from __future__ import annotations

import copy
import difflib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, make_dataclass
from functools import partial
from typing import Any

import numpy as np
from rosbags.interfaces import Nodetype
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.base import normalize_fieldname

from vla_runtime.ros.interfaces import UnknownTypeError, normalize_type_name
from vla_runtime.ros.zenoh import service_definitions, typehash


class TypeSupportError(ValueError):
    """A message or service type that cannot be found, serialised or decoded."""


class UnknownTypeSupportError(TypeSupportError, UnknownTypeError):
    """A type name the zenoh backend does not know; also an `interfaces.UnknownTypeError`."""


# rclpy's zero values for scalar fields (rosidl_generator_py `_msg.py.em`).
_SCALAR_DEFAULTS: dict[str, Any] = {"bool": False, "string": "", "float32": 0.0, "float64": 0.0}
# Field defaults from `.msg` files; rosbags stores drop them, rclpy honours them.
_FIELD_DEFAULTS: dict[tuple[str, str], Any] = {("geometry_msgs/msg/Quaternion", "w"): 1.0}
# Element dtypes exactly as rosbags' CDR code reads and writes them (`serde.utils.ndtype`).
_DTYPES: dict[str, np.dtype[Any]] = {
    **{name: np.dtype(name) for name in ("bool", "int8", "int16", "int32", "int64", "float32")},
    **{name: np.dtype(name) for name in ("uint8", "uint16", "uint32", "uint64", "float64")},
    "byte": np.dtype(np.int8),
    "char": np.dtype(np.uint8),
}
# rclpy's names for field types (`get_fields_and_field_types()`), where they differ from rosbags'.
_ROSIDL_NAMES = {"bool": "boolean", "byte": "octet", "char": "uint8", "float32": "float"}
_ROSIDL_NAMES["float64"] = "double"
_CDR_HEADER_LE = b"\x00\x01\x00\x00"

_LOCK = threading.RLock()
_STORE = get_typestore(Stores.ROS2_JAZZY)  # a fresh, private instance
if service_definitions.SERVICE_EVENT_INFO not in _STORE.fielddefs:
    _STORE.fielddefs.update(service_definitions.service_event_info_fielddefs())
_STORE.fielddefs.update(service_definitions.all_service_fielddefs())
# Typed loosely on purpose: rosbags' precise field-description types do not narrow by `kind`.
_FIELDDEFS: dict[str, Any] = _STORE.fielddefs


class _ClassTable(dict[str, type]):
    """`Typestore.types` replacement that builds our message class on first lookup.

    rosbags' generated deserialisers construct nested messages with
    `typestore.get_msgdef(name).cls`, and `get_msgdef` reads `types[name]`; answering that lookup
    with our class makes every decoded message, nested ones included, one of ours.
    """

    def __missing__(self, name: str) -> type:
        with _LOCK:
            if name not in self:
                self[name] = _build_class(name)
            return dict.__getitem__(self, name)


_STORE.types = _ClassTable()


# --------------------------------------------------------------------------------------------
# Message classes


def _build_class(name: str) -> type:
    if name not in _FIELDDEFS:
        raise _unknown("message", name, known_message_types())
    consts, field_defs = _FIELDDEFS[name]
    specs = []
    for raw_name, desc in field_defs:
        default = _FIELD_DEFAULTS.get((name, raw_name))
        spec = field(default=default) if default is not None else _default_field(desc)
        specs.append((normalize_fieldname(raw_name), _annotation(desc), spec))
    attrs = tuple(spec[0] for spec in specs)
    rosidl_types = {
        normalize_fieldname(raw_name): _rosidl_type(desc) for raw_name, desc in field_defs
    }
    namespace: dict[str, Any] = {const_name: value for const_name, _, value in consts}
    namespace.update(
        __msgtype__=name,
        __doc__=f"{name}, default-constructible like its rclpy class.",
        _field_attrs=attrs,
        _rosidl_types=rosidl_types,
        __eq__=_message_eq,
        __copy__=_message_copy,
        __reduce__=_message_reduce,
        get_fields_and_field_types=classmethod(_fields_and_field_types),
    )
    cls = make_dataclass(name.rsplit("/", 1)[1], specs, namespace=namespace, eq=False, slots=True)
    cls.__module__ = __name__
    return cls


def _default_field(desc: Any) -> Any:
    kind, detail = desc
    if kind == Nodetype.BASE:
        return field(default=_SCALAR_DEFAULTS.get(detail[0], 0))
    if kind == Nodetype.NAME:
        return field(default_factory=_STORE.types[detail])
    element, size = detail
    factory: Callable[[], Any]
    if element[0] == Nodetype.NAME:
        nested = _STORE.types[element[1]]
        factory = partial(_list_of, nested, size) if kind == Nodetype.ARRAY else list
    elif element[1][0] == "string":
        factory = partial(_list_of, str, size) if kind == Nodetype.ARRAY else list
    else:
        # Fixed arrays are zero-filled like rclpy's numpy arrays; sequences start empty.
        length = size if kind == Nodetype.ARRAY else 0
        factory = partial(np.zeros, length, _DTYPES[element[1][0]])
    return field(default_factory=factory)


def _annotation(desc: Any) -> Any:
    """Return the Python type a field holds, for `help()` and IDEs."""
    kind, detail = desc
    if kind == Nodetype.BASE:
        return {"bool": bool, "string": str, "float32": float, "float64": float}.get(
            detail[0], int
        )
    if kind == Nodetype.NAME:
        return _STORE.types[detail]
    element = detail[0]
    return np.ndarray if element[0] == Nodetype.BASE and element[1][0] != "string" else list


def _list_of(factory: Callable[[], Any], size: int) -> list[Any]:
    return [factory() for _ in range(size)]


def _rosidl_type(desc: Any) -> str:
    """Return the type string rclpy's `get_fields_and_field_types()` gives for a field."""
    kind, detail = desc
    if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
        element = _rosidl_type(detail[0])
        if kind == Nodetype.ARRAY:
            return f"{element}[{detail[1]}]"
        return f"sequence<{element}, {detail[1]}>" if detail[1] else f"sequence<{element}>"
    if kind == Nodetype.NAME:
        pkg, _, short = detail.split("/")
        return f"{pkg}/{short}"
    base, bound = detail
    if base == "string" and bound:
        return f"string<{bound}>"
    return str(_ROSIDL_NAMES.get(base, base))


def _message_eq(self: Any, other: Any) -> Any:
    if type(other) is not type(self):
        return NotImplemented
    for attr in self._field_attrs:
        mine, theirs = getattr(self, attr), getattr(other, attr)
        if isinstance(mine, np.ndarray) or isinstance(theirs, np.ndarray):
            if not np.array_equal(mine, theirs):
                return False
        elif mine != theirs:
            return False
    return True


def _message_copy(self: Any) -> Any:
    return type(self)(*[getattr(self, attr) for attr in self._field_attrs])


def _message_reduce(self: Any) -> tuple[Any, ...]:
    # Classes are built at run time, so pickle by type name rather than by module attribute.
    return (_rebuild, (self.__msgtype__, tuple(getattr(self, a) for a in self._field_attrs)))


def _rebuild(name: str, values: tuple[Any, ...]) -> Any:
    return message_class(name)(*values)


def _fields_and_field_types(cls: Any) -> dict[str, str]:
    return dict(cls._rosidl_types)


# --------------------------------------------------------------------------------------------
# Coercion of rclpy-style field values before serialisation

_NUMERIC, _NESTED, _NESTED_LIST, _MAX_LEN = range(4)


class _FieldError(Exception):
    """Internal: a field value that cannot be serialised; `path` is filled in on the way up."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason


def _coercion_plan(name: str) -> tuple[tuple[str, int, Any], ...]:
    """Return (attribute, operation, argument) for every field that needs a look at serialise time.

    Only numeric arrays and sequences (rosbags needs numpy arrays of the exact dtype), bounded
    sequences (rosbags does not enforce bounds) and messages containing such fields appear, so a
    String or a Header costs nothing here.
    """
    plan: list[tuple[str, int, Any]] = []
    for raw_name, (kind, detail) in _FIELDDEFS[name][1]:
        attr = normalize_fieldname(raw_name)
        if kind == Nodetype.NAME:
            if nested := _plan_for(detail):
                plan.append((attr, _NESTED, (detail, nested)))
            continue
        if kind == Nodetype.BASE:
            continue
        element, size = detail
        if element[0] == Nodetype.BASE and element[1][0] != "string":
            length = size if kind == Nodetype.ARRAY else None
            plan.append((attr, _NUMERIC, (_DTYPES[element[1][0]], length)))
        elif element[0] == Nodetype.NAME and (nested := _plan_for(element[1])):
            plan.append((attr, _NESTED_LIST, (element[1], nested)))
        if kind == Nodetype.SEQUENCE and size:
            plan.append((attr, _MAX_LEN, size))
    return tuple(plan)


_PLANS: dict[str, tuple[tuple[str, int, Any], ...]] = {}


def _plan_for(name: str) -> tuple[tuple[str, int, Any], ...]:
    with _LOCK:
        if name not in _PLANS:
            _PLANS[name] = _coercion_plan(name)
        return _PLANS[name]


def _coerce(msg: Any, plan: tuple[tuple[str, int, Any], ...]) -> Any:
    """Return `msg`, or a shallow copy whose fields rosbags can write; `msg` is never changed."""
    out = msg
    for attr, operation, argument in plan:
        value = getattr(msg, attr)
        new = value
        try:
            if operation == _NUMERIC:
                dtype, length = argument
                if not (
                    type(value) is np.ndarray
                    and value.dtype == dtype
                    and value.ndim == 1
                    and value.flags.c_contiguous
                ):
                    new = _to_numeric(value, dtype)
                if length is not None and len(new) != length:
                    raise _FieldError("", f"expects {length} elements, got {len(new)}")
            elif operation == _NESTED:
                new = _coerce_nested(value, *argument)
            elif operation == _NESTED_LIST:
                items = []
                for index, item in enumerate(value):
                    try:
                        items.append(_coerce_nested(item, *argument))
                    except _FieldError as problem:
                        problem.path = _join_path(f"[{index}]", problem.path)
                        raise
                if any(a is not b for a, b in zip(items, value, strict=True)):
                    new = items
            elif len(value) > argument:
                raise _FieldError("", f"takes at most {argument} items, got {len(value)}")
        except _FieldError as problem:
            problem.path = _join_path(attr, problem.path)
            raise
        except Exception as exc:  # anything numpy or a bad nested value raises
            raise _FieldError(attr, str(exc)) from exc
        if new is not value:
            if out is msg:
                out = _message_copy(msg) if hasattr(msg, "_field_attrs") else copy.copy(msg)
            setattr(out, attr, new)
    return out


def _coerce_nested(value: Any, name: str, plan: tuple[tuple[str, int, Any], ...]) -> Any:
    if getattr(type(value), "__msgtype__", None) != name:
        raise _FieldError("", f"expects a {name}, got {_describe_type(value)}")
    return _coerce(value, plan)


def _join_path(head: str, tail: str) -> str:
    if not tail:
        return head
    return head + tail if tail.startswith("[") else f"{head}.{tail}"


def _describe_type(value: Any) -> str:
    cls = type(value)
    if name := getattr(cls, "__msgtype__", None):
        return str(name)
    return (
        cls.__qualname__
        if cls.__module__ == "builtins"
        else f"{cls.__module__}.{cls.__qualname__}"
    )


def _to_numeric(value: Any, dtype: np.dtype[Any]) -> np.ndarray:
    if isinstance(value, (bytes, bytearray, memoryview)) and dtype.itemsize == 1:
        return np.frombuffer(value, dtype=dtype)  # zero copy
    if isinstance(value, str):
        raise _FieldError("", f"expects a sequence of {dtype.name}, got str")
    array = np.asarray(value)
    if array.size == 0:
        return np.zeros(0, dtype)
    source, target = array.dtype.kind, dtype.kind
    # Like rclpy's setters: no silent float->int or number->bool conversions.
    allowed = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}[target]
    if source not in allowed:
        raise _FieldError("", f"expects {dtype.name} values, got {array.dtype.name}")
    if source in "iu" and target in "iu" and array.dtype != dtype:
        limits = np.iinfo(dtype)
        if array.min() < limits.min or array.max() > limits.max:
            raise _FieldError("", f"has values outside the {dtype.name} range")
    return np.ascontiguousarray(array.astype(dtype, copy=False).reshape(-1))


def _diagnose(msg: Any, name: str, path: str = "") -> str | None:
    """Find the first field of `msg` whose value cannot be written as type `name` (slow path)."""
    for raw_name, desc in _FIELDDEFS[name][1]:
        where = f"{path}{raw_name}"
        attr = normalize_fieldname(raw_name)
        if not hasattr(msg, attr):
            return f'field "{where}" is missing'
        problem = _check_value(getattr(msg, attr), desc, where)
        if problem:
            return problem
    return None


def _check_value(value: Any, desc: Any, where: str) -> str | None:
    kind, detail = desc
    if kind == Nodetype.NAME:
        if getattr(type(value), "__msgtype__", None) != detail:
            return f'field "{where}" expects a {detail}, got {_describe_type(value)}'
        return _diagnose(value, detail, f"{where}.")
    if kind == Nodetype.BASE:
        return _check_scalar(value, detail[0], where)
    element = detail[0]
    if element[0] == Nodetype.BASE and element[1][0] != "string":
        return None  # numeric: _coerce has checked it already
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        return f'field "{where}" expects a sequence, got {type(value).__name__}'
    for index, item in enumerate(value):
        if problem := _check_value(item, element, f"{where}[{index}]"):
            return problem
    return None


def _check_scalar(value: Any, base: str, where: str) -> str | None:
    got = f"{type(value).__name__} {value!r:.40}"
    if base == "string":
        ok = isinstance(value, str)
    elif base == "bool":
        ok = isinstance(value, (bool, np.bool_, int))
    elif base.startswith("float"):
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
            value, bool
        )
    else:
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            return f'field "{where}" expects {base}, got {got}'
        limits = np.iinfo(_DTYPES[base])
        if not limits.min <= value <= limits.max:
            return f'field "{where}" value {value} is outside the {base} range'
        return None
    return None if ok else f'field "{where}" expects {base}, got {got}'


# --------------------------------------------------------------------------------------------
# Public API


@dataclass(frozen=True)
class MessageSupport:
    """Everything the zenoh backend needs to put one message type on the wire."""

    name: str
    dds_name: str
    type_hash: str
    cls: type
    _plan: tuple[Any, ...] = field(repr=False, compare=False)
    _msgdef: Any = field(repr=False, compare=False)

    def serialize(self, msg: Any) -> bytes | memoryview:
        """Return the little-endian CDR encoding of `msg`, encapsulation header included.

        Lists, tuples, `array.array` and bytes-like values are accepted for numeric arrays and
        sequences (converted here, without touching `msg`); numpy arrays of the right dtype are
        written straight into the output, the only copy of their data.

        Raises:
            TypeSupportError: `msg` is not a `name` message or a field has a wrong value.
        """
        if getattr(type(msg), "__msgtype__", None) != self.name:
            raise TypeSupportError(f"cannot serialize a {_describe_type(msg)} as {self.name}")
        msgdef = self._msgdef
        try:
            if self._plan:
                msg = _coerce(msg, self._plan)
            size = 4 + msgdef.getsize_cdr(0, msg, _STORE)
            buffer = memoryview(bytearray(size))  # zero-filled: CDR padding must be zero
            buffer[:4] = _CDR_HEADER_LE
            msgdef.serialize_cdr_le(buffer[4:], 0, msg, _STORE)
        except _FieldError as problem:
            raise TypeSupportError(
                f'cannot serialize {self.name}: field "{problem.path}" {problem.reason}'
            ) from None
        except Exception as exc:  # rosbags' generated code raises whatever a bad value causes
            detail = _diagnose(msg, self.name) or f"{type(exc).__name__}: {exc}"
            raise TypeSupportError(f"cannot serialize {self.name}: {detail}") from exc
        return buffer.toreadonly()

    def deserialize(self, data: bytes | memoryview | bytearray) -> Any:
        """Decode a CDR payload (either endianness) into a `cls` instance.

        Numeric arrays in the result are read-only views into `data` (no copy), so `data` must
        not be reused while the message lives.

        Raises:
            TypeSupportError: 'could not decode <name>: ...' for any malformed payload.
        """
        try:
            view = memoryview(data).cast("B")
            if len(view) < 4 or view[0] != 0 or view[1] > 1:
                raise ValueError("missing or unsupported CDR encapsulation header")
            if view[1]:
                decode = self._msgdef.deserialize_cdr_le
            else:
                decode = self._msgdef.deserialize_cdr_be
            # A memoryview slice, not `data[4:]`: slicing bytes would copy the whole payload.
            msg, end = decode(view[4:], 0, self.cls, _STORE)
            if end + 4 + 3 < len(view):  # up to 3 bytes of trailing CDR padding are allowed
                raise ValueError(f"{len(view) - end - 4} unexpected bytes after the message")
        except Exception as exc:  # generated decoders raise many kinds on hostile input
            raise TypeSupportError(f"could not decode {self.name}: {exc}") from exc
        return msg


@dataclass(frozen=True)
class ServiceSupport:
    """Type support of one service: its own hash and DDS name, and its two message types."""

    name: str
    dds_name: str
    type_hash: str
    cls: type
    request: MessageSupport
    response: MessageSupport


_MESSAGE_SUPPORT: dict[str, MessageSupport] = {}
_SERVICE_SUPPORT: dict[str, ServiceSupport] = {}


def message_support(name: str) -> MessageSupport:
    """Return (cached) type support for message type `name` ('pkg/msg/Name' or 'pkg/Name')."""
    full = _normalized(name, "msg")
    cached = _MESSAGE_SUPPORT.get(full)
    if cached is not None:
        return cached
    with _LOCK:
        if full not in _MESSAGE_SUPPORT:
            cls = message_class(full)
            _MESSAGE_SUPPORT[full] = MessageSupport(
                name=full,
                dds_name=dds_type_name(full),
                type_hash=typehash.message_type_hash(_FIELDDEFS, full),
                cls=cls,
                _plan=_plan_for(full),
                _msgdef=_STORE.get_msgdef(full),
            )
        return _MESSAGE_SUPPORT[full]


def service_support(name: str) -> ServiceSupport:
    """Return (cached) type support for service type `name` ('pkg/srv/Name' or 'pkg/Name')."""
    full = _normalized(name, "srv")
    cached = _SERVICE_SUPPORT.get(full)
    if cached is not None:
        return cached
    with _LOCK:
        if full not in _SERVICE_SUPPORT:
            if full not in service_definitions.SERVICE_DEFINITIONS:
                raise _unknown("service", full, known_service_types())
            request = message_support(f"{full}_Request")
            response = message_support(f"{full}_Response")
            # rmw_zenoh names a service by its response type minus the last 'Response_'.
            head, _, tail = response.dds_name.rpartition("Response_")
            _SERVICE_SUPPORT[full] = ServiceSupport(
                name=full,
                dds_name=head + tail,
                type_hash=typehash.service_type_hash(_FIELDDEFS, full),
                cls=_service_class(full, request.cls, response.cls),
                request=request,
                response=response,
            )
        return _SERVICE_SUPPORT[full]


def support_for(msg_or_cls: Any) -> MessageSupport:
    """Return the type support of a message instance or class (by its `__msgtype__`)."""
    cls = msg_or_cls if isinstance(msg_or_cls, type) else type(msg_or_cls)
    name = getattr(cls, "__msgtype__", None)
    if not isinstance(name, str):
        raise TypeSupportError(
            f"{cls.__module__}.{cls.__name__} is not a zenoh-backend message class "
            "(it has no __msgtype__); get classes from vla_runtime.ros.interfaces.get_message"
        )
    return message_support(name)


def message_class(name: str) -> type:
    """Return the default-constructible message class for `name`."""
    full = _normalized(name, "msg")
    if full not in _FIELDDEFS:
        raise _unknown("message", full, known_message_types())
    cls: type = _STORE.types[full]
    return cls


def service_class(name: str) -> type:
    """Return the service class (`.Request`, `.Response`, `__srvtype__`) for `name`."""
    return service_support(name).cls


def known_message_types() -> list[str]:
    """Return every message type name the zenoh backend can use, sorted."""
    return sorted(n for n in _FIELDDEFS if "/msg/" in n)


def known_service_types() -> list[str]:
    """Return every service type name the zenoh backend can use, sorted."""
    return sorted(service_definitions.SERVICE_DEFINITIONS)


def dds_type_name(name: str) -> str:
    """Return rmw's DDS-style type name: 'pkg/msg/Name' -> 'pkg::msg::dds_::Name_'."""
    pkg, kind, short = name.split("/")
    return f"{pkg}::{kind}::dds_::{short}_"


def _service_class(name: str, request: type, response: type) -> type:
    namespace = {
        "__slots__": (),
        "__srvtype__": name,
        "__module__": __name__,
        "__doc__": f"{name}: use .Request and .Response, like an rclpy service class.",
        "Request": request,
        "Response": response,
    }
    return type(name.rsplit("/", 1)[1], (), namespace)


def _normalized(name: str, kind: str) -> str:
    try:
        return normalize_type_name(name, kind)
    except UnknownTypeError as exc:
        raise UnknownTypeSupportError(str(exc)) from None


def _unknown(kind: str, name: str, known: list[str]) -> UnknownTypeSupportError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return UnknownTypeSupportError(
        f"unknown {kind} type {name}; {hint}the zenoh backend knows {len(known)} {kind} types "
        f"(see known_{kind}_types())"
    )
