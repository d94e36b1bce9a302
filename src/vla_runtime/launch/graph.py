"""Launch graphs: one YAML file per graph, read by `vla-runtime launch` and by `ros2 launch`.

A graph file in `config/graphs/<name>.yaml` says which node processes to start, with which
parameters and remappings, which ones respawn and which ones bring the whole graph down when they
exit. `load_graph` turns it into a `GraphSpec`, checking every key on the way so that a typo fails
at start-up with the file and key named. The same spec feeds the process supervisor
(`vla_runtime.launch.launcher`) and `launch/bringup.launch.py` (through
`launch_ros_node_kwargs`), so the two launchers cannot drift apart. The schema is documented at
the top of `config/graphs/demo_talker_listener.yaml` and in `docs/launch.md`; the key-by-key
checks, launch arguments and `${name}` substitution live in `vla_runtime.launch.schema`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import re
import sys
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vla_runtime.launch.schema import (
    NAME_RE,
    argument_values,
    build_spec,
    check_parameters,
    did_you_mean,
    get_field,
    get_strings,
    kind_of,
    located,
    parse_arguments,
    read_document,
    reject_unknown,
    substitute,
)

# Defined with the schema and still public here: `X as X` marks the re-export for mypy --strict.
from vla_runtime.launch.schema import GraphError as GraphError
from vla_runtime.launch.schema import LaunchArgument as LaunchArgument
from vla_runtime.resources import share_path

PACKAGE = "vla_runtime"
NODES_PACKAGE = f"{PACKAGE}.nodes"
DEFAULT_ROUTER_LISTEN = "tcp/127.0.0.1:7447"
# Executables outside the registry, for tests and one-off tools: a module run with `python -m`,
# or an absolute path to a program (a `.py` file is run with this interpreter).
PYTHON_MODULE_PREFIX = "python:"
# Shutdown escalation shared by both launchers: SIGINT, SIGTERM after 3 s, SIGKILL 1 s later,
# so a graph is down within the 5 s the operator is promised, the router included.
SIGINT_TIMEOUT_S = 3.0
SIGTERM_TIMEOUT_S = 1.0

_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_ENDPOINT_RE = re.compile(r"^[a-z0-9]+/\S+$")

_GRAPH_KEYS = ("name", "description", "arguments", "router", "nodes")
_NODE_KEYS = (
    "name", "executable", "namespace", "parameters", "remappings",
    "respawn", "respawn_delay_s", "critical", "env", "arguments",
)  # fmt: skip
_ROUTER_KEYS = ("enabled", "listen")

ParameterDict = Mapping[str, Any]
"""Inline ROS parameters: name -> bool, int, float, str, a list of one of those, or a nested
mapping (a parameter namespace, flattened to dotted names by ROS)."""


@dataclass(frozen=True)
class RouterSpec:
    """The Zenoh router the launcher starts before the nodes (zenoh backend only)."""

    enabled: bool = True
    # Zenoh endpoint `<protocol>/<address>`; loopback by default (DESIGN §2).
    listen: str = DEFAULT_ROUTER_LISTEN

    def __post_init__(self) -> None:
        if not _ENDPOINT_RE.match(self.listen):
            raise GraphError(
                f"{self.listen!r} is not a Zenoh endpoint; write it as <protocol>/<address>, "
                f"e.g. {DEFAULT_ROUTER_LISTEN}",
                key="listen",
            )

    @property
    def connect_endpoint(self) -> str:
        """The endpoint a local node connects to: a wildcard listen address means loopback."""
        protocol, _, address = self.listen.partition("/")
        for wildcard, loopback in (("0.0.0.0:", "127.0.0.1:"), ("[::]:", "[::1]:")):
            if address.startswith(wildcard):
                address = loopback + address[len(wildcard) :]
        return f"{protocol}/{address}"


@dataclass(frozen=True)
class NodeSpec:
    """One node process of a graph."""

    name: str
    # A registered executable (`talker_node`), `python:<module>` or an absolute path.
    executable: str
    namespace: str = ""
    # Applied in order, later wins (launch_ros semantics): parameter files, inline mappings.
    parameters: tuple[Path | ParameterDict, ...] = ()
    remappings: tuple[tuple[str, str], ...] = ()
    respawn: bool = False
    # A delay keeps a node that dies on start-up from spinning the CPU in a restart loop.
    respawn_delay_s: float = 1.0
    critical: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    # Extra command-line arguments, placed before `--ros-args` as launch_ros does.
    arguments: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise GraphError(
                f"{self.name!r} is not a ROS node name; use letters, digits and '_', "
                "not starting with a digit",
                key="name",
            )
        if self.namespace:
            tokens = self.namespace.strip("/").split("/")
            if not self.namespace.startswith("/") or not all(NAME_RE.match(t) for t in tokens):
                raise GraphError(
                    f"{self.namespace!r} is not a namespace; write it as /name or /a/b",
                    key="namespace",
                )
        if self.respawn_delay_s < 0:
            raise GraphError(f"must be >= 0, got {self.respawn_delay_s}", key="respawn_delay_s")
        if self.respawn and self.critical:
            # ros2 launch would shut down on the first exit through the critical handler, so a
            # critical node can never be respawned; refuse the ambiguity rather than pick one.
            raise GraphError(
                "a node cannot be both critical and respawn; a critical node's exit stops the "
                "graph, so set one of them to false",
                key="critical",
            )
        for source, target in self.remappings:
            if not source or not target or ":=" in source + target:
                raise GraphError(
                    f"{source!r} -> {target!r} is not a remapping; both names must be non-empty",
                    key="remappings",
                )
        _check_executable_form(self.executable)

    @property
    def fully_qualified_name(self) -> str:
        """The node's name with its namespace, e.g. `/robot/driver`."""
        return f"{self.namespace.rstrip('/')}/{self.name}"


@dataclass(frozen=True)
class GraphSpec:
    """A launch graph: the nodes to run and the router they meet at."""

    name: str
    description: str = ""
    nodes: tuple[NodeSpec, ...] = ()
    router: RouterSpec = field(default_factory=RouterSpec)
    arguments: tuple[LaunchArgument, ...] = ()
    # The values the `${...}` substitutions used: declared defaults merged with overrides.
    argument_values: Mapping[str, str] = field(default_factory=dict)
    source: Path | None = None

    def __post_init__(self) -> None:
        if not self.nodes:
            raise GraphError("a graph needs at least one node", key="nodes")
        seen: set[str] = set()
        for index, node in enumerate(self.nodes):
            if node.name in seen:
                raise GraphError(
                    f"node name {node.name!r} is used twice; node names must be unique",
                    key=f"nodes[{index}].name",
                )
            seen.add(node.name)


# --------------------------------------------------------------------------------------------
# Locating graphs and executables


def config_dir() -> Path:
    """Return the package's `config/` directory (see `vla_runtime.resources.share_path`).

    Raises:
        FileNotFoundError: if none exists.
    """
    return share_path("config")


def available_graphs() -> list[str]:
    """Return the names of the graphs in `config/graphs/`, sorted."""
    graphs = config_dir() / "graphs"
    return sorted(p.stem for p in graphs.glob("*.yaml")) if graphs.is_dir() else []


def resolve_graph_path(name_or_path: str | Path) -> Path:
    """Return the file of a graph given by name (`config/graphs/<name>.yaml`) or by path.

    Raises:
        GraphError: no such graph; the message lists the available ones.
    """
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or os.sep in text or text.endswith((".yaml", ".yml")):
        path = Path(text).expanduser()
        if not path.is_file():
            raise GraphError("graph file not found", file=path)
        return path.resolve()
    path = config_dir() / "graphs" / f"{text}.yaml"
    if path.is_file():
        return path
    known = available_graphs()
    raise GraphError(
        f"no graph named {text!r} in {path.parent}; available: {', '.join(known) or 'none'}"
        + did_you_mean(text, known)
    )


def node_executables() -> dict[str, str]:
    """Return the node executables this package provides: name -> `module:function`.

    The registry is the `console_scripts` entry points of the installed distribution that point
    into `vla_runtime.nodes`. A source checkout on PYTHONPATH (not pip-installed, or installed
    before a node was added) also registers every public module of `vla_runtime/nodes/` as
    `<module>:main`, following the one-file-per-executable rule (DESIGN §9).
    """
    registry: dict[str, str] = {}
    spec = importlib.util.find_spec(NODES_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        for module in pkgutil.iter_modules(list(spec.submodule_search_locations)):
            if not module.name.startswith("_"):
                registry[module.name] = f"{NODES_PACKAGE}.{module.name}:main"
    try:
        entry_points = list(importlib.metadata.distribution(PACKAGE).entry_points)
    except importlib.metadata.PackageNotFoundError:
        entry_points = []
    for entry in entry_points:
        if entry.group == "console_scripts" and entry.value.startswith(f"{NODES_PACKAGE}."):
            registry[entry.name] = entry.value
    return dict(sorted(registry.items()))


def _check_executable_form(executable: str) -> None:
    if executable.startswith(PYTHON_MODULE_PREFIX):
        if not _MODULE_RE.match(executable[len(PYTHON_MODULE_PREFIX) :]):
            raise GraphError(
                f"{executable!r}: write python:<dotted.module.name>", key="executable"
            )
    elif "/" in executable and not os.path.isabs(executable):
        raise GraphError(
            f"{executable!r}: a program path must be absolute (use ${{...}} arguments to "
            "build one)",
            key="executable",
        )


def _check_executable_known(executable: str, known: Collection[str], key: str) -> None:
    if executable.startswith(PYTHON_MODULE_PREFIX):
        return
    if os.path.isabs(executable):
        if not os.path.isfile(executable):
            raise GraphError(f"program {executable!r} does not exist", key)
        return
    if executable not in known:
        raise GraphError(
            f"unknown executable {executable!r}; known: {', '.join(sorted(known)) or 'none'}, "
            f"or {PYTHON_MODULE_PREFIX}<module>, or an absolute path"
            + did_you_mean(executable, known),
            key,
        )


# --------------------------------------------------------------------------------------------
# Loading


def graph_arguments(name_or_path: str | Path) -> tuple[LaunchArgument, ...]:
    """Return the launch arguments a graph declares, without building its nodes."""
    path = resolve_graph_path(name_or_path)
    with located(path):
        return parse_arguments(read_document(path).get("arguments"))


def load_graph(
    name_or_path: str | Path,
    overrides: Mapping[str, str] | None = None,
    *,
    known_executables: Collection[str] | None = None,
) -> GraphSpec:
    """Read, substitute and validate a graph file.

    Args:
        name_or_path: A graph name (`config/graphs/<name>.yaml`) or a path to a graph file.
        overrides: Launch argument values (`embodiment:=so100` gives {"embodiment": "so100"});
            they replace the defaults under `arguments:` before `${...}` substitution.
        known_executables: The executable names to accept; by default `node_executables()`.

    Raises:
        GraphError: a one-line message naming the file and key at fault.
    """
    path = resolve_graph_path(name_or_path)
    known = node_executables() if known_executables is None else known_executables
    with located(path):
        document = read_document(path)
        arguments = parse_arguments(document.get("arguments"))
        values = argument_values(arguments, overrides or {})
        body = substitute({k: v for k, v in document.items() if k != "arguments"}, values, "")
        reject_unknown(body, _GRAPH_KEYS, "")
        nodes = get_field(body, "nodes", list, "")
        router = get_field(body, "router", dict, "", default={})
        reject_unknown(router, _ROUTER_KEYS, "router")
        return GraphSpec(
            name=get_field(body, "name", str, "", default=path.stem),
            description=get_field(body, "description", str, "", default=""),
            nodes=tuple(
                _parse_node(raw, f"nodes[{i}]", path, known) for i, raw in enumerate(nodes)
            ),
            router=build_spec(
                RouterSpec,
                "router",
                enabled=get_field(router, "enabled", bool, "router", default=True),
                listen=get_field(router, "listen", str, "router", default=DEFAULT_ROUTER_LISTEN),
            ),
            arguments=arguments,
            argument_values=values,
            source=path,
        )


def _parse_node(raw: object, key: str, graph_file: Path, known: Collection[str]) -> NodeSpec:
    if not isinstance(raw, dict):
        raise GraphError(f"a node is a mapping with name and executable, got {kind_of(raw)}", key)
    reject_unknown(raw, _NODE_KEYS, key)
    node = build_spec(
        NodeSpec,
        key,
        name=get_field(raw, "name", str, key),
        executable=get_field(raw, "executable", str, key),
        namespace=get_field(raw, "namespace", str, key, ""),
        parameters=_parse_parameters(raw.get("parameters"), f"{key}.parameters", graph_file),
        remappings=tuple(get_strings(raw, "remappings", dict, key).items()),
        respawn=get_field(raw, "respawn", bool, key, False),
        respawn_delay_s=float(get_field(raw, "respawn_delay_s", float, key, 1.0)),
        critical=get_field(raw, "critical", bool, key, False),
        env=get_strings(raw, "env", dict, key),
        arguments=tuple(get_strings(raw, "arguments", list, key)),
    )
    _check_executable_known(node.executable, known, f"{key}.executable")
    return node


def _parse_parameters(raw: object, key: str, graph_file: Path) -> tuple[Path | ParameterDict, ...]:
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, dict) else raw  # one mapping: shorthand for a list of one
    if not isinstance(items, list):
        raise GraphError(
            f"expected a list of parameter files and mappings, got {kind_of(raw)}", key
        )
    sources: list[Path | ParameterDict] = []
    for index, item in enumerate(items):
        item_key = f"{key}[{index}]"
        if isinstance(item, str):
            sources.append(_resolve_parameter_file(item, item_key, graph_file))
        elif isinstance(item, dict):
            check_parameters(item, item_key)
            sources.append(item)
        else:
            raise GraphError(f"expected a file path or a mapping, got {kind_of(item)}", item_key)
    return tuple(sources)


def _resolve_parameter_file(text: str, key: str, graph_file: Path) -> Path:
    path = Path(text).expanduser()
    # The package's config dir first (the documented rule), then beside a graph given by path.
    candidates = [path] if path.is_absolute() else [config_dir() / path, graph_file.parent / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    looked = " or ".join(str(c) for c in dict.fromkeys(candidates))
    raise GraphError(f"parameter file {text!r} not found (looked for {looked})", key)


# --------------------------------------------------------------------------------------------
# What the launchers pass to a node


def ros_arguments(node: NodeSpec, params_dir: Path | None = None) -> list[str]:
    """Return the `--ros-args ...` part of a node's command line, as launch_ros builds it.

    Order: `-r __node:=`, `-r __ns:=`, one `--params-file` per parameter source in order
    (inline mappings are written to a file first, like launch_ros does), then `-r from:=to`.

    Args:
        node: The node.
        params_dir: Where to write inline parameter files; by default a per-user temporary
            directory, with content-addressed file names so repeated calls reuse one file.
    """
    args = ["--ros-args", "-r", f"__node:={node.name}"]
    if node.namespace:
        args += ["-r", f"__ns:={node.namespace}"]
    for parameters in node.parameters:
        if isinstance(parameters, Path):
            args += ["--params-file", str(parameters)]
        else:
            args += ["--params-file", str(write_parameter_file(node, parameters, params_dir))]
    for source, target in node.remappings:
        args += ["-r", f"{source}:={target}"]
    return args


def write_parameter_file(
    node: NodeSpec, parameters: ParameterDict, params_dir: Path | None = None
) -> Path:
    """Write inline parameters as a ROS 2 parameter file and return its path.

    The top-level key is the one launch_ros uses for dict parameters: the node's full name when
    both name and namespace are given, else the `/**` wildcard. rcl applies files in order
    (later wins) but a full name beats a wildcard, so we keep launch_ros's key to keep its rule.
    """
    key = node.fully_qualified_name if node.namespace else "/**"
    text = yaml.safe_dump(
        {key: {"ros__parameters": _plain(parameters)}}, sort_keys=False, default_flow_style=False
    )
    if params_dir is None:
        user = getattr(os, "getuid", lambda: "user")()
        params_dir = Path(tempfile.gettempdir()) / f"{PACKAGE}-params-{user}"
    params_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = params_dir / f"{node.name}-{digest}.yaml"
    if not path.is_file():
        # Write then rename: two launchers racing on the same file never see half of it.
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def launch_ros_node_kwargs(
    node: NodeSpec, *, python: str = sys.executable, package: str = PACKAGE
) -> dict[str, Any]:
    """Return the keyword arguments of `launch_ros.actions.Node` for a node.

    Used by `launch/bringup.launch.py`; kept here, free of launch imports, so it is testable
    without ROS. `python:` and path executables run through `python` the way launch_ros runs any
    program (`Node(executable=..., arguments=...)` without a package).
    """
    kwargs: dict[str, Any] = {"name": node.name, "output": "screen"}
    arguments = list(node.arguments)
    if node.executable.startswith(PYTHON_MODULE_PREFIX):
        module = node.executable[len(PYTHON_MODULE_PREFIX) :]
        kwargs["executable"] = python
        arguments = ["-m", module, *arguments]
    elif os.path.isabs(node.executable):
        if node.executable.endswith(".py"):
            kwargs["executable"] = python
            arguments = [node.executable, *arguments]
        else:
            kwargs["executable"] = node.executable
    else:
        kwargs["package"] = package
        kwargs["executable"] = node.executable
    if node.namespace:
        kwargs["namespace"] = node.namespace
    if node.parameters:
        kwargs["parameters"] = [
            str(p) if isinstance(p, Path) else _plain(p) for p in node.parameters
        ]
    if node.remappings:
        kwargs["remappings"] = list(node.remappings)
    if arguments:
        kwargs["arguments"] = arguments
    if node.respawn:
        kwargs["respawn"] = True
        kwargs["respawn_delay"] = node.respawn_delay_s
    if node.env:
        kwargs["additional_env"] = dict(node.env)
    # ExecuteProcess takes these as substitutions (strings): the same escalation as ours.
    kwargs["sigterm_timeout"] = f"{SIGINT_TIMEOUT_S:g}"
    kwargs["sigkill_timeout"] = f"{SIGTERM_TIMEOUT_S:g}"
    return kwargs


# --------------------------------------------------------------------------------------------
# Which graph `ros2 launch vla_runtime bringup.launch.py` runs

BRINGUP_DEFAULT_GRAPH = "demo_talker_listener"
# `<embodiment>_sim.yaml` is the embodiment's graph with the simulated world in place of the arm.
SIM_SUFFIX = "_sim"
# A graph argument taking a parameter file by name, and the config/ folder the name is in.
POLICY_ARGUMENT, POLICY_FOLDER = "policy", "policies"
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


def bringup_selection(configurations: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """Return the graph bringup.launch.py runs and the arguments it passes to it.

    `graph:=NAME|PATH` names the graph. Without it (or with the default demo graph),
    `embodiment:=NAME` picks `config/graphs/<embodiment>.yaml`, or `<embodiment>_sim.yaml` with
    `sim:=true`. Of the other launch configurations only those the graph declares are passed
    (ros2 launch hands over every `NAME:=VALUE`, declared or not); a `policy:=` path becomes the
    name the graphs' `policies/${policy}.yaml` expects (`policy_argument`).

    Raises:
        GraphError: `sim` is not a boolean, `sim:=true` without an embodiment, or no graph of
            that embodiment (the message lists the available ones).
    """
    sim_text = str(configurations.get("sim", "")).strip().lower()
    if sim_text not in _TRUE + _FALSE:
        raise GraphError(f"sim:={configurations['sim']}: expected true or false")
    sim = sim_text in _TRUE
    name = str(configurations.get("graph") or BRINGUP_DEFAULT_GRAPH)
    embodiment = str(configurations.get("embodiment", ""))
    if embodiment and name == BRINGUP_DEFAULT_GRAPH:
        name = embodiment + (SIM_SUFFIX if sim else "")
        if name not in available_graphs():
            graphs = [g for g in available_graphs() if g != BRINGUP_DEFAULT_GRAPH]
            raise GraphError(
                f"no graph {name!r} for embodiment:={embodiment}"
                f"{' sim:=true' if sim else ''}; available: {', '.join(graphs) or 'none'}"
                + did_you_mean(name, graphs)
            )
    elif sim and name == BRINGUP_DEFAULT_GRAPH:
        raise GraphError("sim:=true needs embodiment:=NAME (so100, yam_bimanual, franka)")
    declared = {argument.name for argument in graph_arguments(name)}
    overrides = {k: str(v) for k, v in configurations.items() if k in declared}
    if POLICY_ARGUMENT in overrides:
        overrides[POLICY_ARGUMENT] = policy_argument(overrides[POLICY_ARGUMENT])
    return name, overrides


def policy_argument(value: str) -> str:
    """Return the `policy:=` graph argument for a policy given by name or by file path.

    The graphs read `policies/${policy}.yaml` from the config directory, so a name
    (`tiny_so100`) passes as is and a path to a `.yaml` file anywhere becomes the path to it
    from `config/policies/`, without the suffix.

    Raises:
        GraphError: a path that is not an existing .yaml file.
    """
    if os.sep not in value and not value.endswith((".yaml", ".yml")):
        return value
    path = Path(value).expanduser().resolve()
    if path.suffix != ".yaml" or not path.is_file():
        raise GraphError(f"policy:={value}: not a .yaml policy parameter file")
    return os.path.relpath(path.with_suffix(""), config_dir() / POLICY_FOLDER)
