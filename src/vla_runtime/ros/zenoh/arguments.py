"""Parse the `--ros-args ... [--]` command-line section the way rcl does.

launch_ros (and `vla-runtime launch`) start every node with
`--ros-args -r __node:=NAME -r __ns:=/NS --params-file FILE -p name:=value -r from:=to`.
Parameter files use the ROS 2 format: `<node fqn or /**>: {ros__parameters: {...}}`.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

import yaml


class RosArgumentError(ValueError):
    """A malformed `--ros-args` section or parameter file."""


@dataclass(frozen=True)
class RemapRule:
    source: str
    target: str
    node: str | None = None  # `talker:chatter:=x` applies to node `talker` only


@dataclass(frozen=True)
class ParameterOverride:
    name: str
    value: Any
    node: str | None = None  # None: applies to every node


@dataclass
class RosArguments:
    remaps: list[RemapRule] = field(default_factory=list)
    params_files: list[str] = field(default_factory=list)
    params: list[ParameterOverride] = field(default_factory=list)
    log_level: str | None = None
    enclave: str = "/"

    def node_name_override(self, node_name: str) -> str | None:
        return self._special("__node", node_name)

    def namespace_override(self, node_name: str) -> str | None:
        return self._special("__ns", node_name)

    def _special(self, key: str, node_name: str) -> str | None:
        found = None
        for rule in self.remaps:
            if rule.source == key and rule.node in (None, node_name):
                found = rule.target
        return found


def split_ros_args(args: list[str]) -> tuple[list[str], list[str]]:
    """Return (ros args, the rest); each of several `--ros-args` sections ends at `--`."""
    ros: list[str] = []
    rest: list[str] = []
    inside = False
    for arg in args:
        if arg == "--ros-args":
            inside = True
        elif inside and arg == "--":
            inside = False
        elif inside:
            ros.append(arg)
        else:
            rest.append(arg)
    return ros, rest


def remove_ros_args(args: list[str]) -> list[str]:
    """rclpy.utilities.remove_ros_args."""
    return split_ros_args(args)[1]


def _rule(text: str, flag: str) -> tuple[str | None, str, str]:
    left, sep, right = text.partition(":=")
    if not sep or not left:
        raise RosArgumentError(f"{flag} {text!r}: expected name:=value")
    node = None
    # `node:name:=value`; names themselves never contain ':'.
    if ":" in left:
        node, _, left = left.rpartition(":")
    return node, left, right


def parse_ros_args(args: list[str]) -> RosArguments:
    ros, _ = split_ros_args(args)
    result = RosArguments()
    it = iter(ros)
    for arg in it:
        if arg in ("-r", "--remap"):
            node, source, target = _rule(_next(it, arg), arg)
            result.remaps.append(RemapRule(source, target, node))
        elif arg in ("-p", "--param"):
            node, name, value = _rule(_next(it, arg), arg)
            result.params.append(ParameterOverride(name, _yaml_value(value, arg), node))
        elif arg == "--params-file":
            result.params_files.append(_next(it, arg))
        elif arg == "--log-level":
            result.log_level = _next(it, arg).rpartition(":=")[2].lower()
        elif arg in ("-e", "--enclave"):
            result.enclave = _next(it, arg)
        elif arg == "--log-config-file":
            _next(it, arg)
        elif arg.startswith("--enable-") or arg.startswith("--disable-"):
            pass  # stdout/rosout/external-lib log switches: accepted, logging is stdout only
        else:
            raise RosArgumentError(f"unknown --ros-args argument {arg!r}")
    return result


def _next(it: Any, flag: str) -> str:
    try:
        return str(next(it))
    except StopIteration:
        raise RosArgumentError(f"{flag} needs a value") from None


def _yaml_value(text: str, flag: str) -> Any:
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError as exc:
        raise RosArgumentError(f"{flag}: value {text!r} is not valid YAML") from exc


def load_params_file(path: str, node_fqn: str) -> dict[str, Any]:
    """Parameters for `node_fqn` from a ROS 2 parameter file, flattened to dotted names.

    Entries are applied wildcard first, then more specific keys (rcl's precedence: a fully
    qualified node key beats `/**`). Unrelated node keys are ignored.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except OSError as exc:
        raise RosArgumentError(f"parameter file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise RosArgumentError(f"parameter file {path}: not valid YAML ({exc})") from exc
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise RosArgumentError(
            f"parameter file {path}: top level must map node names to "
            "{ros__parameters: {...}}, e.g. '/**: {ros__parameters: {rate_hz: 30.0}}'"
        )
    matches: list[tuple[int, dict[str, Any]]] = []
    for key, body in document.items():
        pattern = str(key)
        if not pattern.startswith("/"):
            pattern = "/" + pattern
        if not fnmatch.fnmatchcase(node_fqn, pattern.replace("/**", "*")):
            continue
        if not isinstance(body, dict) or "ros__parameters" not in body:
            raise RosArgumentError(
                f"parameter file {path}: entry {key!r} needs a 'ros__parameters' mapping"
            )
        params = body["ros__parameters"] or {}
        if not isinstance(params, dict):
            raise RosArgumentError(
                f"parameter file {path}: {key}.ros__parameters must be a mapping"
            )
        specificity = 0 if "*" in pattern else 1
        matches.append((specificity, params))
    merged: dict[str, Any] = {}
    for _, params in sorted(matches, key=lambda item: item[0]):
        merged.update(_flatten(params))
    return merged


def _flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
