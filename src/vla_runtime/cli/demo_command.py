"""`vla-runtime demo`: the main job. The simulated arm under a policy, watched, recorded, reported.

    vla-runtime demo                             # so100_sim for 60 s, headless
    vla-runtime demo --duration 20 --policy tiny_recurrent --output runs/first
    vla-runtime demo --embodiment franka --gui

Runs the embodiment's simulated graph (`config/graphs/<embodiment>_sim.yaml`: the MuJoCo world
with its device emulator, think, policy, driver, teleop and latency monitor) on a private router,
hands the arm to the policy once chunks flow (/robot/engage_policy, as an operator would), and
shows a live status: time, the world's task state (`sim: <embodiment>` on /diagnostics), the
driver's mode, chunks, and per-stage p50/p99 from the latency monitor. It records the run to
MCAP (`vla-runtime record`, camera images left out unless --record-images: camera_info carries
the same capture stamps), then writes the HTML latency report (`vla-runtime report`) and prints
its path and a one-line result. The graph's output goes to launch.log beside them.

With random weights (a policy file whose `model` is a named config such as `tiny`) the chunks
are noise: the driver's safety envelope rejects the ones outside the joint limits, the arm moves
little if at all, and the task fails. The status says so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

Handler = Callable[[argparse.Namespace], int]

DEFAULT_DURATION_S = 60.0
TRAINED_POLICY, RANDOM_POLICY = "tiny_so100", "tiny_recurrent"
# Topics recorded besides camera_info: everything the report reads, no images.
_RECORDED = (
    "/diagnostics",
    "/policy/action_chunk",
    "/policy/depth_tokens",
    "/think/scene",
    "/robot/joint_states",
    "/robot/joint_commands",
    "/robot/mode",
    "/sim/joint_states",
    "/teleop/joint_targets",
)
# The stages of the one-line status (the live table shows them all).
_SUMMARY_STAGES = ("chunk_age", "policy_total", "driver_period", "reaction")
_ENGAGE_RETRY_S = 2.0
_STOP_TIMEOUT_S = 10.0


def register(commands: Any, handlers: dict[str, Handler]) -> None:
    """Add `demo` to the `vla-runtime` subparsers."""
    sub = commands.add_parser(
        "demo",
        help="the main job: a policy drives the simulated arm; live status, MCAP, HTML report",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument(
        "--embodiment", default="so100", help="so100 (default), yam_bimanual or franka"
    )
    sub.add_argument(
        "--policy",
        help=f"a name in config/policies/ or a path to a policy parameter file (default: "
        f"{TRAINED_POLICY} when its file exists, else {RANDOM_POLICY}, random weights)",
    )
    sub.add_argument(
        "--duration",
        type=float,
        default=DEFAULT_DURATION_S,
        metavar="S",
        help=f"run for S seconds (default {DEFAULT_DURATION_S:g})",
    )
    sub.add_argument(
        "--output",
        metavar="DIR",
        help="run.mcap, report.html, launch.log (default out/demo/<time>)",
    )
    sub.add_argument(
        "--gui",
        action="store_true",
        help="show the camera and status in a window (rerun when installed, else OpenCV)",
    )
    sub.add_argument(
        "--deadlines",
        metavar="FILE",
        help="latency_monitor deadline file (default config/deadlines/<embodiment>.yaml)",
    )
    sub.add_argument("--graph", help="run this graph instead of <embodiment>_sim (name or path)")
    sub.add_argument(
        "--record-images", action="store_true", help="record camera images too (large files)"
    )
    sub.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="a graph argument (repeatable), e.g. --arg camera_rate_hz:=5; "
        "`vla-runtime launch GRAPH --show-args` lists them",
    )
    handlers["demo"] = run


# --------------------------------------------------------------------------------------------
# What the status shows (no middleware: fed decoded messages, so it is testable alone)


@dataclass
class DemoState:
    """Everything the live status and the final result line are made of."""

    embodiment: str
    policy: str
    random_weights: bool
    duration_s: float
    started_s: float = field(default_factory=time.monotonic)
    chunks: int = 0
    mode: str = ""
    hold_reason: str = ""
    engaged_at_s: float | None = None
    engage_message: str = ""
    success: bool = False
    success_at_s: float | None = None
    target_distance_m: str = ""
    chunk_counts: dict[str, str] = field(default_factory=dict)
    stages: dict[str, tuple[str, str]] = field(default_factory=dict)
    # rule -> (state, value, limit) from latency_monitor/deadline/<rule>
    deadlines: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    def elapsed_s(self, now_s: float | None = None) -> float:
        return (time.monotonic() if now_s is None else now_s) - self.started_s

    def on_diagnostics(self, array: Any, now_s: float | None = None) -> None:
        from vla_runtime.profiling.top import DEADLINE_PREFIX, STAGE_PREFIX

        for status in getattr(array, "status", ()):
            name = str(status.name)
            values = {str(kv.key): str(kv.value) for kv in status.values}
            if name == f"sim: {self.embodiment}":
                self.target_distance_m = values.get("target_distance_m", "")
                if values.get("success") == "true" and not self.success:
                    self.success, self.success_at_s = True, self.elapsed_s(now_s)
            elif name.startswith("driver: "):
                self.mode = values.get("mode", self.mode)
                self.hold_reason = values.get("hold_reason", "")
                self.chunk_counts = {
                    k[len("chunks_") :]: v for k, v in values.items() if k.startswith("chunks_")
                }
            elif name.startswith(STAGE_PREFIX):
                stage = name[len(STAGE_PREFIX) :]
                self.stages[stage] = (values.get("p50_ms", ""), values.get("p99_ms", ""))
            elif name.startswith(DEADLINE_PREFIX):
                self.deadlines[name[len(DEADLINE_PREFIX) :]] = (
                    values.get("state", ""),
                    values.get("value", ""),
                    values.get("limit", ""),
                )

    def ready_to_engage(self) -> bool:
        """Chunks flow, the arm is up and no deadline is breached: what an operator waits for.

        A HOLD the latency monitor engaged while the graph started (every process loading at
        once) is left once its condition has cleared, as an operator would.
        """
        return (
            self.engaged_at_s is None
            and self.chunks > 0
            and self.mode in ("IDLE", "HOLD")
            and not self.over_deadlines()
        )

    def over_deadlines(self) -> list[str]:
        """Breached rules whose value is still over the limit (a cleared one waits for us)."""
        over = []
        for rule, (state, value, limit) in self.deadlines.items():
            try:
                still = float(value) > float(limit)
            except ValueError:
                still = True
            if state == "breached" and still:
                over.append(rule)
        return sorted(over)

    def result_line(self) -> str:
        """One line: did the arm do the task, and when."""
        if self.success and self.success_at_s is not None:
            after = ""
            if self.engaged_at_s is not None:
                after = f", {self.success_at_s - self.engaged_at_s:.1f} s after engaging"
            return f"result: success: yes, after {self.success_at_s:.1f} s{after}"
        why = " (random weights: expected)" if self.random_weights else ""
        if self.engaged_at_s is None:
            rejected = {k: v for k, v in self.chunk_counts.items() if k != "accepted"}
            if self.chunks and rejected and self.chunk_counts.get("accepted", "0") == "0":
                counts = ", ".join(f"{k} {v}" for k, v in sorted(rejected.items()))
                reason = f"the driver rejected every chunk ({counts})"
                return (
                    f"result: success: no, task not done in {self.duration_s:g} s ({reason}){why}"
                )
            reason = self.engage_message or (
                f"deadlines over their limits: {', '.join(self.over_deadlines())}"
                if self.over_deadlines()
                else f"driver {self.mode or 'not started'}, {self.chunks} chunks"
            )
            why = f" (the policy was never engaged: {reason})"
        return f"result: success: no, task not done in {self.duration_s:g} s{why}"

    def summary_line(self) -> str:
        """The status in one plain line (logs, pipes)."""
        stages = " ".join(
            f"{stage} {_ms(p50)}/{_ms(p99)}"
            for stage, (p50, p99) in sorted(self.stages.items())
            if stage in _SUMMARY_STAGES
        )
        return (
            f"t={self.elapsed_s():.0f}s mode={self.mode or '-'} chunks={self.chunks} "
            f"success={'yes' if self.success else 'no'} p50/p99 ms: {stages or '-'}"
        )

    def render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        elapsed = min(self.elapsed_s(), self.duration_s)
        head = Table.grid(padding=(0, 2))
        head.add_column(style="bold")
        head.add_column()
        weights = Text(
            " random weights: noise chunks, the driver rejects those outside the joint limits;"
            " the task will fail",
            style="yellow",
        )
        head.add_row("time", f"{elapsed:5.1f} / {self.duration_s:g} s")
        head.add_row("policy", Text(self.policy).append(weights if self.random_weights else ""))
        mode = Text(self.mode or "starting", style="red" if self.mode == "HOLD" else "")
        if self.hold_reason:
            mode.append(f" ({self.hold_reason})")
        if self.engaged_at_s is None and self.engage_message:
            mode.append(f"  engage: {self.engage_message}", style="dim")
        head.add_row("arm", mode)
        task = Text("success", style="bold green") if self.success else Text("not yet")
        if self.success and self.success_at_s is not None:
            task.append(f" after {self.success_at_s:.1f} s")
        if self.target_distance_m:
            task.append(f"  (red cube {self.target_distance_m} m from the target)", style="dim")
        head.add_row("task", task)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.chunk_counts.items()))
        head.add_row(
            "chunks", f"{self.chunks} received" + (f"; driver: {counts}" if counts else "")
        )
        if held := self.over_deadlines():
            head.add_row("deadlines", Text("breached: " + ", ".join(held), style="red"))
        stages = Table(title="latency (latency_monitor)", title_justify="left")
        stages.add_column("stage")
        stages.add_column("p50 ms", justify="right")
        stages.add_column("p99 ms", justify="right")
        for stage, (p50, p99) in sorted(self.stages.items()):
            stages.add_row(stage, _ms(p50), _ms(p99))
        if not self.stages:
            stages.add_row("(waiting for the latency monitor)", "", "")
        return Group(head, stages)


def _ms(text: str) -> str:
    try:
        return f"{float(text):.1f}"
    except ValueError:
        return text


# --------------------------------------------------------------------------------------------
# Choosing what runs


def default_policy(embodiment: str) -> str:
    """The trained SO100 policy when its files are there, else the random-weight one."""
    from vla_runtime.resources import share_path

    trained = share_path("config") / "policies" / f"{TRAINED_POLICY}.yaml"
    return TRAINED_POLICY if embodiment == "so100" and trained.is_file() else RANDOM_POLICY


def policy_file(policy: str) -> Path:
    """The parameter file of a policy given by name (config/policies/) or path."""
    from vla_runtime.launch.graph import config_dir

    if os.sep in policy or policy.endswith((".yaml", ".yml")):
        return Path(policy).expanduser()
    return config_dir() / "policies" / f"{policy}.yaml"


def has_random_weights(path: Path) -> bool:
    """True when the policy file builds a named config (random weights), not a weights dir."""
    from vla_runtime.policy.model.config import PRESETS  # named configs: random weights

    try:
        with path.open(encoding="utf-8") as stream:
            document = yaml.safe_load(stream) or {}
    except (OSError, yaml.YAMLError):
        return False
    for section in document.values() if isinstance(document, dict) else ():
        parameters = section.get("ros__parameters", {}) if isinstance(section, dict) else {}
        if "model" in parameters:
            return str(parameters["model"]) in PRESETS
    return True  # policy_node's default model is the named `tiny` config


def display_problem() -> str:
    """Why no window can open here ('' when one can)."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return "no display (DISPLAY and WAYLAND_DISPLAY are unset); run without --gui"
    return ""


# --------------------------------------------------------------------------------------------
# Running it


def run(args: argparse.Namespace) -> int:
    from vla_runtime.launch.graph import GraphError, graph_arguments, policy_argument

    if args.duration <= 0:
        print("vla-runtime demo: --duration must be > 0", file=sys.stderr)
        return 2
    if args.gui and (problem := display_problem()):
        print(f"vla-runtime demo: --gui: {problem}", file=sys.stderr)
        return 2
    graph = args.graph or f"{args.embodiment}_sim"
    policy = args.policy or default_policy(args.embodiment)
    try:
        declared = {a.name for a in graph_arguments(graph)}
        overrides = {"policy": policy_argument(policy)} if "policy" in declared else {}
        if args.deadlines:
            if "deadlines" not in declared:
                raise GraphError(f"graph {graph} takes no deadlines argument")
            if not Path(args.deadlines).is_file():
                raise GraphError(f"--deadlines {args.deadlines}: no such file")
            overrides["deadlines"] = str(Path(args.deadlines).resolve())
        for item in args.arg:
            name, sep, value = item.partition(":=")
            if not sep or name not in declared:
                raise GraphError(
                    f"--arg {item!r}: expected NAME:=VALUE with NAME one of {sorted(declared)}"
                )
            overrides[name] = value
    except GraphError as exc:
        print(f"vla-runtime demo: {exc}", file=sys.stderr)
        return 2
    if not policy_file(policy).is_file():
        print(f"vla-runtime demo: no policy file {policy_file(policy)}", file=sys.stderr)
        return 2
    output = Path(args.output or Path("out/demo") / datetime.now().strftime("%Y%m%d_%H%M%S"))
    output.mkdir(parents=True, exist_ok=True)
    links = Path(tempfile.mkdtemp(prefix="vla_runtime_demo_"))
    # Device links (the emulated buses) in a private folder: two demos never share one.
    overrides |= {name: str(links / name) for name in declared if name.endswith("_link")}
    state = DemoState(
        args.embodiment, policy, has_random_weights(policy_file(policy)), args.duration
    )
    try:
        return _run_graph(args, graph, overrides, output, state)
    finally:
        shutil.rmtree(links, ignore_errors=True)


def _run_graph(
    args: argparse.Namespace,
    graph: str,
    overrides: dict[str, str],
    output: Path,
    state: DemoState,
) -> int:
    from rich.console import Console

    console = Console()
    endpoint = _free_endpoint()
    env = dict(os.environ, VLA_RUNTIME_ROUTER=endpoint, PYTHONUNBUFFERED="1")
    os.environ["VLA_RUNTIME_ROUTER"] = endpoint  # this process's own node
    python = [sys.executable, "-m", "vla_runtime.cli"]
    launch = [*python, "launch", graph, "--router-listen", endpoint]
    launch += [f"{name}:={value}" for name, value in overrides.items()]
    log_path, mcap, html = output / "launch.log", output / "run.mcap", output / "report.html"
    console.print(
        f"[bold]vla-runtime demo[/]: graph {graph}, policy {state.policy}, {args.duration:g} s; "
        f"graph output in {log_path}"
    )
    with log_path.open("w", encoding="utf-8") as log:
        # Own sessions: the terminal's Ctrl-C reaches only this process, which then stops the
        # recorder (the file is finished) before the graph, in that order.
        launcher = subprocess.Popen(
            launch, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        recorder: subprocess.Popen[bytes] | None = None
        try:
            topics = [*_RECORDED, *_camera_topics(state.embodiment, args.record_images)]
            recorder = subprocess.Popen(
                [*python, "record", "-o", str(mcap), "--topics", *topics],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            _wait_for_router(endpoint, launcher)
            graph_code = _watch(args, state, console, launcher)
        finally:
            if recorder is not None:
                _stop(recorder, signal.SIGTERM)
            launcher_code = _stop(launcher, signal.SIGINT)
    print(state.summary_line(), flush=True)
    if graph_code is not None and graph_code != 0:
        console.print(f"[red]the graph stopped early (exit {graph_code}); see {log_path}[/]")
    try:
        from vla_runtime.profiling.report import write_report

        write_report(mcap, html)
    except Exception as exc:  # a truncated or empty recording: say so, keep the result line
        console.print(f"[red]no report: {exc}[/]")
    else:
        print(f"report: {html.resolve()}", flush=True)
    print(state.result_line(), flush=True)
    return 1 if graph_code not in (None, 0) or launcher_code not in (0, -signal.SIGINT) else 0


def _wait_for_router(endpoint: str, launcher: subprocess.Popen[bytes]) -> None:
    """Until the launcher's router accepts connections (our node then finds the graph at once)."""
    import socket

    host, _, port = endpoint.removeprefix("tcp/").rpartition(":")
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    while time.monotonic() < deadline and launcher.poll() is None:
        with socket.socket() as sock:
            if sock.connect_ex((host, int(port))) == 0:
                return
        time.sleep(0.05)


def _free_endpoint() -> str:
    """A loopback endpoint nothing listens on: a private router, beside any other graph."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp/127.0.0.1:{sock.getsockname()[1]}"


def _camera_topics(embodiment: str, images: bool) -> list[str]:
    from vla_runtime.policy.transforms import load_transform_config

    cameras = load_transform_config(embodiment).cameras
    kinds = ("camera_info", "image_raw") if images else ("camera_info",)
    return [f"/cameras/{camera}/{kind}" for camera in cameras for kind in kinds]


def _watch(
    args: argparse.Namespace, state: DemoState, console: Any, launcher: subprocess.Popen[bytes]
) -> int | None:
    """Spin a node watching the graph until the duration ends; None, or the graph's exit code."""
    from rich.live import Live

    from vla_runtime import ros
    from vla_runtime.ros.interfaces import get_message, get_service

    trigger = get_service("std_srvs/srv/Trigger")
    ros.init(args=[])
    node = ros.Node(f"vla_runtime_demo_{os.getpid()}")
    lock = threading.Lock()
    gui = _Gui(state.embodiment) if args.gui else None

    def on_chunk(_msg: Any) -> None:
        with lock:
            state.chunks += 1

    def on_diagnostics(msg: Any) -> None:
        with lock:
            state.on_diagnostics(msg)

    node.create_subscription(
        get_message("diagnostic_msgs/msg/DiagnosticArray"), "/diagnostics", on_diagnostics, 50
    )
    node.create_subscription(
        get_message("trajectory_msgs/msg/JointTrajectory"), "/policy/action_chunk", on_chunk, 10
    )
    if gui is not None:
        gui.subscribe(node)
    engage = node.create_client(trigger, "/robot/engage_policy")
    pending: Any = None
    next_engage_s = 0.0
    next_line_s = state.started_s + 5.0
    code: int | None = None
    live = Live(state.render(), console=console, auto_refresh=False, transient=False)
    if console.is_terminal:
        live.start()
    try:
        while state.elapsed_s() < args.duration:
            ros.spin_once(node, timeout_sec=0.05)
            now = time.monotonic()
            if (code := launcher.poll()) is not None:
                break
            with lock:
                ready = state.ready_to_engage()
            if ready and pending is None and now >= next_engage_s and engage.service_is_ready():
                pending = engage.call_async(trigger.Request())
            if pending is not None and pending.done():
                response = pending.result()
                with lock:
                    if response is not None and response.success:
                        state.engaged_at_s = state.elapsed_s()
                    else:
                        state.engage_message = response.message if response else "no answer"
                pending, next_engage_s = None, now + _ENGAGE_RETRY_S
            with lock:
                if console.is_terminal:
                    live.update(state.render(), refresh=True)
                elif now >= next_line_s:
                    print(state.summary_line(), flush=True)
                    next_line_s = now + 5.0
                if gui is not None:
                    gui.show(state)
    except KeyboardInterrupt:
        console.print("stopped by Ctrl-C")
    finally:
        if console.is_terminal:
            live.stop()
        if gui is not None:
            gui.close()
        node.destroy_node()
        ros.try_shutdown()
    return code


def _stop(process: subprocess.Popen[bytes], signum: int) -> int:
    if process.poll() is None:
        process.send_signal(signum)
    try:
        return process.wait(timeout=_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


class _Gui:
    """The first camera and the status line in a window: rerun when installed, else OpenCV."""

    def __init__(self, embodiment: str) -> None:
        from vla_runtime.policy.transforms import load_transform_config

        self.camera = load_transform_config(embodiment).cameras[0]
        self.image: Any = None
        try:
            import rerun

            rerun.init("vla_runtime demo", spawn=True)
            self.rerun: Any = rerun
        except ImportError:
            self.rerun = None
            import cv2

            try:
                cv2.namedWindow("vla-runtime demo", cv2.WINDOW_NORMAL)
            except cv2.error as exc:
                raise SystemExit(
                    f"vla-runtime demo: --gui: OpenCV cannot open a window ({exc.msg.strip()}); "
                    "install rerun-sdk or a GUI build of opencv-python, or run without --gui"
                ) from exc

    def subscribe(self, node: Any) -> None:
        from vla_runtime import ros
        from vla_runtime.ros import convert
        from vla_runtime.ros.interfaces import get_message

        def on_image(msg: Any) -> None:
            self.image = convert.image_to_numpy(msg)

        node.create_subscription(
            get_message("sensor_msgs/msg/Image"),
            f"/cameras/{self.camera}/image_raw",
            on_image,
            ros.qos_profile_sensor_data,
        )

    def show(self, state: DemoState) -> None:
        if self.image is None:
            return
        if self.rerun is not None:
            self.rerun.log(f"cameras/{self.camera}", self.rerun.Image(self.image))
            self.rerun.log("status", self.rerun.TextLog(state.summary_line()))
            self.image = None
            return
        import cv2

        frame = cv2.cvtColor(self.image, cv2.COLOR_RGB2BGR)
        text = f"{state.elapsed_s():.0f}s {state.mode} chunks {state.chunks}"
        text += " SUCCESS" if state.success else ""
        cv2.putText(frame, text, (5, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 255, 0), 1)
        cv2.imshow("vla-runtime demo", frame)
        cv2.waitKey(1)

    def close(self) -> None:
        if self.rerun is None:
            import cv2

            cv2.destroyAllWindows()
