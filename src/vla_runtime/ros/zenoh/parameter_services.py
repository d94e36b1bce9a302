"""The six parameter services every rclpy node offers, so `ros2 param` and rqt see our nodes.

Names and semantics follow rclpy's parameter_service.py: `~/describe_parameters`,
`~/get_parameters`, `~/get_parameter_types`, `~/list_parameters`, `~/set_parameters`,
`~/set_parameters_atomically`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vla_runtime.ros.interfaces import get_message, get_service
from vla_runtime.ros.zenoh.parameters import Parameter, set_result
from vla_runtime.ros.zenoh.qos import qos_profile_parameters

if TYPE_CHECKING:
    from vla_runtime.ros.zenoh.node import Node

# rcl_interfaces/srv/ListParameters: depth 0 means "all levels".
_DEPTH_RECURSIVE = 0


class ParameterService:
    def __init__(self, node: Node) -> None:
        self._node = node
        for name, handler in (
            ("describe_parameters", self._describe),
            ("get_parameters", self._get),
            ("get_parameter_types", self._get_types),
            ("list_parameters", self._list),
            ("set_parameters", self._set),
            ("set_parameters_atomically", self._set_atomically),
        ):
            srv = get_service(
                "rcl_interfaces/srv/" + "".join(part.capitalize() for part in name.split("_"))
            )
            node.create_service(srv, f"~/{name}", handler, qos_profile=qos_profile_parameters)

    def _known(self, names: Any) -> list[Parameter]:
        return [self._node.get_parameter_or(name) for name in names]

    def _describe(self, request: Any, response: Any) -> Any:
        descriptors = []
        for name in request.names:
            if self._node.has_parameter(name):
                descriptors.append(self._node.describe_parameter(name))
            else:
                descriptors.append(
                    get_message("rcl_interfaces/msg/ParameterDescriptor")(name=name, type=0)
                )
        response.descriptors = descriptors
        return response

    def _get(self, request: Any, response: Any) -> Any:
        response.values = [p.get_parameter_value() for p in self._known(request.names)]
        return response

    def _get_types(self, request: Any, response: Any) -> Any:
        response.types = [int(p.type_) for p in self._known(request.names)]
        return response

    def _list(self, request: Any, response: Any) -> Any:
        names: list[str] = []
        prefixes: set[str] = set()
        wanted = list(request.prefixes)
        depth = int(request.depth)
        for name in sorted(self._node._parameters.values):
            if wanted and not any(name == p or name.startswith(p + ".") for p in wanted):
                continue
            if depth != _DEPTH_RECURSIVE and name.count(".") >= depth:
                continue
            names.append(name)
            if "." in name:
                prefixes.add(name.rsplit(".", 1)[0])
        response.result = get_message("rcl_interfaces/msg/ListParametersResult")(
            names=names, prefixes=sorted(prefixes)
        )
        return response

    def _parameters(self, messages: Any) -> list[Parameter] | str:
        try:
            return [Parameter.from_parameter_msg(msg) for msg in messages]
        except (ValueError, TypeError) as exc:
            return str(exc)

    def _set(self, request: Any, response: Any) -> Any:
        parameters = self._parameters(request.parameters)
        if isinstance(parameters, str):
            response.results = [set_result(False, parameters) for _ in request.parameters]
        else:
            response.results = self._node.set_parameters(parameters)
        return response

    def _set_atomically(self, request: Any, response: Any) -> Any:
        parameters = self._parameters(request.parameters)
        if isinstance(parameters, str):
            response.result = set_result(False, parameters)
        else:
            response.result = self._node.set_parameters_atomically(parameters)
        return response
