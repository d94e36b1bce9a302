"""Launch graph files: loading, validation messages, substitution and what the launchers pass."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from vla_runtime.launch.graph import (
    GraphError,
    NodeSpec,
    RouterSpec,
    available_graphs,
    config_dir,
    launch_ros_node_kwargs,
    load_graph,
    node_executables,
    ros_arguments,
)

REPO = Path(__file__).resolve().parents[2]
DEMO_EXECUTABLES = {"talker_node", "listener_node"}
KNOWN = {"talker_node", "listener_node", "policy_node"}


def write_graph(tmp_path: Path, text: str, name: str = "graph.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(path: Path | str, overrides: dict[str, str] | None = None) -> str:
    with pytest.raises(GraphError) as caught:
        load_graph(path, overrides, known_executables=KNOWN)
    message = str(caught.value)
    assert "\n" not in message, "errors must be one line"
    return message


# ------------------------------------------------------------------------------- loading


def test_config_dir_is_the_checkout_config_when_running_from_source() -> None:
    assert config_dir() == REPO / "config"
    assert "demo_talker_listener" in available_graphs()


def test_demo_graph_loads_by_name() -> None:
    graph = load_graph("demo_talker_listener", known_executables=DEMO_EXECUTABLES)

    assert graph.name == "demo_talker_listener"
    assert [node.name for node in graph.nodes] == ["talker", "listener"]
    talker, listener = graph.nodes
    assert talker.executable == "talker_node"
    assert talker.parameters == ({"rate_hz": 2.0, "message": "hello from vla_runtime"},)
    assert talker.critical and not talker.respawn
    assert listener.executable == "listener_node"
    assert listener.respawn and not listener.critical
    assert graph.router == RouterSpec(enabled=True, listen="tcp/127.0.0.1:7447")
    assert graph.source == REPO / "config" / "graphs" / "demo_talker_listener.yaml"


def test_a_graph_loads_the_same_by_path_and_by_name() -> None:
    by_path = load_graph(
        str(REPO / "config/graphs/demo_talker_listener.yaml"), known_executables=DEMO_EXECUTABLES
    )
    assert by_path == load_graph("demo_talker_listener", known_executables=DEMO_EXECUTABLES)


@pytest.mark.skipif(
    importlib.util.find_spec("vla_runtime.nodes") is None,
    reason="vla_runtime.nodes does not exist yet, so no executable is registered",
)
@pytest.mark.parametrize("name", available_graphs())
def test_every_shipped_graph_loads_with_the_real_executable_registry(name: str) -> None:
    graph = load_graph(name)
    registry = node_executables()
    for node in graph.nodes:
        module = node.executable.removeprefix("python:")  # the *_sim graphs' world
        assert node.executable in registry or (
            module != node.executable and importlib.util.find_spec(module) is not None
        ), f"{name}: {node.name} runs {node.executable}"


def test_defaults_fill_optional_keys(tmp_path: Path) -> None:
    path = write_graph(
        tmp_path,
        """
        nodes:
          - name: policy
            executable: policy_node
        """,
    )
    graph = load_graph(path, known_executables=KNOWN)

    assert graph.name == "graph"  # the file name
    assert graph.nodes == (NodeSpec(name="policy", executable="policy_node"),)
    node = graph.nodes[0]
    assert (node.respawn, node.critical, node.respawn_delay_s) == (False, False, 1.0)


def test_a_full_node_entry_is_read_in_order(tmp_path: Path) -> None:
    params = write_graph(tmp_path, "/**:\n  ros__parameters:\n    a: 1\n", "policy.yaml")
    path = write_graph(
        tmp_path,
        f"""
        name: full
        description: every key
        router: {{enabled: false, listen: tcp/127.0.0.1:7500}}
        nodes:
          - name: policy
            executable: policy_node
            namespace: /robot
            parameters:
              - {params}
              - {{rate_hz: 5, camera: {{names: [top, wrist]}}}}
            remappings: {{/image: /cameras/top/image_raw, out: /policy/action_chunk}}
            respawn: true
            respawn_delay_s: 0.5
            env: {{OMP_NUM_THREADS: "2"}}
            arguments: [--verbose]
        """,
    )
    graph = load_graph(path, known_executables=KNOWN)

    node = graph.nodes[0]
    assert node.namespace == "/robot"
    assert node.fully_qualified_name == "/robot/policy"
    assert node.parameters == (params, {"rate_hz": 5, "camera": {"names": ["top", "wrist"]}})
    assert node.remappings == (
        ("/image", "/cameras/top/image_raw"),
        ("out", "/policy/action_chunk"),
    )
    assert node.respawn_delay_s == 0.5
    assert node.env == {"OMP_NUM_THREADS": "2"}
    assert node.arguments == ("--verbose",)
    assert graph.router == RouterSpec(enabled=False, listen="tcp/127.0.0.1:7500")
    assert graph.router.connect_endpoint == "tcp/127.0.0.1:7500"


def test_a_relative_parameter_file_resolves_against_the_config_dir(tmp_path: Path) -> None:
    # The demo graph file itself is a file under config/, so it serves as a relative path here.
    path = write_graph(
        tmp_path,
        """
        nodes:
          - {name: a, executable: policy_node, parameters: [graphs/demo_talker_listener.yaml]}
        """,
    )
    node = load_graph(path, known_executables=KNOWN).nodes[0]
    assert node.parameters == (REPO / "config/graphs/demo_talker_listener.yaml",)


# ------------------------------------------------------------------------------- errors


def test_an_unknown_graph_name_lists_the_graphs_and_suggests_one() -> None:
    message = load_error("demo_talker_listner")
    assert "no graph named 'demo_talker_listner'" in message
    assert "available: " in message and "demo_talker_listener" in message
    assert "Did you mean 'demo_talker_listener'?" in message


def test_a_missing_graph_file_is_named(tmp_path: Path) -> None:
    message = load_error(tmp_path / "nope.yaml")
    assert message == f"{tmp_path / 'nope.yaml'}: graph file not found"


def test_an_unknown_key_lists_the_allowed_keys_and_suggests_one(tmp_path: Path) -> None:
    path = write_graph(
        tmp_path,
        """
        nodes:
          - name: a
            executable: policy_node
            respawn_dely_s: 2.0
        """,
    )
    message = load_error(path)
    assert message.startswith(f"{path}: nodes[0].respawn_dely_s: unknown key; allowed: name, ")
    assert "respawn_delay_s" in message and "Did you mean 'respawn_delay_s'?" in message


def test_an_unknown_top_level_key_is_rejected(tmp_path: Path) -> None:
    path = write_graph(tmp_path, "node: []\n")
    message = load_error(path)
    assert f"{path}: node: unknown key; allowed: name, description, arguments, router, nodes" in (
        message
    )


@pytest.mark.parametrize(
    ("entry", "key", "expected"),
    [
        ("respawn: 'yes please'", "nodes[0].respawn", "expected true or false, got str"),
        ("respawn_delay_s: soon", "nodes[0].respawn_delay_s", "expected a number, got str"),
        ("respawn_delay_s: -1", "nodes[0].respawn_delay_s", "must be >= 0"),
        ("critical: 1", "nodes[0].critical", "expected true or false, got int 1"),
        ("namespace: robot", "nodes[0].namespace", "write it as /name"),
        ("env: {THREADS: 2}", "nodes[0].env.THREADS", "expected a string, got int 2 (quote it"),
        ("remappings: {1: b}", "nodes[0].remappings.1", "expected a string, got int 1"),
        ("arguments: --fast", "nodes[0].arguments", "expected a list, got str"),
        ("remappings: [a, b]", "nodes[0].remappings", "expected a mapping, got a list"),
        ("parameters: [{rate: [1, 2.5]}]", "nodes[0].parameters[0].rate", "one type"),
        ("parameters: [{rate: null}]", "nodes[0].parameters[0].rate", "got nothing (null)"),
        ("parameters: [7]", "nodes[0].parameters[0]", "expected a file path or a mapping"),
        ("parameters: [missing.yaml]", "nodes[0].parameters[0]", "'missing.yaml' not found"),
    ],
)
def test_a_bad_value_names_file_key_and_problem(
    tmp_path: Path, entry: str, key: str, expected: str
) -> None:
    text = f"nodes:\n  - name: a\n    executable: policy_node\n    {entry}\n"
    path = write_graph(tmp_path, text)
    message = load_error(path)
    assert message.startswith(f"{path}: {key}: "), message
    assert expected in message


def test_a_node_without_executable_is_rejected(tmp_path: Path) -> None:
    path = write_graph(tmp_path, "nodes:\n  - name: a\n")
    assert load_error(path) == f"{path}: nodes[0]: missing required key 'executable'"


def test_node_names_must_be_unique(tmp_path: Path) -> None:
    path = write_graph(
        tmp_path,
        """
        nodes:
          - {name: a, executable: policy_node}
          - {name: a, executable: talker_node}
        """,
    )
    message = load_error(path)
    assert message.startswith(f"{path}: nodes[1].name: node name 'a' is used twice")


def test_an_unknown_executable_lists_the_known_ones(tmp_path: Path) -> None:
    path = write_graph(tmp_path, "nodes:\n  - {name: a, executable: polcy_node}\n")
    message = load_error(path)
    assert message.startswith(f"{path}: nodes[0].executable: unknown executable 'polcy_node'")
    assert "known: listener_node, policy_node, talker_node" in message
    assert "Did you mean 'policy_node'?" in message


def test_critical_and_respawn_are_exclusive(tmp_path: Path) -> None:
    path = write_graph(
        tmp_path, "nodes:\n  - {name: a, executable: policy_node, respawn: true, critical: true}\n"
    )
    assert "cannot be both critical and respawn" in load_error(path)


def test_a_relative_program_path_is_rejected(tmp_path: Path) -> None:
    path = write_graph(tmp_path, "nodes:\n  - {name: a, executable: bin/run}\n")
    assert "must be absolute" in load_error(path)


def test_malformed_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    path = write_graph(tmp_path, "nodes:\n  - name: a\n   executable: x\n")
    message = load_error(path)
    assert message.startswith(f"{path}: line 3: not valid YAML")


def test_an_empty_graph_is_rejected(tmp_path: Path) -> None:
    path = write_graph(tmp_path, "nodes: []\n")
    assert load_error(path) == f"{path}: nodes: a graph needs at least one node"


def test_a_bad_router_endpoint_is_named(tmp_path: Path) -> None:
    path = write_graph(
        tmp_path, "router: {listen: '127.0.0.1:7447'}\nnodes: [{name: a, executable: policy_node}]"
    )
    assert load_error(path).startswith(f"{path}: router.listen: '127.0.0.1:7447' is not a Zenoh")


# ---------------------------------------------------------------------------- substitution

SUBSTITUTED = """
arguments:
  embodiment: {default: so100, description: which arm}
  sim: false
  camera: {description: "required, no default"}
nodes:
  - name: driver
    executable: policy_node
    respawn: ${sim}
    parameters:
      - {embodiment: "${embodiment}", calibration: "calib/${embodiment}.json", sim: "${sim}"}
    env: {CAMERA: "${camera}"}
"""


def test_arguments_substitute_defaults_and_overrides(tmp_path: Path) -> None:
    path = write_graph(tmp_path, SUBSTITUTED)

    graph = load_graph(path, {"camera": "top"}, known_executables=KNOWN)
    driver = graph.nodes[0]
    assert driver.parameters == (
        {"embodiment": "so100", "calibration": "calib/so100.json", "sim": False},
    )
    assert driver.respawn is False
    assert driver.env == {"CAMERA": "top"}
    assert graph.argument_values == {"embodiment": "so100", "sim": "false", "camera": "top"}
    assert [a.description for a in graph.arguments] == ["which arm", "", "required, no default"]

    overrides = {"embodiment": "yam_bimanual", "sim": "true", "camera": "top"}
    graph = load_graph(path, overrides, known_executables=KNOWN)
    # A value that is exactly ${name} takes the argument's YAML type, as in launch_ros.
    assert graph.nodes[0].parameters[0] == {
        "embodiment": "yam_bimanual",
        "calibration": "calib/yam_bimanual.json",
        "sim": True,
    }
    assert graph.nodes[0].respawn is True


def test_a_required_argument_must_be_given(tmp_path: Path) -> None:
    path = write_graph(tmp_path, SUBSTITUTED)
    message = load_error(path)
    assert message == (
        f"{path}: arguments.camera: required launch argument; give it as camera:=VALUE"
    )


def test_an_undeclared_override_is_rejected_with_a_suggestion(tmp_path: Path) -> None:
    path = write_graph(tmp_path, SUBSTITUTED)
    message = load_error(path, {"camera": "top", "embodyment": "franka"})
    assert "declares no launch argument 'embodyment'" in message
    assert "declared: embodiment, sim, camera" in message
    assert "Did you mean 'embodiment'?" in message


def test_an_undeclared_substitution_is_rejected_with_its_key(tmp_path: Path) -> None:
    path = write_graph(
        tmp_path,
        """
        arguments: {embodiment: so100}
        nodes:
          - {name: a, executable: policy_node, parameters: [{robot: "${embodyment}"}]}
        """,
    )
    message = load_error(path)
    assert message.startswith(f"{path}: nodes[0].parameters[0].robot: ${{embodyment}} is not a")
    assert "Did you mean 'embodiment'?" in message


# ------------------------------------------------------------------ what the launchers pass


def test_ros_arguments_follow_launch_ros_order(tmp_path: Path) -> None:
    params_file = tmp_path / "extra.yaml"
    params_file.write_text("/**:\n  ros__parameters: {a: 1}\n", encoding="utf-8")
    node = NodeSpec(
        name="policy",
        executable="policy_node",
        namespace="/robot",
        parameters=(params_file, {"rate_hz": 5.0, "camera": {"names": ["top"]}}),
        remappings=(("/image", "/cameras/top/image_raw"),),
    )

    args = ros_arguments(node, tmp_path / "params")

    inline = args[8]
    assert args == [
        "--ros-args",
        "-r", "__node:=policy",
        "-r", "__ns:=/robot",
        "--params-file", str(params_file),
        "--params-file", inline,
        "-r", "/image:=/cameras/top/image_raw",
    ]  # fmt: skip
    # launch_ros keys dict parameters by the full node name once a namespace is given.
    assert yaml.safe_load(Path(inline).read_text(encoding="utf-8")) == {
        "/robot/policy": {"ros__parameters": {"rate_hz": 5.0, "camera": {"names": ["top"]}}}
    }
    assert Path(inline).parent == tmp_path / "params"
    assert ros_arguments(node, tmp_path / "params") == args  # same content, same file


def test_inline_parameters_without_namespace_use_the_wildcard(tmp_path: Path) -> None:
    node = NodeSpec(name="talker", executable="talker_node", parameters=({"rate_hz": 2.0},))
    args = ros_arguments(node, tmp_path)
    assert args[:4] == ["--ros-args", "-r", "__node:=talker", "--params-file"]
    assert yaml.safe_load(Path(args[4]).read_text(encoding="utf-8")) == {
        "/**": {"ros__parameters": {"rate_hz": 2.0}}
    }


def test_ros_arguments_of_a_bare_node() -> None:
    assert ros_arguments(NodeSpec(name="listener", executable="listener_node")) == [
        "--ros-args",
        "-r",
        "__node:=listener",
    ]


def test_launch_ros_kwargs_of_a_registered_executable(tmp_path: Path) -> None:
    params_file = tmp_path / "p.yaml"
    node = NodeSpec(
        name="policy",
        executable="policy_node",
        namespace="/robot",
        parameters=(params_file, {"rate_hz": 5.0}),
        remappings=(("in", "out"),),
        respawn=True,
        respawn_delay_s=2.0,
        env={"A": "1"},
        arguments=("--verbose",),
    )
    assert launch_ros_node_kwargs(node) == {
        "package": "vla_runtime",
        "executable": "policy_node",
        "name": "policy",
        "namespace": "/robot",
        "parameters": [str(params_file), {"rate_hz": 5.0}],
        "remappings": [("in", "out")],
        "arguments": ["--verbose"],
        "respawn": True,
        "respawn_delay": 2.0,
        "additional_env": {"A": "1"},
        "output": "screen",
        "sigterm_timeout": "3",
        "sigkill_timeout": "1",
    }


def test_launch_ros_kwargs_of_python_and_path_executables() -> None:
    module = launch_ros_node_kwargs(
        NodeSpec(name="a", executable="python:pkg.tool", arguments=("x",)), python="/py"
    )
    assert (module["executable"], module["arguments"]) == ("/py", ["-m", "pkg.tool", "x"])
    assert "package" not in module
    script = launch_ros_node_kwargs(NodeSpec(name="b", executable="/opt/s.py"), python="/py")
    assert (script["executable"], script["arguments"]) == ("/py", ["/opt/s.py"])
    program = launch_ros_node_kwargs(NodeSpec(name="c", executable="/opt/run"))
    assert program["executable"] == "/opt/run" and "arguments" not in program
    assert "respawn" not in program and "namespace" not in program


# ------------------------------------------------------------------------- bringup.launch.py


class _Action:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs


@pytest.fixture
def bringup(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The launch file, with stand-ins for the launch and launch_ros classes it builds."""
    classes = {
        "launch": ["LaunchDescription"],
        "launch.actions": [
            "DeclareLaunchArgument",
            "LogInfo",
            "OpaqueFunction",
            "RegisterEventHandler",
            "Shutdown",
        ],
        "launch.event_handlers": ["OnProcessExit"],
        "launch_ros": [],
        "launch_ros.actions": ["Node"],
    }
    for module_name, names in classes.items():
        module = types.ModuleType(module_name)
        for name in names:
            setattr(module, name, type(name, (_Action,), {}))
        monkeypatch.setitem(sys.modules, module_name, module)
    launch_file = REPO / "launch" / "bringup.launch.py"
    spec = importlib.util.spec_from_file_location("bringup_launch", launch_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bringup_builds_nodes_and_critical_shutdown_from_the_graph(
    bringup: types.ModuleType, tmp_path: Path
) -> None:
    path = write_graph(
        tmp_path,
        """
        arguments: {embodiment: so100}
        nodes:
          - {name: driver, executable: python:drv, critical: true,
             parameters: [{embodiment: "${embodiment}"}]}
          - {name: camera, executable: python:cam, respawn: true}
        """,
    )
    description = bringup.generate_launch_description()
    declared, opaque = description.args[0]
    assert declared.args == ("graph",)
    assert declared.kwargs["default_value"] == "demo_talker_listener"

    context = types.SimpleNamespace(
        launch_configurations={"graph": str(path), "embodiment": "franka", "other": "ignored"}
    )
    actions = opaque.kwargs["function"](context)

    driver, handler, camera = actions
    assert type(driver).__name__ == "Node"
    assert driver.kwargs["name"] == "driver"
    assert driver.kwargs["parameters"] == [{"embodiment": "franka"}]
    assert camera.kwargs["respawn"] is True
    on_exit = handler.args[0]
    assert on_exit.kwargs["target_action"] is driver
    log, shutdown = on_exit.kwargs["on_exit"](types.SimpleNamespace(returncode=3), context)
    assert shutdown.kwargs["reason"] == "critical node driver exited with code 3"
    assert type(log).__name__ == "LogInfo"


def test_bringup_defaults_to_the_demo_graph(bringup: types.ModuleType) -> None:
    if importlib.util.find_spec("vla_runtime.nodes") is None:
        pytest.skip("vla_runtime.nodes does not exist yet, so talker_node is not registered")
    opaque = bringup.generate_launch_description().args[0][1]
    actions = opaque.kwargs["function"](types.SimpleNamespace(launch_configurations={}))
    assert [a.kwargs.get("name") for a in actions if type(a).__name__ == "Node"] == [
        "talker",
        "listener",
    ]


def test_ros2_launch_embodiment_sim_policy_builds_the_sim_graph(
    bringup: types.ModuleType,
) -> None:
    """`ros2 launch vla_runtime bringup.launch.py embodiment:=so100 sim:=true policy:=...`"""
    opaque = bringup.generate_launch_description().args[0][1]
    configurations = {
        "graph": "demo_talker_listener",  # the declared default, as ros2 launch fills it in
        "embodiment": "so100",
        "sim": "true",
        "policy": "tiny_flow_think",
    }
    actions = opaque.kwargs["function"](
        types.SimpleNamespace(launch_configurations=configurations)
    )
    nodes = {a.kwargs["name"]: a.kwargs for a in actions if type(a).__name__ == "Node"}
    assert set(nodes) == {n.name for n in load_graph("so100_sim").nodes}
    assert nodes["sim"]["arguments"][:4] == ["-m", "vla_runtime.cli", "sim", "so100"]
    assert nodes["policy"]["parameters"][0].endswith("policies/tiny_flow_think.yaml")
    assert nodes["driver"]["package"] == "vla_runtime"
    # The world is critical: its exit shuts the launch down.
    handlers = [a for a in actions if type(a).__name__ == "RegisterEventHandler"]
    assert [h.args[0].kwargs["target_action"].kwargs["name"] for h in handlers] == ["sim"]
