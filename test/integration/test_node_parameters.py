"""A node takes its parameters from a ROS 2 YAML parameter file and from -p, like rclpy."""

from __future__ import annotations

from pathlib import Path

import pytest

from vla_runtime import ros

pytestmark = pytest.mark.integration


def test_node_parameters_from_yaml_and_command_line(router: str, tmp_path: Path) -> None:
    params = tmp_path / "driver.yaml"
    params.write_text(
        "/**:\n  ros__parameters:\n    control_rate_hz: 100.0\n    joints: [a, b]\n"
        "/arm/driver:\n  ros__parameters:\n    port: /dev/ttyACM0\n    gains: {kp: 30.0}\n"
    )
    ros.init(
        args=[
            "driver",
            "--ros-args",
            "-r",
            "__ns:=/arm",
            "--params-file",
            str(params),
            "-p",
            "control_rate_hz:=200.0",
        ]
    )
    try:
        node = ros.Node("driver")
        assert node.get_parameter("use_sim_time").value is False
        node.declare_parameter("control_rate_hz", 50.0)
        node.declare_parameter(
            "port", "/dev/ttyUSB0", ros.ParameterDescriptor(read_only=True, description="bus")
        )
        node.declare_parameter("joints", ["x"])
        node.declare_parameter("gains.kp", 1.0)
        node.declare_parameter("unset_default", 7)
        assert node.get_parameter("control_rate_hz").value == 200.0  # -p beats the file
        assert node.get_parameter("port").value == "/dev/ttyACM0"
        assert node.get_parameter("joints").value == ["a", "b"]
        assert node.get_parameters_by_prefix("gains")["kp"].value == 30.0
        assert node.get_parameter("unset_default").value == 7
        results = node.set_parameters([ros.Parameter("port", value="/dev/null")])
        assert not results[0].successful
        assert node.describe_parameter("port").description == "bus"
    finally:
        ros.try_shutdown()
