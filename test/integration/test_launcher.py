"""`vla-runtime launch` as a process supervisor, with stand-in node programs (no middleware).

The launcher runs as its own process here (`python -m vla_runtime.launch.launcher`), so signals
reach it as they do from a terminal. The stand-ins in fixtures/ print their pid, so the tests can
check that nothing is left running.
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vla_runtime.launch.graph import NodeSpec, load_graph
from vla_runtime.launch.launcher import (
    Launcher,
    LaunchOptions,
    node_command,
    parse_launch_arguments,
)

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SRC = Path(__file__).resolve().parents[2] / "src"
CHATTY = FIXTURES / "chatty.py"
EXIT_CODE = FIXTURES / "exit_code.py"
IGNORE_SIGINT = FIXTURES / "ignore_sigint.py"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class LauncherProcess:
    """The launcher in a child process, its output collected line by line."""

    def __init__(self, graph: Path, *args: str) -> None:
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
        )
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "vla_runtime.launch.launcher", str(graph), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, pattern: str, timeout_s: float = 10.0, count: int = 1) -> list[str]:
        """Wait until `count` lines match `pattern`; return them."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                matches = [line for line in self.lines if re.search(pattern, line)]
                if len(matches) >= count:
                    return matches
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.popen.poll() is not None and not self._reader.is_alive()
                ):
                    raise AssertionError(
                        f"{count} x {pattern!r} not seen; output:\n" + "\n".join(self.lines)
                    )
                self._changed.wait(min(remaining, 0.1))

    def wait(self, timeout_s: float) -> int:
        code = self.popen.wait(timeout_s)
        self._reader.join(2.0)
        return code

    def output(self) -> str:
        return "\n".join(self.lines)

    def pids(self, name: str) -> list[int]:
        return [
            int(line.split("=")[1]) for line in self.lines if line.startswith(f"[{name}] pid=")
        ]

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


@pytest.fixture
def launched() -> Iterator[list[LauncherProcess]]:
    """Launchers started by a test; killed at the end if the test left one running."""
    started: list[LauncherProcess] = []
    yield started
    for launcher in started:
        launcher.kill()


def write_graph(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "graph.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def alive(pid: int) -> bool:
    """True if `pid` runs and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def wait_dead(pids: list[int], timeout_s: float = 2.0) -> list[int]:
    # The launcher reaps its children before exiting; this only covers /proc catching up.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


# ------------------------------------------------------------------------------- behaviour


def test_output_is_prefixed_with_the_node_name_and_nodes_get_ros_args(
    tmp_path: Path, launched: list[LauncherProcess]
) -> None:
    graph = write_graph(
        tmp_path,
        f"""
        nodes:
          - name: chatty
            executable: {CHATTY}
            env: {{GREETING: hello}}
            remappings: {{/in: /cameras/top/image_raw}}
        """,
    )
    launcher = LauncherProcess(graph, "--no-router", "--duration", "1.5")
    launched.append(launcher)

    assert launcher.wait(10.0) == 0
    out = launcher.output()
    assert "[chatty] tick 0" in out
    assert "[chatty] to stderr" in out  # stderr is merged and prefixed too
    assert "[chatty] argv=--ros-args -r __node:=chatty -r /in:=/cameras/top/image_raw" in out
    assert "[chatty] greeting=hello" in out
    # --no-router: the nodes are still told where the router is.
    assert "[chatty] router=tcp/127.0.0.1:7447" in out
    assert "[launch] started chatty (pid " in out
    assert not ANSI.search(out), "no colour when stdout is not a terminal"
    for line in launcher.lines:
        assert re.match(r"^\[(launch|chatty)\] ", line), line


def test_duration_stops_the_graph_cleanly(tmp_path: Path, launched: list[LauncherProcess]) -> None:
    graph = write_graph(tmp_path, f"nodes:\n  - {{name: chatty, executable: {CHATTY}}}\n")
    started = time.monotonic()
    launcher = LauncherProcess(graph, "--no-router", "--duration", "1")
    launched.append(launcher)

    assert launcher.wait(10.0) == 0
    assert time.monotonic() - started < 5.0
    out = launcher.output()
    assert "[launch] duration of 1 s elapsed: shutting down" in out
    assert "[chatty] got SIGINT" in out  # forwarded once, so the node shut down cleanly
    assert "SIGTERM" not in out
    assert wait_dead(launcher.pids("chatty")) == []


def test_a_respawnable_node_is_restarted(tmp_path: Path, launched: list[LauncherProcess]) -> None:
    graph = write_graph(
        tmp_path,
        f"""
        nodes:
          - {{name: chatty, executable: {CHATTY}}}
          - name: flaky
            executable: {EXIT_CODE}
            arguments: ["1"]
            respawn: true
            respawn_delay_s: 0.1
        """,
    )
    launcher = LauncherProcess(graph, "--no-router")
    launched.append(launcher)

    launcher.wait_for(r"^\[flaky\] pid=", count=3)
    launcher.popen.send_signal(signal.SIGINT)
    assert launcher.wait(10.0) == 0
    out = launcher.output()
    assert "[launch] flaky exited (exit code 1); respawning in 0.1 s" in out
    assert len(set(launcher.pids("flaky"))) >= 3
    assert "[chatty] got SIGINT" in out  # the others kept running throughout


def test_respawns_stop_after_the_limit_per_minute(tmp_path: Path) -> None:
    graph = load_graph(
        write_graph(
            tmp_path,
            f"""
            nodes:
              - {{name: chatty, executable: {CHATTY}}}
              - {{name: flaky, executable: {EXIT_CODE}, respawn: true, respawn_delay_s: 0.0}}
            """,
        )
    )
    stream = io.StringIO()
    options = LaunchOptions(start_router=False, duration_s=3.5, max_respawns_per_minute=2)

    assert Launcher(graph, options, stream).run() == 0

    out = stream.getvalue()
    assert out.count("[launch] started flaky") == 3  # first start + 2 respawns
    assert "flaky exited (exit code 3) 3 times within 60 s; not respawning it again" in out


def test_a_critical_node_exit_stops_everything_with_a_failure_code(
    tmp_path: Path, launched: list[LauncherProcess]
) -> None:
    graph = write_graph(
        tmp_path,
        f"""
        nodes:
          - {{name: chatty, executable: {CHATTY}}}
          - {{name: ignorer, executable: {IGNORE_SIGINT}}}
          - {{name: crasher, executable: {EXIT_CODE}, critical: true}}
        """,
    )
    launcher = LauncherProcess(graph, "--no-router")
    launched.append(launcher)

    assert launcher.wait(10.0) == 1
    out = launcher.output()
    assert "[launch] critical node crasher exited (exit code 3): shutting down" in out
    assert "[chatty] got SIGINT" in out
    assert "[launch] ignorer did not stop within 3 s of SIGINT; sending SIGTERM" in out
    pids = launcher.pids("chatty") + launcher.pids("ignorer") + launcher.pids("crasher")
    assert len(pids) == 3
    assert wait_dead(pids) == []


def test_sigint_stops_everything_within_5_s_even_nodes_that_ignore_it(
    tmp_path: Path, launched: list[LauncherProcess]
) -> None:
    graph = write_graph(
        tmp_path,
        f"""
        nodes:
          - {{name: chatty, executable: {CHATTY}}}
          - {{name: ignorer, executable: {IGNORE_SIGINT}}}
          - {{name: stubborn, executable: {IGNORE_SIGINT}, arguments: [--ignore-sigterm]}}
        """,
    )
    launcher = LauncherProcess(graph, "--no-router")
    launched.append(launcher)
    launcher.wait_for(r"^\[ignorer\] ready")
    launcher.wait_for(r"^\[stubborn\] ready")
    launcher.wait_for(r"^\[chatty\] tick 0")

    sent = time.monotonic()
    launcher.popen.send_signal(signal.SIGINT)
    code = launcher.wait(10.0)
    elapsed_s = time.monotonic() - sent

    assert code == 0  # an operator stop is a clean stop
    assert elapsed_s < 5.0
    out = launcher.output()
    assert "[launch] received SIGINT: shutting down" in out
    assert out.count("[chatty] got SIGINT") == 1  # exactly once: only the launcher forwards it
    assert "sending SIGTERM" in out and "[launch] stubborn did not stop" in out
    pids = [pid for name in ("chatty", "ignorer", "stubborn") for pid in launcher.pids(name)]
    assert len(pids) == 3
    assert wait_dead(pids) == []


def test_a_second_sigint_skips_to_the_next_signal(
    tmp_path: Path, launched: list[LauncherProcess]
) -> None:
    graph = write_graph(tmp_path, f"nodes:\n  - {{name: ignorer, executable: {IGNORE_SIGINT}}}\n")
    launcher = LauncherProcess(graph, "--no-router")
    launched.append(launcher)
    launcher.wait_for(r"^\[ignorer\] ready")

    launcher.popen.send_signal(signal.SIGINT)
    launcher.wait_for(r"^\[launch\] received SIGINT")
    second = time.monotonic()
    launcher.popen.send_signal(signal.SIGINT)

    assert launcher.wait(10.0) == 0
    # Timed from the second request (the first one's handling is slow on a loaded machine):
    # the graph stops at once instead of sitting out the 3 s SIGINT grace.
    assert time.monotonic() - second < 3.0
    assert "[launch] ignorer still running at a second stop request; sending SIGTERM" in (
        launcher.output()
    )


def test_sigterm_to_the_launcher_stops_the_graph(
    tmp_path: Path, launched: list[LauncherProcess]
) -> None:
    graph = write_graph(tmp_path, f"nodes:\n  - {{name: chatty, executable: {CHATTY}}}\n")
    launcher = LauncherProcess(graph, "--no-router")
    launched.append(launcher)
    launcher.wait_for(r"^\[chatty\] tick 0")

    launcher.popen.send_signal(signal.SIGTERM)

    assert launcher.wait(10.0) == 0
    assert "[launch] received SIGTERM: shutting down" in launcher.output()
    assert "[chatty] got SIGINT" in launcher.output()


def test_the_graph_ends_when_every_node_has_exited(
    tmp_path: Path, launched: list[LauncherProcess]
) -> None:
    graph = write_graph(
        tmp_path,
        f"""
        nodes:
          - {{name: once, executable: {EXIT_CODE}, arguments: ["0"]}}
          - {{name: fails, executable: {EXIT_CODE}, arguments: ["4"]}}
        """,
    )
    launcher = LauncherProcess(graph, "--no-router")
    launched.append(launcher)

    assert launcher.wait(10.0) == 1
    out = launcher.output()
    assert "[launch] once exited (exit code 0)" in out
    assert "[launch] all nodes have exited; failed: fails" in out


def test_a_malformed_graph_is_one_line_naming_file_and_key(
    tmp_path: Path, launched: list[LauncherProcess]
) -> None:
    graph = write_graph(tmp_path, f"nodes:\n  - {{name: a, executable: {CHATTY}, respwn: true}}\n")
    launcher = LauncherProcess(graph, "--no-router")
    launched.append(launcher)

    assert launcher.wait(10.0) == 2
    assert launcher.lines == [
        f"vla-runtime launch: error: {graph}: nodes[0].respwn: unknown key; allowed: name, "
        "executable, namespace, parameters, remappings, respawn, respawn_delay_s, critical, env, "
        "arguments. Did you mean 'respawn'?"
    ]


def test_launch_arguments_reach_the_graph(tmp_path: Path, launched: list[LauncherProcess]) -> None:
    graph = write_graph(
        tmp_path,
        f"""
        arguments: {{greeting: hello}}
        nodes:
          - {{name: chatty, executable: {CHATTY}, env: {{GREETING: "${{greeting}}"}}}}
        """,
    )
    launcher = LauncherProcess(graph, "greeting:=bonjour", "--no-router", "--duration", "1")
    launched.append(launcher)

    assert launcher.wait(10.0) == 0
    assert "[chatty] greeting=bonjour" in launcher.output()


def test_a_busy_router_port_is_reported(tmp_path: Path, launched: list[LauncherProcess]) -> None:
    graph = write_graph(tmp_path, f"nodes:\n  - {{name: chatty, executable: {CHATTY}}}\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        endpoint = f"tcp/127.0.0.1:{busy.getsockname()[1]}"
        launcher = LauncherProcess(graph, "--router-listen", endpoint)
        launched.append(launcher)

        assert launcher.wait(10.0) == 1
    assert f"[launch] something already listens on {endpoint}" in launcher.output()
    assert "started chatty" not in launcher.output()


def test_the_router_is_up_before_the_nodes_and_stopped_after_them(
    tmp_path: Path, launched: list[LauncherProcess]
) -> None:
    pytest.importorskip("zenoh", reason="the router is a Zenoh router")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"tcp/127.0.0.1:{port}"
    graph = write_graph(
        tmp_path,
        f"""
        router: {{listen: "{endpoint}"}}
        nodes:
          - {{name: chatty, executable: {CHATTY}}}
        """,
    )
    launcher = LauncherProcess(graph, "--duration", "2")
    launched.append(launcher)

    assert launcher.wait(15.0) == 0
    lines = launcher.lines
    ready = lines.index(f"[launch] router listening on {endpoint}")
    assert any(line.startswith("[launch] started router (pid ") for line in lines[:ready])
    assert any(line.startswith("[launch] started chatty (pid ") for line in lines[ready:])
    assert f"[chatty] router={endpoint}" in lines
    with socket.socket() as client:
        assert client.connect_ex(("127.0.0.1", port)) != 0, "the router must be stopped"


def test_colour_prefixes_are_stable_per_node(tmp_path: Path) -> None:
    graph = load_graph(write_graph(tmp_path, f"nodes:\n  - {{name: a, executable: {CHATTY}}}\n"))
    outputs = []
    for _ in range(2):
        stream = io.StringIO()
        Launcher(
            graph, LaunchOptions(start_router=False, duration_s=0.5, colour=True), stream
        ).run()
        outputs.append(stream.getvalue())
    colours = [re.search(r"(\x1b\[\d+m)\[a\]\x1b\[0m tick 0", out) for out in outputs]
    assert colours[0] is not None and colours[1] is not None
    assert colours[0].group(1) == colours[1].group(1)


# ---------------------------------------------------------------------------- command lines


def test_node_commands_run_through_this_interpreter(tmp_path: Path) -> None:
    ros_args = ["--ros-args", "-r", "__node:=n"]
    module = node_command(NodeSpec(name="n", executable="python:pkg.tool"), python="/py")
    assert module == ["/py", "-m", "pkg.tool", *ros_args]
    script = node_command(NodeSpec(name="n", executable="/x/s.py", arguments=("a",)), python="/py")
    assert script == ["/py", "/x/s.py", "a", *ros_args]
    program = node_command(NodeSpec(name="n", executable="/x/run"), python="/py")
    assert program == ["/x/run", *ros_args]


def test_launch_arguments_parse_like_ros2_launch() -> None:
    assert parse_launch_arguments(["embodiment:=so100", "prompt:=a:=b", "empty:="]) == {
        "embodiment": "so100",
        "prompt": "a:=b",
        "empty": "",
    }
    with pytest.raises(ValueError, match="'sim=true' is not NAME:=VALUE"):
        parse_launch_arguments(["sim=true"])
