"""Bring up a vla_runtime graph with `ros2 launch`, from the same YAML as `vla-runtime launch`.

    ros2 launch vla_runtime bringup.launch.py embodiment:=so100 [sim:=true] [policy:=tiny_so100]
    ros2 launch vla_runtime bringup.launch.py graph:=demo_talker_listener [NAME:=VALUE ...]

`graph` is a name in config/graphs/ or a path to a graph file. Without it, `embodiment` picks
the embodiment's graph (`so100`, `yam_bimanual`, `franka`), and `sim:=true` its simulated twin
(`<embodiment>_sim`); docs/bringup.md. Every other `NAME:=VALUE` that the graph declares under
`arguments:` (e.g. `policy:=tiny_so100`) is substituted into it; `vla-runtime launch GRAPH
--show-args` lists them. Each node becomes a launch_ros `Node`,
and a critical node's exit shuts the launch down. No router is started here: with
rmw_zenoh_cpp, run `ros2 run rmw_zenoh_cpp rmw_zenohd` as usual.

The translation from graph to `Node` arguments lives in `vla_runtime.launch.graph`
(`launch_ros_node_kwargs`) so that it is unit-tested without ROS; this file only wires it to
launch actions, which it imports inside the functions for the same reason.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any


def generate_launch_description() -> Any:
    """Return the launch description: the `graph` argument and the graph's nodes."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    # Only `graph` is declared: the other arguments depend on which graph is chosen, and
    # ros2 launch passes undeclared NAME:=VALUE pairs through as launch configurations.
    # Declaring them here with the default graph's defaults would override another graph's own.
    # `embodiment` and `sim` (which graph) arrive the same way: see graph.bringup_selection.
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "graph",
                default_value=_graph_module().BRINGUP_DEFAULT_GRAPH,
                description="graph name in vla_runtime's config/graphs/, or a path to a graph "
                "file; list its arguments with `vla-runtime launch GRAPH --show-args`. "
                "Without it, embodiment:=NAME [sim:=true] picks <embodiment>[_sim]",
            ),
            OpaqueFunction(function=launch_setup),
        ]
    )


def launch_setup(context: Any, *args: Any, **kwargs: Any) -> list[Any]:
    """Build the node actions of the chosen graph at launch time (an `OpaqueFunction`)."""
    from launch.actions import LogInfo, RegisterEventHandler, Shutdown
    from launch.event_handlers import OnProcessExit
    from launch_ros.actions import Node

    graph = _graph_module()
    # A GraphError propagates: ros2 launch prints its one-line message and exits non-zero.
    name, overrides = graph.bringup_selection(dict(context.launch_configurations))
    spec = graph.load_graph(name, overrides)

    actions: list[Any] = []
    for node in spec.nodes:
        action = Node(**graph.launch_ros_node_kwargs(node))
        actions.append(action)
        if node.critical:

            def on_exit(event: Any, _context: Any, node_name: str = node.name) -> list[Any]:
                reason = f"critical node {node_name} exited with code {event.returncode}"
                return [LogInfo(msg=f"{reason}: shutting down"), Shutdown(reason=reason)]

            actions.append(
                RegisterEventHandler(OnProcessExit(target_action=action, on_exit=on_exit))
            )
    return actions


def _graph_module() -> ModuleType:
    try:
        from vla_runtime.launch import graph
    except ImportError:
        # `ros2 launch launch/bringup.launch.py` from a checkout that is not installed.
        source = Path(__file__).resolve().parents[1] / "src"
        if not (source / "vla_runtime").is_dir():
            raise
        sys.path.insert(0, str(source))
        from vla_runtime.launch import graph
    return graph
