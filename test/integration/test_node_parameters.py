"""A node takes its parameters from a ROS 2 YAML parameter file and from -p, like rclpy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from graph_helpers import child_env

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


@pytest.mark.parametrize(
    ("params_text", "extra", "needle"),
    [
        ("/**:\n  rate_hz: 3.0\n", [], "ros__parameters"),
        ("/**: [unclosed\n", [], "not valid YAML"),
        ("/**:\n  ros__parameters:\n    rate_hz: 3\n", [], "decimal point"),
        ("", ["-p"], "needs a value"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_code_2(
    router: str, tmp_path: Path, params_text: str, extra: list[str], needle: str
) -> None:
    params = tmp_path / "talker.yaml"
    params.write_text(params_text)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vla_runtime.nodes.talker_node",
            "--ros-args",
            "--params-file",
            str(params),
            *extra,
        ],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("talker_node:")]
    assert len(errors) == 1 and needle in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_domains_are_isolated(router: str) -> None:
    listener = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vla_runtime.cli",
            "topic",
            "echo",
            "--once",
            "/chatter",
            "std_msgs/msg/String",
        ],
        env=child_env(ROS_DOMAIN_ID="7"),
        stdout=subprocess.PIPE,
        text=True,
    )
    for domain, text in (("3", "wrong domain"), ("7", "right domain")):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "vla_runtime.cli",
                "topic",
                "pub",
                "--times",
                "8",
                "--rate",
                "10",
                "/chatter",
                "std_msgs/msg/String",
                f"{{data: {text}}}",
            ],
            env=child_env(ROS_DOMAIN_ID=domain),
            capture_output=True,
            timeout=30,
            check=True,
        )
    out, _ = listener.communicate(timeout=20)
    assert "right domain" in out and "wrong domain" not in out
