"""The schema layer of graph files: typed key access, key checks and launch arguments.

Everything here raises `GraphError` naming the key at fault (`nodes[1].respawn`), and `located`
puts the file in front, so a typo in a graph fails at start-up with a one-line message the CLI
prints as is. Launch arguments are declared under `arguments:`, given as `name:=value` and
substituted as `${name}` in string values. Nothing here knows what a node or a graph is:
`vla_runtime.launch.graph` builds its specs from these pieces.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

# A ROS name token (node name, namespace part) or a launch argument name.
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PARAMETER_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_SUBSTITUTION_RE = re.compile(r"\$\{([^}]*)\}")
_ARGUMENT_KEYS = ("default", "description")

_T = TypeVar("_T")


class GraphError(ValueError):
    """A graph file, or the arguments given to it, cannot be used.

    The message is one line that names the file and the key at fault, so the CLI can print it
    as is.
    """

    def __init__(self, message: str, key: str = "", *, file: Path | None = None) -> None:
        self.message = message
        self.key = key
        self.file = file
        where = [str(file)] if file is not None else []
        super().__init__(": ".join([*where, *([key] if key else []), message]))


# --------------------------------------------------------------------------------------------
# Launch arguments and `${name}` substitution


@dataclass(frozen=True)
class LaunchArgument:
    """A launch argument a graph declares, substituted as `${name}` in its string values."""

    name: str
    # None: the argument is required and must be given as `name:=value`.
    default: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise GraphError(
                "launch argument names are letters, digits and '_', not starting with a digit",
                key=self.name,
            )


def parse_arguments(raw: object) -> tuple[LaunchArgument, ...]:
    """Return the launch arguments declared by a graph's `arguments:` mapping."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise GraphError(f"expected a mapping of name: default, got {kind_of(raw)}", "arguments")
    arguments = []
    for name, spec in raw.items():
        key = join_key("arguments", name)
        if isinstance(spec, dict):
            reject_unknown(spec, _ARGUMENT_KEYS, key)
            default = spec.get("default")
            description = get_field(spec, "description", str, key, "")
        else:
            default, description = spec, ""
        if default is not None and not isinstance(default, (str, int, float, bool)):
            raise GraphError(f"a default is a single value, got {kind_of(default)}", key=key)
        text = None if default is None else _yaml_text(default)
        arguments.append(build_spec(LaunchArgument, key, name=str(name), default=text,
                                    description=description))  # fmt: skip
    return tuple(arguments)


def argument_values(
    arguments: tuple[LaunchArgument, ...], overrides: Mapping[str, str]
) -> dict[str, str]:
    """Merge the declared defaults with `name:=value` overrides; every argument needs a value."""
    declared = {argument.name: argument for argument in arguments}
    for name in overrides:
        if name not in declared:
            raise GraphError(
                f"the graph declares no launch argument {name!r}; declared: "
                f"{', '.join(declared) or 'none'}" + did_you_mean(name, declared),
                key="arguments",
            )
    values = {}
    for name, argument in declared.items():
        value = overrides.get(name, argument.default)
        if value is None:
            raise GraphError(
                f"required launch argument; give it as {name}:=VALUE", key=f"arguments.{name}"
            )
        values[name] = str(value)
    return values


def substitute(value: Any, values: Mapping[str, str], key: str) -> Any:
    """Replace `${name}` in every string value.

    A string that is exactly `${name}` takes the YAML type of the argument's value, as launch_ros
    does for substituted parameters, so `respawn: ${sim}` gives a bool.
    """
    if isinstance(value, dict):
        return {k: substitute(v, values, join_key(key, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, values, f"{key}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise GraphError(
                f"${{{name}}} is not a declared launch argument (declare it under 'arguments:');"
                f" declared: {', '.join(values) or 'none'}" + did_you_mean(name, values),
                key=key,
            )
        return values[name]

    whole = _SUBSTITUTION_RE.fullmatch(value)
    if whole is None:
        return _SUBSTITUTION_RE.sub(replace, value)
    text = replace(whole)
    try:
        return yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        return text


def _yaml_text(value: str | int | float | bool) -> str:
    # YAML spelling, so that a default of `false` substitutes back as a bool.
    return value if isinstance(value, str) else yaml.safe_dump(value).splitlines()[0]


# --------------------------------------------------------------------------------------------
# Reading a file and building specs from it


@contextlib.contextmanager
def located(path: Path) -> Iterator[None]:
    """Put the file name in front of any GraphError raised inside."""
    try:
        yield
    except GraphError as error:
        if error.file is not None:
            raise
        raise GraphError(error.message, file=path, key=error.key) from None


def build_spec(factory: Callable[..., _T], key: str, **fields: Any) -> _T:
    """Construct a spec dataclass, putting `key` in front of its validation errors."""
    try:
        return factory(**fields)
    except GraphError as error:
        raise GraphError(error.message, key=join_key(key, error.key)) from None


def read_document(path: Path) -> dict[str, Any]:
    """Return a graph file's top-level mapping; bad YAML is reported with its line."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise GraphError(f"not valid YAML ({problem})", key=where) from None
    except OSError as exc:
        raise GraphError(f"cannot read: {exc.strerror}") from None
    if not isinstance(document, dict):
        raise GraphError("a graph file is a YAML mapping with a 'nodes' list")
    return document


# --------------------------------------------------------------------------------------------
# Inline ROS parameters


def check_parameters(parameters: Mapping[Any, Any], key: str) -> None:
    """Check an inline parameter mapping holds only values a ROS parameter can take."""
    for name, value in parameters.items():
        item_key = join_key(key, name)
        if not isinstance(name, str) or not _PARAMETER_NAME_RE.match(name):
            raise GraphError("not a parameter name; use letters, digits, '_' and '.'", item_key)
        if isinstance(value, dict):
            check_parameters(value, item_key)
            continue
        kinds = {_parameter_kind(v, item_key) for v in value} if isinstance(value, list) else ()
        # ROS parameter arrays hold one type; rcl rejects a mixed sequence at start-up.
        if len(kinds) > 1:
            raise GraphError(f"an array holds one type, got {', '.join(sorted(kinds))}", item_key)
        if not isinstance(value, list):
            _parameter_kind(value, item_key)


def _parameter_kind(value: object, key: str) -> str:
    for kind, types in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if isinstance(value, types):
            return kind
    raise GraphError(
        "a parameter is a bool, int, float, string or a list of one of them, "
        f"got {kind_of(value)}",
        key,
    )


# --------------------------------------------------------------------------------------------
# Typed access with errors that name the key


def kind_of(value: object) -> str:
    """Describe a YAML value for an error message: `a mapping`, `int 3`, `nothing (null)`."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return f"{type(value).__name__} {value!r}"


def join_key(key: str, name: object) -> str:
    """Return the dotted key of `name` inside `key` (`nodes[0]` + `env` -> `nodes[0].env`)."""
    return f"{key}.{name}" if key else str(name)


def did_you_mean(word: str, choices: Collection[str]) -> str:
    """Return `. Did you mean 'x'?` for the closest choice, or "" when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f". Did you mean {close[0]!r}?" if close else ""


def reject_unknown(raw: Mapping[Any, Any], allowed: tuple[str, ...], key: str) -> None:
    """Raise on the first key of `raw` not in `allowed`, suggesting the closest allowed one."""
    for name in raw:
        if name not in allowed:
            raise GraphError(
                f"unknown key; allowed: {', '.join(allowed)}" + did_you_mean(str(name), allowed),
                join_key(key, name),
            )


_TYPE_NAMES = {bool: "true or false", str: "a string", float: "a number", list: "a list",
               dict: "a mapping"}  # fmt: skip


def get_field(raw: Mapping[str, Any], name: str, kind: type, key: str, default: Any = ...) -> Any:
    """Return `raw[name]` checked to be a `kind`; absent: `default`, or an error if none given."""
    if name not in raw:
        if default is ...:
            raise GraphError(f"missing required key {name!r}", key)
        return default
    value = raw[name]
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:  # bool is an int in Python, but `respawn_delay_s: true` is a mistake
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if not ok:
        hint = " (quote it in YAML)" if kind is str and value is not None else ""
        raise GraphError(
            f"expected {_TYPE_NAMES[kind]}, got {kind_of(value)}{hint}", join_key(key, name)
        )
    return value


def get_strings(raw: Mapping[str, Any], name: str, kind: type, key: str) -> Any:
    """Return a list of strings or a string -> string mapping (absent: empty)."""
    values = get_field(raw, name, kind, key, kind())
    if isinstance(values, list):
        pairs = [(f"{key}.{name}[{index}]", value) for index, value in enumerate(values)]
    else:
        pairs = [(f"{key}.{name}.{item}", item) for item in values]  # keys first, then values
        pairs += [(f"{key}.{name}.{item}", value) for item, value in values.items()]
    for item_key, value in pairs:
        if not isinstance(value, str):
            raise GraphError(
                f"expected a string, got {kind_of(value)} (quote it in YAML)", item_key
            )
    return values
