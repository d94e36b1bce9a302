"""The process supervisor behind `vla-runtime launch`: a graph without ROS installed.

It starts a Zenoh router, waits until it accepts connections, then starts one process per node
with the `--ros-args` that launch_ros would give it. Every output line is prefixed with the
process's name. Respawnable nodes are restarted, a critical node's exit stops the graph, and
Ctrl-C, SIGTERM or `--duration` stop everything: SIGINT, then SIGTERM, then SIGKILL, all down
within 5 s, the router last so nodes can still say goodbye over it.

Children run in their own sessions so that the terminal's Ctrl-C reaches only the launcher,
which forwards it once; otherwise every node would get SIGINT twice (terminal + launcher).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import vla_runtime
from vla_runtime.launch.graph import (
    PYTHON_MODULE_PREFIX,
    SIGINT_TIMEOUT_S,
    SIGTERM_TIMEOUT_S,
    GraphError,
    GraphSpec,
    LaunchArgument,
    NodeSpec,
    RouterSpec,
    graph_arguments,
    load_graph,
    node_executables,
    ros_arguments,
)
from vla_runtime.launch.output import PrefixedOutput

EXIT_OK = 0
EXIT_FAILED = 1  # a critical node or the router died, or the router did not come up
EXIT_USAGE = 2  # bad graph file or arguments
ROUTER_ENV = "VLA_RUNTIME_ROUTER"
LAUNCH_PREFIX = "launch"
ROUTER_NAME = "router"
_POLL_S = 0.05
_RESPAWN_WINDOW_S = 60.0


@dataclass(frozen=True)
class LaunchOptions:
    """How `Launcher` runs a graph."""

    # Stop cleanly (exit 0) after this long; None runs until Ctrl-C or a critical exit.
    duration_s: float | None = None
    # False: a router runs elsewhere (`vla-runtime router`); nodes are still pointed at it.
    start_router: bool = True
    # Replaces the graph's `router.listen` endpoint.
    router_listen: str | None = None
    # ANSI-coloured name prefixes; the CLI turns it on when stdout is a terminal.
    colour: bool = False
    # Shutdown escalation. 3 + 1 s for the nodes and 0.5 s for the router keep the worst case
    # under the 5 s the issue promises, leaving a margin for process reaping.
    sigint_timeout_s: float = SIGINT_TIMEOUT_S
    sigterm_timeout_s: float = SIGTERM_TIMEOUT_S
    router_stop_timeout_s: float = 0.5
    router_ready_timeout_s: float = 5.0
    # A node that crashes at start-up would otherwise respawn forever and bury the real error.
    max_respawns_per_minute: int = 5
    python: str = sys.executable
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"--duration must be > 0 seconds, got {self.duration_s}")
        for name in ("sigint_timeout_s", "sigterm_timeout_s", "router_stop_timeout_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.router_ready_timeout_s <= 0:
            raise ValueError(
                f"router_ready_timeout_s must be > 0, got {self.router_ready_timeout_s}"
            )
        if self.max_respawns_per_minute < 0:
            raise ValueError(
                f"max_respawns_per_minute must be >= 0, got {self.max_respawns_per_minute}"
            )


@dataclass
class _Child:
    """One supervised process slot: a node or the router, across its respawns."""

    name: str
    spec: NodeSpec | None  # None for the router
    command: list[str]
    popen: subprocess.Popen[bytes] | None = None
    reader: threading.Thread | None = None
    respawn_at: float | None = None
    exits: collections.deque[float] = field(default_factory=collections.deque)
    last_returncode: int | None = None
    done: bool = False  # exited and will not be restarted

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


def node_command(
    node: NodeSpec, params_dir: Path | None = None, *, python: str = sys.executable
) -> list[str]:
    """Return the full command line that runs a node.

    Registered executables run their entry point through this interpreter, so the launcher works
    without the environment's `bin/` on PATH.

    Raises:
        GraphError: the executable is not registered.
    """
    tail = [*node.arguments, *ros_arguments(node, params_dir)]
    if node.executable.startswith(PYTHON_MODULE_PREFIX):
        return [python, "-m", node.executable[len(PYTHON_MODULE_PREFIX) :], *tail]
    if os.path.isabs(node.executable):
        program = [python] if node.executable.endswith(".py") else []
        return [*program, node.executable, *tail]
    registry = node_executables()
    if node.executable not in registry:
        raise GraphError(
            f"unknown executable {node.executable!r}; known: {', '.join(registry) or 'none'}",
            f"{node.name}.executable",
        )
    module, _, attribute = registry[node.executable].partition(":")
    head = attribute.split(".")[0]
    code = f"import sys; from {module} import {head}; sys.exit({attribute}())"
    return [python, "-c", code, *tail]


def router_command(listen: str, *, python: str = sys.executable) -> list[str]:
    """Return the command line of the Zenoh router (`vla-runtime router`)."""
    return [python, "-m", "vla_runtime.cli", "router", "--listen", listen]


class Launcher:
    """Run a graph's processes until stopped; see the module docstring."""

    def __init__(
        self, graph: GraphSpec, options: LaunchOptions, stream: IO[str] | None = None
    ) -> None:
        self._graph = graph
        self._options = options
        self._router = RouterSpec(
            enabled=graph.router.enabled and options.start_router,
            listen=options.router_listen or graph.router.listen,
        )
        self._output = PrefixedOutput(
            stream if stream is not None else sys.stdout, colour=options.colour
        )
        self._stop_reason: str | None = None
        self._escalate = False
        self._children: list[_Child] = []
        self._router_child: _Child | None = None
        self._params_dir: Path | None = None

    # ---------------------------------------------------------------------------------- public

    def run(self) -> int:
        """Start the graph, supervise it and stop it; return the exit code.

        0 after Ctrl-C, SIGTERM, `duration_s` or when every node has exited cleanly; non-zero
        when a critical node or the router died, or a node could not be started.
        """
        previous = self._install_signal_handlers()
        started = time.monotonic()
        try:
            with tempfile.TemporaryDirectory(prefix="vla_runtime-launch-") as params_dir:
                self._params_dir = Path(params_dir)
                try:
                    code = self._start()
                    if code == EXIT_OK:
                        code = self._supervise(started)
                finally:
                    # Also on an unexpected error: never leave node processes behind.
                    self._shutdown()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return code

    def request_stop(self, reason: str) -> None:
        """Ask `run()` to stop the graph; a second request skips to the next signal.

        Safe from a signal handler and from other threads: it only sets flags, which the
        supervision loop polls (taking a lock here could deadlock inside a signal handler).
        """
        if self._stop_reason is not None:
            self._escalate = True
        else:
            self._stop_reason = reason

    # -------------------------------------------------------------------------------- start-up

    def _start(self) -> int:
        description = f" ({self._graph.description})" if self._graph.description else ""
        self._log(f"graph {self._graph.name}{description}: {len(self._graph.nodes)} nodes")
        if self._router.enabled:
            code = self._start_router()
            if code != EXIT_OK:
                return code
        for node in self._graph.nodes:
            try:
                command = node_command(node, self._params_dir, python=self._options.python)
            except GraphError as error:
                self._log(f"cannot start {node.name}: {error}")
                return EXIT_USAGE
            child = _Child(node.name, node, command)
            self._children.append(child)
            if not self._spawn(child):
                return EXIT_FAILED
            if self._stop_reason is not None:
                break
        return EXIT_OK

    def _start_router(self) -> int:
        listen = self._router.listen
        probe = _tcp_probe_address(self._router.connect_endpoint)
        if probe is not None and _accepts(probe, 0.2):
            self._log(
                f"something already listens on {listen}; stop it, or pass --no-router to use "
                "it, or --router-listen another endpoint"
            )
            return EXIT_FAILED
        child = _Child(ROUTER_NAME, None, router_command(listen, python=self._options.python))
        self._router_child = child
        if not self._spawn(child):
            return EXIT_FAILED
        deadline = time.monotonic() + self._options.router_ready_timeout_s
        while time.monotonic() < deadline and self._stop_reason is None:
            if child.popen is not None and child.popen.poll() is not None:
                self._log(f"router exited ({describe_exit(child.popen.returncode)}) on start-up")
                return EXIT_FAILED
            if probe is None or _accepts(probe, 0.2):
                # A non-TCP endpoint cannot be probed; a router that stays up is good enough.
                if probe is None:
                    time.sleep(min(0.5, self._options.router_ready_timeout_s))
                self._log(f"router listening on {listen}")
                return EXIT_OK
            time.sleep(_POLL_S)
        if self._stop_reason is not None:
            return EXIT_OK
        self._log(
            f"router did not accept connections on {listen} within "
            f"{self._options.router_ready_timeout_s:g} s"
        )
        return EXIT_FAILED

    def _spawn(self, child: _Child) -> bool:
        env = self._child_env(child.spec)
        try:
            # start_new_session: the child leads its own process group, out of reach of the
            # terminal's Ctrl-C, and signalling the group also reaches its own subprocesses.
            popen = subprocess.Popen(
                child.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            self._log(f"cannot start {child.name}: {exc.strerror} ({child.command[0]})")
            child.done = True
            return False
        child.popen, child.respawn_at = popen, None
        child.reader = self._output.follow(child.name, popen)
        self._log(f"started {child.name} (pid {popen.pid})")
        return True

    def _child_env(self, node: NodeSpec | None) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"  # lines reach the prefixer as they are printed
        env[ROUTER_ENV] = self._router.connect_endpoint
        # The nodes import vla_runtime from wherever this launcher did, e.g. a source checkout
        # put on sys.path by hand. An installed package is already on the interpreter's path;
        # adding site-packages to PYTHONPATH would put it ahead of the standard library.
        package_root = Path(vla_runtime.__file__).resolve().parents[1]
        installed = {Path(sysconfig.get_path(n)).resolve() for n in ("purelib", "platlib")}
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if package_root not in installed and str(package_root) not in paths:
            env["PYTHONPATH"] = os.pathsep.join([str(package_root), *paths])
        env.update(self._options.extra_env)
        if node is not None:
            env.update(node.env)
        return env

    # ----------------------------------------------------------------------------- supervision

    def _supervise(self, started: float) -> int:
        duration = self._options.duration_s
        deadline = None if duration is None else started + duration
        while True:
            if self._stop_reason is not None:
                self._log(f"{self._stop_reason}: shutting down")
                return EXIT_OK
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                self._log(f"duration of {duration:g} s elapsed: shutting down")
                return EXIT_OK
            router = self._router_child
            if router is not None and router.popen is not None and router.popen.poll() is not None:
                self._log(
                    f"router exited ({describe_exit(router.popen.returncode)}): shutting down"
                )
                return EXIT_FAILED
            for child in self._children:
                code = self._check_child(child, now)
                if code is not None:
                    return code
            if all(child.done for child in self._children):
                failed = [c.name for c in self._children if c.last_returncode not in (0, None)]
                if failed:
                    self._log(f"all nodes have exited; failed: {', '.join(failed)}")
                    return EXIT_FAILED
                self._log("all nodes have exited")
                return EXIT_OK
            time.sleep(_POLL_S)

    def _check_child(self, child: _Child, now: float) -> int | None:
        """Handle one node's exit or due respawn; return an exit code to stop the graph."""
        if child.respawn_at is not None and now >= child.respawn_at and not self._spawn(child):
            return None
        if child.popen is None or child.done or child.respawn_at is not None:
            return None
        returncode = child.popen.poll()
        if returncode is None:
            return None
        child.last_returncode = returncode
        spec = child.spec
        assert spec is not None
        how = describe_exit(returncode)
        if spec.critical:
            child.done = True
            self._log(f"critical node {child.name} exited ({how}): shutting down")
            return EXIT_FAILED
        if not spec.respawn:
            child.done = True
            self._log(f"{child.name} exited ({how})")
            return None
        child.exits.append(now)
        while child.exits and now - child.exits[0] > _RESPAWN_WINDOW_S:
            child.exits.popleft()
        limit = self._options.max_respawns_per_minute
        if len(child.exits) > limit:
            child.done = True
            self._log(
                f"{child.name} exited ({how}) {len(child.exits)} times within "
                f"{_RESPAWN_WINDOW_S:g} s; not respawning it again (limit {limit} per minute)"
            )
            return None
        child.respawn_at = now + spec.respawn_delay_s
        self._log(f"{child.name} exited ({how}); respawning in {spec.respawn_delay_s:g} s")
        return None

    # -------------------------------------------------------------------------------- shutdown

    def _shutdown(self) -> None:
        begun = time.monotonic()
        for child in self._children:
            child.respawn_at = None
        nodes = [c for c in self._children if c.running]
        options = self._options
        self._stop_group(nodes, options.sigint_timeout_s, options.sigterm_timeout_s)
        router = self._router_child
        if router is not None and router.running:
            self._stop_group([router], options.router_stop_timeout_s, 0.0)
        self._drain_readers()
        self._log(f"all processes stopped in {time.monotonic() - begun:.1f} s")

    def _stop_group(self, children: list[_Child], sigint_s: float, sigterm_s: float) -> None:
        """SIGINT, then SIGTERM after `sigint_s`, then SIGKILL after another `sigterm_s`."""
        note = ""
        for signum, timeout_s in (
            (signal.SIGINT, sigint_s),
            (signal.SIGTERM, sigterm_s),
            (signal.SIGKILL, None),
        ):
            alive = [c for c in children if c.running]
            if not alive:
                return
            if note:
                names = ", ".join(c.name for c in alive)
                self._log(f"{names} {note}; sending {signum.name}")
            for child in alive:
                _signal_group(child, signum)
            if timeout_s is None:
                for child in alive:
                    assert child.popen is not None
                    try:
                        child.popen.wait(timeout=1.0)
                    except subprocess.TimeoutExpired:
                        # Only a process stuck in the kernel (uninterruptible I/O) outlives this.
                        self._log(f"{child.name} (pid {child.popen.pid}) survived SIGKILL")
                return
            self._escalate = False
            until = time.monotonic() + timeout_s
            while time.monotonic() < until and not self._escalate:
                if not any(c.running for c in children):
                    return
                time.sleep(_POLL_S / 2)
            note = (
                "still running at a second stop request"
                if self._escalate
                else f"did not stop within {timeout_s:g} s of {signum.name}"
            )

    def _drain_readers(self) -> None:
        deadline = time.monotonic() + 0.3
        for child in [*self._children, *([self._router_child] if self._router_child else [])]:
            if child.reader is None:
                continue
            child.reader.join(max(0.0, deadline - time.monotonic()))
            if child.reader.is_alive():
                # A grandchild outlived its parent and still holds the output pipe.
                _signal_group(child, signal.SIGKILL, leader_exited=True)

    # ----------------------------------------------------------------------------------- output

    def _log(self, message: str) -> None:
        self._output.log(LAUNCH_PREFIX, message)

    # ---------------------------------------------------------------------------------- signals

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}  # signal.signal only works in the main thread; stop via request_stop

        def handle(signum: int, _frame: FrameType | None) -> None:
            self.request_stop(f"received {signal.Signals(signum).name}")

        previous: dict[int, Any] = {}
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, handle)
        return previous


def describe_exit(returncode: int) -> str:
    """Say how a process ended: `exit code 3` or `signal SIGKILL`."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def _signal_group(child: _Child, signum: int, *, leader_exited: bool = False) -> None:
    popen = child.popen
    if popen is None or (popen.poll() is not None and not leader_exited):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signum)


def _tcp_probe_address(endpoint: str) -> tuple[str, int] | None:
    """Return (host, port) to probe for a tcp/tls endpoint, None for other protocols."""
    protocol, _, address = endpoint.partition("/")
    address = re.split(r"[?#]", address, maxsplit=1)[0]
    match = re.fullmatch(r"\[?([^\]]+?)\]?:(\d+)", address)
    if protocol not in ("tcp", "tls") or match is None:
        return None
    return match.group(1), int(match.group(2))


def _accepts(address: tuple[str, int], timeout_s: float) -> bool:
    try:
        with socket.create_connection(address, timeout=timeout_s):
            return True
    except OSError:
        return False


# -------------------------------------------------------------------------------------- CLI


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `launch` arguments to a parser (the `vla-runtime launch` subcommand).

    Launch arguments (`name:=value`) go after the graph and after any options.
    """
    parser.add_argument("graph", metavar="NAME|PATH", help="graph name in config/graphs or path")
    parser.add_argument(
        "launch_arguments",
        nargs="*",
        metavar="NAME:=VALUE",
        help="launch arguments the graph declares, like ros2 launch (e.g. embodiment:=so100)",
    )
    parser.add_argument(
        "--duration", type=float, metavar="S", help="stop cleanly after S seconds (exit 0)"
    )
    parser.add_argument(
        "--no-router",
        action="store_true",
        help="do not start a Zenoh router; the nodes connect to one already running",
    )
    parser.add_argument(
        "--router-listen",
        metavar="ENDPOINT",
        help="router endpoint (default: the graph's router.listen, tcp/127.0.0.1:7447)",
    )
    parser.add_argument(
        "--show-args", action="store_true", help="list the graph's launch arguments and exit"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print each process's command line and exit"
    )


def parse_launch_arguments(items: list[str]) -> dict[str, str]:
    """Parse `name:=value` items into a dict.

    Raises:
        ValueError: an item lacks `:=`.
    """
    values = {}
    for item in items:
        name, separator, value = item.partition(":=")
        if not separator or not name:
            raise ValueError(f"launch argument {item!r} is not NAME:=VALUE")
        values[name] = value
    return values


def run_launch(args: argparse.Namespace) -> int:
    """Run `vla-runtime launch` from parsed arguments; return the process exit code."""
    try:
        if getattr(args, "show_args", False):
            # Before load_graph: a required argument must be listable without being given.
            return _show_arguments(graph_arguments(args.graph))
        overrides = parse_launch_arguments(list(getattr(args, "launch_arguments", None) or []))
        graph = load_graph(args.graph, overrides)
        options = LaunchOptions(
            duration_s=getattr(args, "duration", None),
            start_router=not getattr(args, "no_router", False),
            router_listen=getattr(args, "router_listen", None),
            colour=sys.stdout.isatty() and "NO_COLOR" not in os.environ,
        )
        if options.router_listen is not None:
            RouterSpec(listen=options.router_listen)
    except GraphError as error:
        # A bad --router-listen has no file; say which option to change instead.
        text = f"--router-listen: {error.message}" if error.key == "listen" else str(error)
        print(f"vla-runtime launch: error: {text}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, OSError) as error:  # bad option values; no config directory
        print(f"vla-runtime launch: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if getattr(args, "dry_run", False):
        return _dry_run(graph, options)
    return Launcher(graph, options).run()


def _show_arguments(arguments: tuple[LaunchArgument, ...]) -> int:
    for argument in arguments:
        default = "required" if argument.default is None else f"default: {argument.default}"
        description = f": {argument.description}" if argument.description else ""
        print(f"{argument.name} ({default}){description}")
    if not arguments:
        print("this graph declares no launch arguments")
    return EXIT_OK


def _dry_run(graph: GraphSpec, options: LaunchOptions) -> int:
    import shlex

    if graph.router.enabled and options.start_router:
        print(shlex.join(router_command(options.router_listen or graph.router.listen)))
    for node in graph.nodes:
        print(shlex.join(node_command(node, python=options.python)))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point for `python -m vla_runtime.launch.launcher GRAPH [NAME:=VALUE ...]`."""
    parser = argparse.ArgumentParser(prog="vla-runtime launch", description=__doc__.split("\n")[0])
    add_launch_arguments(parser)
    return run_launch(parser.parse_intermixed_args(argv))


if __name__ == "__main__":
    sys.exit(main())
