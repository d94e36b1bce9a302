"""The bringup graphs (config/graphs/<embodiment>[_sim].yaml), how bringup.launch.py picks one,
and the pure parts of `vla-runtime demo`. No middleware, no processes."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from vla_runtime.cli import demo_command
from vla_runtime.cli.main import main
from vla_runtime.launch.graph import (
    GraphError,
    GraphSpec,
    NodeSpec,
    bringup_selection,
    config_dir,
    load_graph,
    node_executables,
    policy_argument,
)
from vla_runtime.policy.transforms import load_transform_config

REPO = Path(__file__).resolve().parents[2]
EMBODIMENTS = ("so100", "yam_bimanual", "franka")
GRAPHS = [*EMBODIMENTS, *(f"{e}_sim" for e in EMBODIMENTS)]
# Every bringup graph runs these, on the real arm and in the world alike (DESIGN §3).
PIPELINE = {"driver", "think", "policy", "teleop", "latency_monitor"}


def node(graph: GraphSpec, name: str) -> NodeSpec:
    return next(n for n in graph.nodes if n.name == name)


def inline(spec: NodeSpec) -> dict[str, Any]:
    """The node's inline parameters, merged in order (later wins), nested keys kept."""
    merged: dict[str, Any] = {}
    for parameters in spec.parameters:
        if not isinstance(parameters, Path):
            merged |= dict(parameters)
    return merged


def files(spec: NodeSpec) -> list[str]:
    return [str(p.relative_to(config_dir())) for p in spec.parameters if isinstance(p, Path)]


# ------------------------------------------------------------------------------ the graphs


@pytest.mark.parametrize("name", GRAPHS)
def test_every_bringup_graph_loads_with_the_real_registry(name: str) -> None:
    graph = load_graph(name)
    assert graph.name == name and graph.description
    assert {n.name for n in graph.nodes} >= PIPELINE
    registry = node_executables()
    for spec in graph.nodes:
        module = spec.executable.removeprefix("python:")
        assert spec.executable in registry or importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("name", GRAPHS)
def test_the_nodes_are_configured_for_the_graphs_embodiment(name: str) -> None:
    embodiment = name.removesuffix("_sim")
    graph = load_graph(name)
    assert files(node(graph, "driver"))[0] == f"embodiments/{embodiment}.yaml"
    assert files(node(graph, "teleop"))[0] == f"embodiments/{embodiment}.yaml"
    for spec in ("think", "policy", "latency_monitor"):
        assert inline(node(graph, spec))["embodiment"] == embodiment
    policy = node(graph, "policy")
    # The simulated SO100 ships a policy trained in its world; the others random weights.
    trained = "tiny_so100" if name == "so100_sim" else "tiny_recurrent"
    assert files(policy) == [f"policies/{trained}.yaml"]
    assert inline(policy)["scene_topic"] == "/think/scene"


@pytest.mark.parametrize("name", GRAPHS)
def test_the_policy_is_a_graph_argument(name: str) -> None:
    graph = load_graph(name, {"policy": "tiny_flow_think", "scene_topic": ""})
    policy = node(graph, "policy")
    assert files(policy) == ["policies/tiny_flow_think.yaml"]
    assert inline(policy)["scene_topic"] == ""
    with pytest.raises(GraphError, match="tiny_nothing"):
        load_graph(name, {"policy": "tiny_nothing"})
    monitor = node(load_graph(name, {"deadlines": "/srv/relaxed.yaml"}), "latency_monitor")
    assert inline(monitor)["deadlines"] == "/srv/relaxed.yaml"
    # The simulated SO100 uses its own deadlines (a looser overrun rule); the others the arm's.
    expected = "so100_sim" if name == "so100_sim" else ""
    assert inline(node(load_graph(name), "latency_monitor"))["deadlines"] == expected


@pytest.mark.parametrize("embodiment", EMBODIMENTS)
def test_real_graphs_run_one_camera_node_per_policy_camera(embodiment: str) -> None:
    graph = load_graph(embodiment)
    cameras = [n for n in graph.nodes if n.executable == "camera_node"]
    names = [inline(c)["name"] for c in cameras]
    assert names == list(load_transform_config(embodiment).cameras)
    assert [c.name for c in cameras] == [f"camera_{n}" for n in names]
    assert {inline(c)["source"] for c in cameras} == (
        {"opencv"} if embodiment == "so100" else {"realsense"}
    )
    assert node(graph, "driver").critical  # the arm's process is never respawned silently


def test_real_graph_device_arguments_reach_the_nodes() -> None:
    so100 = load_graph(
        "so100", {"port": "/dev/so100_follower", "leader_port": "/dev/so100_leader"}
    )
    assert inline(node(so100, "driver"))["driver"]["port"] == "/dev/so100_follower"
    assert inline(node(so100, "teleop"))["leader"]["driver"]["port"] == "/dev/so100_leader"
    assert files(node(so100, "teleop"))[1] == "embodiments/so100_leader.yaml"
    yam = load_graph("yam_bimanual", {"left_channel": "can0", "top_serial": "f1230450"})
    driver = inline(node(yam, "driver"))["driver"]
    assert driver["interface"] == "socketcan" and driver["left"] == {"channel": "can0"}
    assert inline(node(yam, "camera_top"))["source.serial"] == "f1230450"
    franka = load_graph("franka", {"command_interface": "trajectory"})
    assert inline(node(franka, "driver"))["driver"]["command_interface"] == "trajectory"


@pytest.mark.parametrize(
    ("embodiment", "coupling"),
    [("so100", "--servo-bus"), ("yam_bimanual", "--can"), ("franka", "--franka-ros2")],
)
def test_sim_graphs_run_the_world_with_the_device_emulator_in_place_of_the_arm(
    embodiment: str, coupling: str
) -> None:
    graph = load_graph(f"{embodiment}_sim")
    world = node(graph, "sim")
    assert world.executable == "python:vla_runtime.cli" and world.critical
    assert world.arguments[:3] == ("sim", embodiment, coupling)
    assert not [n for n in graph.nodes if n.executable == "camera_node"]  # the world renders


def test_sim_graphs_point_the_driver_at_the_emulated_buses() -> None:
    so100 = load_graph("so100_sim", {"bus_link": "/tmp/x/bus"})
    assert "--link=/tmp/x/bus" in node(so100, "sim").arguments
    assert inline(node(so100, "driver"))["driver"]["port"] == "/tmp/x/bus"
    yam = load_graph("yam_bimanual_sim", {"can_link": "/tmp/x/can"})
    assert "--link=/tmp/x/can" in node(yam, "sim").arguments
    driver = inline(node(yam, "driver"))["driver"]
    assert driver["interface"] == "slcan"
    assert driver["left"] == {"channel": "/tmp/x/can/can_follower_l"}
    assert driver["right"] == {"channel": "/tmp/x/can/can_follower_r"}


@pytest.mark.parametrize("name", GRAPHS)
def test_launch_dry_run_prints_every_node(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["launch", name, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(load_graph(name).nodes)  # the router, then each node
    assert all("--ros-args -r __node:=" in line for line in lines[1:])


def test_a_command_run_as_a_graph_node_ignores_its_ros_arguments() -> None:
    # The launcher appends `--ros-args -r __node:=sim` to `python -m vla_runtime.cli sim ...`.
    assert main(["demo", "--duration", "0", "--ros-args", "-r", "__node:=sim"]) == 2


# --------------------------------------------------------------- bringup.launch.py selection


def test_embodiment_picks_the_real_graph_and_sim_its_twin() -> None:
    assert bringup_selection({"embodiment": "so100"}) == ("so100", {})
    name, overrides = bringup_selection(
        {"embodiment": "so100", "sim": "true", "policy": "tiny_flow_think", "other": "x"}
    )
    assert name == "so100_sim"
    assert overrides == {"policy": "tiny_flow_think"}  # undeclared configurations stay out
    assert bringup_selection({"embodiment": "franka", "sim": "False"})[0] == "franka"
    assert bringup_selection({"embodiment": "yam_bimanual", "sim": "1"})[0] == "yam_bimanual_sim"


def test_an_explicit_graph_wins_over_the_embodiment() -> None:
    assert bringup_selection({"graph": "franka_sim", "embodiment": "so100"})[0] == "franka_sim"
    assert bringup_selection({})[0] == "demo_talker_listener"
    assert bringup_selection({"graph": "demo_talker_listener"})[0] == "demo_talker_listener"


def test_bad_selections_say_what_to_write() -> None:
    with pytest.raises(GraphError, match=r"available: .*so100.*Did you mean 'so100'"):
        bringup_selection({"embodiment": "so10"})
    with pytest.raises(GraphError, match="sim:=maybe: expected true or false"):
        bringup_selection({"embodiment": "so100", "sim": "maybe"})
    with pytest.raises(GraphError, match="needs embodiment"):
        bringup_selection({"sim": "true"})


def test_a_policy_path_becomes_the_graph_argument(tmp_path: Path) -> None:
    mine = tmp_path / "my_policy.yaml"
    mine.write_text("/**:\n  ros__parameters: {model: tiny}\n", encoding="utf-8")
    argument = policy_argument(str(mine))
    assert (config_dir() / "policies" / f"{argument}.yaml").resolve() == mine.resolve()
    assert policy_argument("tiny_so100") == "tiny_so100"
    graph = load_graph("so100_sim", {"policy": argument})
    assert [p for p in node(graph, "policy").parameters if isinstance(p, Path)] == [mine]
    with pytest.raises(GraphError, match=r"not a \.yaml policy parameter file"):
        policy_argument(str(tmp_path / "missing.yaml"))
    _, overrides = bringup_selection({"embodiment": "so100", "sim": "true", "policy": str(mine)})
    assert overrides == {"policy": argument}


# ------------------------------------------------------------------ vla-runtime demo (pure)


def _array(*statuses: tuple[str, dict[str, str]]) -> Any:
    return types.SimpleNamespace(
        status=[
            types.SimpleNamespace(
                name=name,
                values=[types.SimpleNamespace(key=k, value=v) for k, v in values.items()],
            )
            for name, values in statuses
        ]
    )


def test_demo_state_reads_task_mode_stages_and_deadlines() -> None:
    state = demo_command.DemoState("so100", "tiny_so100", False, 60.0, started_s=100.0)
    state.chunks = 3
    state.on_diagnostics(
        _array(
            ("sim: so100", {"success": "false", "target_distance_m": "0.2000"}),
            ("driver: so100", {"mode": "HOLD", "hold_reason": "operator", "chunks_accepted": "2"}),
            ("latency_monitor/stage/chunk_age", {"p50_ms": "120.5", "p99_ms": "300.0"}),
            (
                "latency_monitor/deadline/driver_overruns",
                {"state": "breached", "value": "0.2", "limit": "0.05"},
            ),
        ),
        now_s=110.0,
    )
    assert state.mode == "HOLD" and state.chunk_counts == {"accepted": "2"}
    assert state.stages == {"chunk_age": ("120.5", "300.0")}
    assert state.over_deadlines() == ["driver_overruns"] and not state.ready_to_engage()
    # The condition clears: the monitor latches the breach, the operator may engage again.
    state.on_diagnostics(
        _array(
            (
                "latency_monitor/deadline/driver_overruns",
                {"state": "breached", "value": "0.01", "limit": "0.05"},
            )
        )
    )
    assert state.ready_to_engage()
    assert "never engaged" in state.result_line()
    state.chunk_counts = {"out_of_limits": "7"}
    assert "the driver rejected every chunk (out_of_limits 7)" in state.result_line()
    state.engaged_at_s = 12.0
    state.on_diagnostics(_array(("sim: so100", {"success": "true"})), now_s=130.5)
    assert state.success_at_s == pytest.approx(30.5)
    assert state.result_line() == "result: success: yes, after 30.5 s, 18.5 s after engaging"
    assert "chunk_age 120.5/300.0" in state.summary_line()


def test_demo_result_says_random_weights_are_expected_to_fail() -> None:
    state = demo_command.DemoState("so100", "tiny_recurrent", True, 20.0)
    state.engaged_at_s = 5.0
    assert state.result_line() == (
        "result: success: no, task not done in 20 s (random weights: expected)"
    )


def test_demo_knows_random_weights_from_the_policy_file(tmp_path: Path) -> None:
    assert demo_command.has_random_weights(config_dir() / "policies/tiny_recurrent.yaml")
    trained = tmp_path / "trained.yaml"
    trained.write_text("/**:\n  ros__parameters: {model: models/tiny_so100}\n", encoding="utf-8")
    assert not demo_command.has_random_weights(trained)
    expected = (
        "tiny_so100"
        if (config_dir() / "policies/tiny_so100.yaml").is_file()
        else ("tiny_recurrent")
    )
    assert demo_command.default_policy("so100") == expected
    assert demo_command.default_policy("franka") == "tiny_recurrent"


def test_demo_gui_without_a_display_fails_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert main(["demo", "--gui", "--duration", "1"]) == 2
    assert "--gui: no display" in capsys.readouterr().err


def test_demo_rejects_a_missing_deadline_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--deadlines", "/no/such.yaml", "--duration", "1"]) == 2
    assert "--deadlines /no/such.yaml: no such file" in capsys.readouterr().err


def test_demo_rejects_an_unknown_policy_before_starting_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--policy", "no_such_policy", "--duration", "1"]) == 2
    assert "no_such_policy" in capsys.readouterr().err
