"""Launch graphs and the process supervisor behind `vla-runtime launch`.

`graph` reads and validates `config/graphs/*.yaml`; `launcher` runs a graph as one process per
node (plus a Zenoh router) without ROS; `launch/bringup.launch.py` runs the same graph under
`ros2 launch`. See docs/launch.md.
"""

from vla_runtime.launch.graph import (
    GraphError,
    GraphSpec,
    LaunchArgument,
    NodeSpec,
    RouterSpec,
    available_graphs,
    config_dir,
    launch_ros_node_kwargs,
    load_graph,
    node_executables,
    ros_arguments,
)

__all__ = [
    "GraphError",
    "GraphSpec",
    "LaunchArgument",
    "NodeSpec",
    "RouterSpec",
    "available_graphs",
    "config_dir",
    "launch_ros_node_kwargs",
    "load_graph",
    "node_executables",
    "ros_arguments",
]
