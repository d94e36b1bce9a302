"""`vla-runtime topic|node|service` against live nodes, as a user would type them."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from graph_helpers import child_env

pytestmark = pytest.mark.integration


def cli(*args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vla_runtime.cli", *args],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_pub_and_echo_once(router: str) -> None:
    echo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vla_runtime.cli",
            "topic",
            "echo",
            "--once",
            "/cli_chatter",
            "std_msgs/msg/String",
        ],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pub = cli(
        "topic",
        "pub",
        "--rate",
        "5",
        "--times",
        "15",
        "/cli_chatter",
        "std_msgs/msg/String",
        "{data: hello}",
    )
    assert pub.returncode == 0, pub.stderr
    out, err = echo.communicate(timeout=20)
    assert echo.returncode == 0, err
    assert "data: hello" in out and "---" in out


def test_echo_discovers_the_type_and_hz_measures_the_rate(spawn: Any) -> None:
    talker = spawn(
        "import sys; from vla_runtime.nodes.talker_node import main; "
        "sys.exit(main(['talker', '--ros-args', '-p', 'rate_hz:=20.0']))"
    )
    talker.wait_for_line("publishing on /chatter")
    echo = cli("topic", "echo", "--once", "/chatter")
    assert echo.returncode == 0, echo.stderr
    assert "data: hello" in echo.stdout
    hz = cli("topic", "hz", "/chatter", "--count", "2")
    assert hz.returncode == 0, hz.stderr
    rates = [
        float(line.split(":")[1])
        for line in hz.stdout.splitlines()
        if line.startswith("average rate")
    ]
    assert rates and all(15.0 < rate < 25.0 for rate in rates), hz.stdout
    listing = cli("topic", "list", "-t")
    assert "/chatter [std_msgs/msg/String]" in listing.stdout
    nodes = cli("node", "list")
    assert "/talker" in nodes.stdout.split()
    info = cli("topic", "info", "-v", "/chatter")
    assert "Publisher count: 1" in info.stdout and "RELIABLE" in info.stdout


def test_service_call(spawn: Any) -> None:
    spawn(
        """
        from vla_runtime import ros
        from vla_runtime.ros.interfaces import get_service
        ros.init(args=[])
        node = ros.Node("flag_server")
        def set_flag(request, response):
            response.success = request.data
            response.message = "flag is " + str(request.data)
            return response
        node.create_service(get_service("std_srvs/SetBool"), "/flag", set_flag)
        print("READY", flush=True)
        ros.spin(node)
        """
    ).wait_for_line("READY")
    result = cli("service", "call", "/flag", "std_srvs/srv/SetBool", "{data: true}")
    assert result.returncode == 0, result.stderr
    assert "success: true" in result.stdout and "flag is True" in result.stdout
    listing = cli("service", "list", "-t")
    assert "/flag [std_srvs/srv/SetBool]" in listing.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("topic", "pub", "/x", "std_msgs/msg/Strin", "{data: a}"), "Strin"),
        (("topic", "pub", "/x", "std_msgs/msg/String", "{nope: a}"), "nope"),
        (("topic", "pub", "/x", "std_msgs/msg/String", "{data: [unclosed"), "YAML"),
        (("topic", "echo", "--wait", "0.3", "/nothing_here"), "pass the type"),
        (("service", "call", "--wait", "0.3", "/nobody", "std_srvs/srv/Trigger"), "not available"),
    ],
)
def test_user_errors_are_one_clear_line(router: str, args: tuple[str, ...], needle: str) -> None:
    result = cli(*args)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("vla-runtime:")]
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_param_list_get_set_through_the_parameter_services(spawn: Any) -> None:
    talker = spawn(
        "import sys; from vla_runtime.nodes.talker_node import main; "
        "sys.exit(main(['talker', '--ros-args', '-p', 'rate_hz:=20.0']))"
    )
    talker.wait_for_line("publishing on /chatter")
    listing = cli("param", "list", "/talker")
    assert listing.returncode == 0, listing.stderr
    assert {"message", "rate_hz", "use_sim_time"} <= set(listing.stdout.split())
    got = cli("param", "get", "/talker", "rate_hz")
    assert "Double value is: 20.0" in got.stdout, got.stdout + got.stderr
    changed = cli("param", "set", "/talker", "message", "bonjour")
    assert "Set parameter successful" in changed.stdout, changed.stderr
    talker.wait_for_line("sent: bonjour")
    refused = cli("param", "set", "/talker", "rate_hz", "5.0")
    assert refused.returncode == 1 and "read-only" in refused.stderr
