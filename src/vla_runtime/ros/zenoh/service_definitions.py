"""The `.srv` definitions the zenoh backend knows, as rosbags field-definition tables.

rosbags type stores ship message types only, so the services a runtime node serves or calls
(parameter services every rclpy node offers, std_srvs, the AddTwoInts demo) are written out here
from their public `.srv` files (`ros2/rcl_interfaces`, `ros2/common_interfaces`,
`ros2/example_interfaces`, Jazzy). Field order and names are part of both the CDR layout and the
RIHS01 hash, which the tests pin against the hashes of the upstream builds.
"""

from __future__ import annotations

from typing import Any

from rosbags.interfaces import Nodetype
from rosbags.typesys import get_types_from_msg

from vla_runtime.ros.zenoh.typehash import EMPTY_STRUCT_MEMBER

SERVICE_DEFINITIONS: dict[str, str] = {
    "std_srvs/srv/Empty": "---\n",
    "std_srvs/srv/Trigger": "---\nbool success\nstring message\n",
    "std_srvs/srv/SetBool": "bool data\n---\nbool success\nstring message\n",
    "example_interfaces/srv/AddTwoInts": "int64 a\nint64 b\n---\nint64 sum\n",
    "rcl_interfaces/srv/GetParameters": "string[] names\n---\nParameterValue[] values\n",
    "rcl_interfaces/srv/SetParameters": (
        "Parameter[] parameters\n---\nSetParametersResult[] results\n"
    ),
    "rcl_interfaces/srv/SetParametersAtomically": (
        "Parameter[] parameters\n---\nSetParametersResult result\n"
    ),
    "rcl_interfaces/srv/ListParameters": (
        "uint64 DEPTH_RECURSIVE=0\nstring[] prefixes\nuint64 depth\n---\n"
        "ListParametersResult result\n"
    ),
    "rcl_interfaces/srv/DescribeParameters": (
        "string[] names\n---\nParameterDescriptor[] descriptors\n"
    ),
    "rcl_interfaces/srv/GetParameterTypes": "string[] names\n---\nuint8[] types\n",
}

# Every service type description embeds this message; older stores may lack it.
SERVICE_EVENT_INFO = "service_msgs/msg/ServiceEventInfo"
SERVICE_EVENT_INFO_DEFINITION = (
    "uint8 REQUEST_SENT=0\nuint8 REQUEST_RECEIVED=1\nuint8 RESPONSE_SENT=2\n"
    "uint8 RESPONSE_RECEIVED=3\n"
    "uint8 event_type\nbuiltin_interfaces/Time stamp\nchar[16] client_gid\nint64 sequence_number\n"
)

FieldDefTable = dict[str, tuple[list[Any], list[tuple[str, Any]]]]


def service_fielddefs(name: str, text: str) -> FieldDefTable:
    """Parse the `.srv` text of service `name` into its `_Request` and `_Response` entries.

    Args:
        name: 'pkg/srv/Name'.
        text: the `.srv` file content (request, a line `---`, response).

    Returns:
        {'pkg/srv/Name_Request': (constants, fields), 'pkg/srv/Name_Response': (...)}.
    """
    pkg, _, short = name.split("/")
    request_text, separator, response_text = text.partition("\n---\n")
    if not separator:
        if not text.startswith("---\n"):
            raise ValueError(f"{name}: a .srv definition needs a '---' line")
        request_text, response_text = "", text[len("---\n") :]
    table: FieldDefTable = {}
    for suffix, part in (("_Request", request_text), ("_Response", response_text)):
        # rosbags' msg parser files every type under 'pkg/msg/' (it would turn 'pkg/srv/X' into
        # 'pkg/srv/msg/X'), so parse under the msg name and move the entry; relative type
        # references then resolve to the package's msg types, as rosidl resolves them.
        parsed = get_types_from_msg(part, f"{pkg}/msg/{short}{suffix}")
        consts, fields = parsed[f"{pkg}/msg/{short}{suffix}"]
        if not fields:
            fields = [(EMPTY_STRUCT_MEMBER, (Nodetype.BASE, ("uint8", 0)))]
        table[f"{pkg}/srv/{short}{suffix}"] = (consts, fields)
    return table


def all_service_fielddefs() -> FieldDefTable:
    """Return the request/response entries of every service in `SERVICE_DEFINITIONS`."""
    table: FieldDefTable = {}
    for name, text in SERVICE_DEFINITIONS.items():
        table.update(service_fielddefs(name, text))
    return table


def service_event_info_fielddefs() -> FieldDefTable:
    """Return the `service_msgs/msg/ServiceEventInfo` entry, for stores that lack it."""
    parsed = get_types_from_msg(SERVICE_EVENT_INFO_DEFINITION, SERVICE_EVENT_INFO)
    return {SERVICE_EVENT_INFO: parsed[SERVICE_EVENT_INFO]}
