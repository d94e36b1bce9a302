"""`vla-runtime record|report|top`: record a graph to MCAP, report on it, watch it live."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

Handler = Callable[[argparse.Namespace], int]


def record(args: argparse.Namespace) -> int:
    from vla_runtime.profiling.recorder import RecordError, RecordOptions
    from vla_runtime.profiling.recorder import record as record_graph

    output = Path(args.output or datetime.now().strftime("recording_%Y%m%d_%H%M%S.mcap"))
    stop = threading.Event()
    # `kill`/a supervisor's SIGTERM stops like Ctrl-C does: the file is finished either way.
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    options = RecordOptions(output, args.topics or (), args.duration, stop=stop)
    what = ", ".join(options.topics) if options.topics else "every topic"
    until = f"for {args.duration:g} s" if args.duration else "until Ctrl-C"
    print(f"recording {what} to {output} {until}", flush=True)
    try:
        counts = record_graph(options, log=lambda line: print(line, flush=True))
    except RecordError as exc:
        print(f"vla-runtime: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    total = sum(count for count, _ in counts.values())
    print(f"wrote {output}: {total} messages on {len(counts)} topics", flush=True)
    for topic, (count, size) in sorted(counts.items()):
        print(f"  {topic}: {count} messages, {size / 1e6:.2f} MB")
    return 0


def report(args: argparse.Namespace) -> int:
    from vla_runtime.profiling.report import write_report

    source = Path(args.recording)
    if not source.is_file():
        print(f"vla-runtime: no recording at {source}", file=sys.stderr)
        return 1
    output = Path(args.output) if args.output else source.with_suffix(".html")
    started = time.monotonic()
    try:
        _, text = write_report(source, output)
    except OSError as exc:
        print(f"vla-runtime: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(text, end="")
    print(f"\nwrote {output} in {time.monotonic() - started:.1f} s", flush=True)
    return 0


def top(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from vla_runtime import ros
    from vla_runtime.profiling.top import DiagnosticsBoard
    from vla_runtime.ros.interfaces import get_message

    board = DiagnosticsBoard()
    console = Console()
    ros.init(args=[])
    node = ros.Node(f"vla_runtime_top_{os.getpid()}")
    try:
        array_type = get_message("diagnostic_msgs/msg/DiagnosticArray")
        node.create_subscription(array_type, "/diagnostics", board.update, 100)
        if args.once:
            # Statuses come at 1 Hz: listen long enough to hear every publisher once.
            _spin_for(ros, node, args.wait)
            console.print(board.render())
            return 0
        with Live(board.render(), console=console, auto_refresh=False) as live:
            while ros.ok():
                _spin_for(ros, node, 1.0)
                live.update(board.render(), refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        ros.try_shutdown()
    return 0


def _spin_for(ros: Any, node: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while ros.ok() and (left := deadline - time.monotonic()) > 0:
        ros.spin_once(node, timeout_sec=min(0.1, left))


def register(commands: Any, handlers: dict[str, Handler]) -> None:
    sub = commands.add_parser(
        "record",
        help="record the topics of a running graph to MCAP (ROS 2 profile)",
        description="Record every topic (or --topics) as raw CDR to an MCAP file readable by "
        "Foxglove, ros2 bag, rosbags and mcap-ros2-support. Topics appearing later are picked "
        "up. Ctrl-C or --duration stops and finishes the file.",
    )
    sub.add_argument("-o", "--output", help="MCAP file (default recording_<time>.mcap)")
    sub.add_argument("--topics", nargs="+", metavar="TOPIC", help="only these topics")
    sub.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    handlers["record"] = record

    sub = commands.add_parser(
        "report",
        help="HTML latency report (plots + summary) from an MCAP recording",
        description="Per-stage latency CDFs, per-chunk timeline, loop period histogram, "
        "iterations and changed fraction, deadline events, and a text summary (also printed). "
        "A truncated recording is reported as far as it could be read.",
    )
    sub.add_argument("recording", help="the .mcap file")
    sub.add_argument("-o", "--output", help="HTML file (default: the recording's name .html)")
    handlers["report"] = report

    sub = commands.add_parser(
        "top",
        help="live table of per-stage latency, deadlines and node status from /diagnostics",
    )
    sub.add_argument("--once", action="store_true", help="print one snapshot and exit")
    sub.add_argument(
        "--wait", type=float, default=2.5, help="with --once: seconds to listen first"
    )
    handlers["top"] = top
