"""With ROS 2 sourced, `vla_runtime.ros` is rclpy itself and our nodes are rclpy nodes.

Skipped without a ROS 2 install (rclpy not importable); see test/README.md.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["VLA_RUNTIME_MIDDLEWARE"] = "rclpy"
    return env


def test_names_are_rclpys() -> None:
    code = (
        "from vla_runtime import ros; import rclpy.node, rclpy.qos;"
        "assert ros.backend_name() == 'rclpy';"
        "assert ros.Node is rclpy.node.Node;"
        "assert ros.QoSProfile is rclpy.qos.QoSProfile;"
        "from vla_runtime.ros.interfaces import get_message;"
        "from std_msgs.msg import String; assert get_message('std_msgs/String') is String"
    )
    subprocess.run([sys.executable, "-c", code], env=_env(), check=True, timeout=60)


def test_talker_and_listener_run_on_rclpy() -> None:
    listener = subprocess.Popen(
        [sys.executable, "-m", "vla_runtime.nodes.listener_node"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    talker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vla_runtime.nodes.talker_node",
            "--ros-args",
            "-p",
            "rate_hz:=10.0",
        ],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert listener.stdout is not None
        for _ in range(200):
            line = listener.stdout.readline()
            if "heard:" in line:
                break
        else:
            pytest.fail("the rclpy listener never heard the rclpy talker")
    finally:
        for process in (talker, listener):
            process.terminate()
            process.wait(timeout=10)
