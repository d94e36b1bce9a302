"""RIHS01 type hashes (REP-2011), computed the way rosidl's build step computes them.

rmw_zenoh puts the hash into every data key and liveliness token, so a wrong hash means a silent
non-match with real ROS 2 nodes. The algorithm follows `ros2/rosidl` (Jazzy)
`rosidl_generator_type_description`: a type description is a JSON object holding the type itself
and every type reachable from it (sorted by name); fields carry a numeric type id, capacity,
string capacity and nested type name; default values are dropped; the JSON text (separators
`', '` and `': '`, ASCII) is hashed with SHA-256.

We compute it ourselves instead of calling `rosbags.Typestore.hash_rihs01` because rosbags hashes
a `.msg` `char` as FIELD_TYPE_CHAR (13), while rosidl first turns `char` into `uint8` (3). That
difference reaches every service type through `service_msgs/msg/ServiceEventInfo.client_gid`.

Input is the rosbags field-definition table (`Typestore.fielddefs`): type name ->
(constants, [(field name, field description)]).
"""

from __future__ import annotations

import hashlib
import json
from collections import ChainMap
from collections.abc import Mapping
from typing import Any

from rosbags.interfaces import Nodetype

# type_description_interfaces/msg/FieldType.msg ids for the scalar element types.
_ELEMENT_TYPE_ID = {
    "int8": 2,
    "uint8": 3,
    "int16": 4,
    "uint16": 5,
    "int32": 6,
    "uint32": 7,
    "int64": 8,
    "uint64": 9,
    "float32": 10,
    "float64": 11,
    "float128": 12,
    # rosidl_adapter maps .msg `char` to IDL uint8 before any hashing (MSG_TYPE_TO_IDL).
    "char": 3,
    "bool": 15,
    # .msg `byte` becomes IDL `octet`, FIELD_TYPE_BYTE.
    "byte": 16,
    "string": 17,
}
_NESTED_TYPE_ID = 1
_BOUNDED_STRING_TYPE_ID = 21
# Offsets FieldType.msg adds to an element type id for the container kinds.
_ARRAY_OFFSET = 48
_BOUNDED_SEQUENCE_OFFSET = 96
_UNBOUNDED_SEQUENCE_OFFSET = 144

# rosidl gives structs without members this placeholder member (and so does the CDR encoding).
EMPTY_STRUCT_MEMBER = "structure_needs_at_least_one_member"

FieldDefs = Mapping[str, tuple[Any, list[tuple[str, Any]]]]


class TypeHashError(ValueError):
    """A type description that cannot be hashed (unknown nested type or element type)."""


def message_type_hash(fielddefs: FieldDefs, name: str) -> str:
    """Return the RIHS01 string of message type `name` ('pkg/msg/Name')."""
    return _hash(type_description(fielddefs, name))


def service_type_hash(fielddefs: FieldDefs, name: str) -> str:
    """Return the RIHS01 string of service type `name` ('pkg/srv/Name').

    `fielddefs` must hold `<name>_Request`, `<name>_Response` and
    `service_msgs/msg/ServiceEventInfo`; the service struct and `<name>_Event` are synthesised
    here exactly as rosidl_parser's `Service` derives them.
    """
    # ChainMap: look the synthetic structs up first without copying the whole table.
    overlay = dict(service_structs(name))
    return _hash(type_description(ChainMap(overlay, fielddefs), name))  # type: ignore[arg-type]


def service_structs(name: str) -> list[tuple[str, tuple[list[Any], list[tuple[str, Any]]]]]:
    """Return the two implicit structs of a service: `pkg/srv/Name` and `pkg/srv/Name_Event`.

    The field layout is rosidl's (`rosidl_parser.definition.Service` and `add_srv` in
    rosidl_generator_type_description): order and names are part of the hash.
    """
    request, response, event = (f"{name}_Request", f"{name}_Response", f"{name}_Event")
    service_fields = [
        ("request_message", (Nodetype.NAME, request)),
        ("response_message", (Nodetype.NAME, response)),
        ("event_message", (Nodetype.NAME, event)),
    ]
    # Introspection events carry at most one request and one response.
    event_fields = [
        ("info", (Nodetype.NAME, "service_msgs/msg/ServiceEventInfo")),
        ("request", (Nodetype.SEQUENCE, ((Nodetype.NAME, request), 1))),
        ("response", (Nodetype.SEQUENCE, ((Nodetype.NAME, response), 1))),
    ]
    return [(name, ([], service_fields)), (event, ([], event_fields))]


def type_description(fielddefs: FieldDefs, name: str) -> dict[str, Any]:
    """Return the hashable TypeDescription of `name` (no default values), as plain JSON data."""
    individual: dict[str, dict[str, Any]] = {}
    pending = [name]
    while pending:
        current = pending.pop()
        if current in individual:
            continue
        if current not in fielddefs:
            raise TypeHashError(f"cannot hash {name}: it references unknown type {current}")
        described = _individual(current, fielddefs[current][1])
        individual[current] = described
        pending.extend(
            f["type"]["nested_type_name"]
            for f in described["fields"]
            if f["type"]["nested_type_name"]
        )
    return {
        "type_description": individual[name],
        "referenced_type_descriptions": [individual[n] for n in sorted(individual) if n != name],
    }


def _individual(name: str, fields: list[tuple[str, Any]]) -> dict[str, Any]:
    if not fields:
        fields = [(EMPTY_STRUCT_MEMBER, (Nodetype.BASE, ("uint8", 0)))]
    return {
        "type_name": name,
        "fields": [{"name": fname, "type": _field_type(name, desc)} for fname, desc in fields],
    }


def _field_type(owner: str, desc: Any) -> dict[str, Any]:
    offset, capacity = 0, 0
    element = desc
    if desc[0] == Nodetype.ARRAY:
        element, capacity = desc[1]
        offset = _ARRAY_OFFSET
    elif desc[0] == Nodetype.SEQUENCE:
        element, capacity = desc[1]
        offset = _BOUNDED_SEQUENCE_OFFSET if capacity else _UNBOUNDED_SEQUENCE_OFFSET
    string_capacity, nested = 0, ""
    if element[0] == Nodetype.NAME:
        type_id = _NESTED_TYPE_ID
        nested = element[1]
    else:
        base, string_capacity = element[1]
        if base == "string" and string_capacity:
            type_id = _BOUNDED_STRING_TYPE_ID
        elif base in _ELEMENT_TYPE_ID:
            type_id = _ELEMENT_TYPE_ID[base]
        else:
            raise TypeHashError(f"cannot hash {owner}: element type {base!r} has no RIHS01 id")
    # Key order matters: it is the order of type_description_interfaces/msg/FieldType.
    return {
        "type_id": offset + type_id,
        "capacity": capacity,
        "string_capacity": string_capacity,
        "nested_type_name": nested,
    }


def _hash(description: dict[str, Any]) -> str:
    text = json.dumps(description, ensure_ascii=True, separators=(", ", ": "), sort_keys=False)
    return "RIHS01_" + hashlib.sha256(text.encode("utf-8")).hexdigest()
