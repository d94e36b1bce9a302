"""rclpy.parameter.Parameter and the node's parameter table (zenoh backend).

Typing follows rclpy: a parameter keeps the type it was declared with, unless its descriptor
says `dynamic_typing`; an override of another type is an error that names the parameter (so a
config that loads here also loads on rclpy). Descriptors and results are the rcl_interfaces
messages, as in rclpy.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any

from vla_runtime.ros.interfaces import get_message


class ParameterException(Exception):
    """Base of the parameter errors rclpy raises (rclpy.exceptions)."""


class ParameterNotDeclaredException(ParameterException):
    pass


class ParameterAlreadyDeclaredException(ParameterException):
    pass


class InvalidParameterTypeException(ParameterException):
    pass


class InvalidParameterValueException(ParameterException):
    pass


class ParameterImmutableException(ParameterException):
    pass


class Parameter:
    class Type(enum.IntEnum):
        NOT_SET = 0
        BOOL = 1
        INTEGER = 2
        DOUBLE = 3
        STRING = 4
        BYTE_ARRAY = 5
        BOOL_ARRAY = 6
        INTEGER_ARRAY = 7
        DOUBLE_ARRAY = 8
        STRING_ARRAY = 9

        @classmethod
        def from_parameter_value(cls, value: Any) -> Parameter.Type:
            if value is None:
                return cls.NOT_SET
            if isinstance(value, bool):
                return cls.BOOL
            if isinstance(value, int):
                return cls.INTEGER
            if isinstance(value, float):
                return cls.DOUBLE
            if isinstance(value, str):
                return cls.STRING
            if isinstance(value, (bytes, bytearray)):
                return cls.BYTE_ARRAY
            if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
                items = list(value.tolist() if hasattr(value, "tolist") else value)
                for array_type, item_type in (
                    (cls.BOOL_ARRAY, bool),
                    (cls.INTEGER_ARRAY, int),
                    (cls.DOUBLE_ARRAY, float),
                    (cls.STRING_ARRAY, str),
                ):
                    if items and all(type(item) is item_type for item in items):
                        return array_type
                if not items:
                    return cls.STRING_ARRAY  # rclpy cannot tell either; any typed array fits
            raise TypeError(f"{value!r} ({type(value).__name__}) is not a ROS parameter value")

        def check(self, value: Any) -> bool:
            if self == Parameter.Type.NOT_SET:
                return value is None
            try:
                actual = Parameter.Type.from_parameter_value(value)
            except TypeError:
                return False
            if actual == self:
                return True
            # An empty list matches any array type.
            return self.name.endswith("ARRAY") and not list(value)

    def __init__(self, name: str, type_: Parameter.Type | None = None, value: Any = None) -> None:
        if type_ is None:
            type_ = Parameter.Type.from_parameter_value(value)
        type_ = Parameter.Type(type_)
        if not type_.check(value):
            raise ValueError(f"parameter {name!r}: {value!r} is not of type {type_.name}")
        self._name = name
        self._type = type_
        self._value = list(value) if isinstance(value, tuple) else value

    @property
    def name(self) -> str:
        return self._name

    @property
    def type_(self) -> Parameter.Type:
        return self._type

    @property
    def value(self) -> Any:
        return self._value

    def get_parameter_value(self) -> Any:
        """This value as an rcl_interfaces/ParameterValue message."""
        msg = get_message("rcl_interfaces/msg/ParameterValue")()
        msg.type = int(self._type)
        field = _VALUE_FIELDS.get(self._type)
        if field:
            setattr(msg, field, self._value)
        return msg

    def to_parameter_msg(self) -> Any:
        return get_message("rcl_interfaces/msg/Parameter")(
            name=self._name, value=self.get_parameter_value()
        )

    @classmethod
    def from_parameter_msg(cls, msg: Any) -> Parameter:
        return cls(msg.name, value=parameter_value_to_python(msg.value))

    def __repr__(self) -> str:
        return f"Parameter({self._name!r}, {self._type.name}, {self._value!r})"


_VALUE_FIELDS = {
    Parameter.Type.BOOL: "bool_value",
    Parameter.Type.INTEGER: "integer_value",
    Parameter.Type.DOUBLE: "double_value",
    Parameter.Type.STRING: "string_value",
    Parameter.Type.BYTE_ARRAY: "byte_array_value",
    Parameter.Type.BOOL_ARRAY: "bool_array_value",
    Parameter.Type.INTEGER_ARRAY: "integer_array_value",
    Parameter.Type.DOUBLE_ARRAY: "double_array_value",
    Parameter.Type.STRING_ARRAY: "string_array_value",
}


def parameter_value_to_python(msg: Any) -> Any:
    """rcl_interfaces/ParameterValue → the Python value it holds (None when NOT_SET)."""
    try:
        field = _VALUE_FIELDS.get(Parameter.Type(msg.type))
    except ValueError:
        raise ValueError(f"unknown parameter type {msg.type}") from None
    if field is None:
        return None
    value = getattr(msg, field)
    if hasattr(value, "tolist"):  # numpy arrays from the wire → plain lists, as rclpy gives
        value = value.tolist()
    if Parameter.Type(msg.type) == Parameter.Type.BOOL_ARRAY:
        value = [bool(v) for v in value]
    return value


SetCallback = Callable[[list[Parameter]], Any]


def set_result(successful: bool, reason: str = "") -> Any:
    return get_message("rcl_interfaces/msg/SetParametersResult")(
        successful=successful, reason=reason
    )


def default_descriptor(name: str, type_: Parameter.Type) -> Any:
    return get_message("rcl_interfaces/msg/ParameterDescriptor")(name=name, type=int(type_))


class ParameterTable:
    """Declared parameters, their descriptors and the set-callbacks of one node."""

    def __init__(self, node_name: str, overrides: dict[str, Any], allow_undeclared: bool) -> None:
        self._node_name = node_name
        self.overrides = overrides
        self.allow_undeclared = allow_undeclared
        self.values: dict[str, Parameter] = {}
        self.descriptors: dict[str, Any] = {}
        self.pre_set: list[Callable[[list[Parameter]], list[Parameter]]] = []
        self.on_set: list[SetCallback] = []
        self.post_set: list[Callable[[list[Parameter]], None]] = []

    def declare(self, name: str, value: Any, descriptor: Any, ignore_override: bool) -> Parameter:
        if name in self.values:
            raise ParameterAlreadyDeclaredException(f"parameter {name!r} is already declared")
        if isinstance(value, Parameter.Type):
            declared_type, value = value, None
        else:
            declared_type = Parameter.Type.from_parameter_value(value)
        if descriptor is None:
            descriptor = default_descriptor(name, declared_type)
        descriptor.name = name
        if descriptor.type == 0:
            descriptor.type = int(declared_type)
        if not ignore_override and name in self.overrides:
            value = self.overrides[name]
            if (
                not descriptor.dynamic_typing
                and descriptor.type
                and not Parameter.Type(descriptor.type).check(value)
            ):
                raise InvalidParameterTypeException(
                    f"{self._node_name}: parameter {name!r} is declared "
                    f"{Parameter.Type(descriptor.type).name} but the override {value!r} is "
                    f"{Parameter.Type.from_parameter_value(value).name}"
                    + (
                        " (write it with a decimal point, e.g. 30.0)"
                        if descriptor.type == Parameter.Type.DOUBLE and isinstance(value, int)
                        else ""
                    )
                )
        parameter = Parameter(name, value=value)
        result = self._run_callbacks([parameter])
        if not result.successful:
            raise InvalidParameterValueException(
                f"{self._node_name}: parameter {name!r} = {value!r} rejected: {result.reason}"
            )
        self.values[name] = parameter
        self.descriptors[name] = descriptor
        return parameter

    def get(self, name: str) -> Parameter:
        if name in self.values:
            return self.values[name]
        if self.allow_undeclared:
            return Parameter(name, Parameter.Type.NOT_SET, None)
        raise ParameterNotDeclaredException(
            f"{self._node_name}: parameter {name!r} is not declared "
            f"(declared: {', '.join(sorted(self.values)) or 'none'})"
        )

    def set(self, parameters: Sequence[Parameter]) -> list[Any]:
        return [self.set_atomically([parameter]) for parameter in parameters]

    def set_atomically(self, parameters: Sequence[Parameter]) -> Any:
        params = list(parameters)
        for callback in self.pre_set:
            params = list(callback(params))
        for parameter in params:
            reason = self._check(parameter)
            if reason:
                return set_result(False, reason)
        result = self._run_callbacks(params)
        if not result.successful:
            return result
        for parameter in params:
            if parameter.type_ == Parameter.Type.NOT_SET:
                self.values.pop(parameter.name, None)
                self.descriptors.pop(parameter.name, None)
                continue
            if parameter.name not in self.values:
                self.descriptors[parameter.name] = default_descriptor(
                    parameter.name, parameter.type_
                )
            self.values[parameter.name] = parameter
        for post in self.post_set:
            post(params)
        return result

    def _check(self, parameter: Parameter) -> str:
        name = parameter.name
        if name not in self.values:
            return "" if self.allow_undeclared else f"parameter {name!r} is not declared"
        descriptor = self.descriptors[name]
        if descriptor.read_only:
            return f"parameter {name!r} is read-only"
        if (
            not descriptor.dynamic_typing
            and descriptor.type
            and parameter.type_ != Parameter.Type(descriptor.type)
        ):
            return (
                f"parameter {name!r} has type {Parameter.Type(descriptor.type).name}, "
                f"cannot set a {parameter.type_.name}"
            )
        return ""

    def _run_callbacks(self, params: list[Parameter]) -> Any:
        for callback in self.on_set:
            result = callback(params)
            if not result.successful:
                return result
        return set_result(True)
