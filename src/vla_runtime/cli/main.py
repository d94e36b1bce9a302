"""`vla-runtime`: run and inspect vla_runtime graphs (mirrors the `ros2` CLI where they overlap).

Every subcommand works on the embedded zenoh backend, so it needs no ROS 2 install; on a ROS 2
machine running rmw_zenoh_cpp it sees the same graph as `ros2`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from vla_runtime import __version__


def _parser() -> tuple[argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], int]]]:
    from vla_runtime.cli import (
        demo_command,
        graph_commands,
        policy_commands,
        profiling_commands,
        router,
        sim_command,
        train_command,
    )

    parser = argparse.ArgumentParser(
        prog="vla-runtime",
        description="Real-time ROS 2 runtime for vision-language-action robot policies.",
        epilog="Examples:\n"
        "  vla-runtime router                       # discovery hub on tcp/127.0.0.1:7447\n"
        "  vla-runtime launch demo_talker_listener  # a graph from config/graphs/\n"
        "  vla-runtime topic list\n"
        "  vla-runtime topic echo /chatter\n"
        '  vla-runtime topic pub --rate 2 /chatter std_msgs/msg/String "{data: hello}"\n'
        "  vla-runtime service call /robot/hold std_srvs/srv/Trigger\n"
        "  vla-runtime calibrate so100 --port /dev/ttyACM0 --output so100_follower.yaml\n"
        "  vla-runtime policy bench --config tiny --head recurrent\n"
        "  vla-runtime record -o run.mcap --duration 60  # then: vla-runtime report run.mcap\n"
        "  vla-runtime top\n"
        "  vla-runtime sim so100 --servo-bus      # simulated world, cameras, emulated bus\n"
        "Environment: ROS_DOMAIN_ID, VLA_RUNTIME_ROUTER, ZENOH_SESSION_CONFIG_URI, "
        "ZENOH_ROUTER_CONFIG_URI, ZENOH_CONFIG_OVERRIDE.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vla_runtime {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {}

    sub = commands.add_parser(
        "router", help="run the Zenoh router the nodes discover each other through"
    )
    router.add_arguments(sub)
    handlers["router"] = router.run

    graph_commands.register(commands, handlers)
    policy_commands.register(commands, handlers)
    profiling_commands.register(commands, handlers)
    sim_command.register(commands, handlers)
    train_command.register(commands, handlers)
    demo_command.register(commands, handlers)

    sub = commands.add_parser(
        "calibrate", help="calibrate an arm (homing offsets, ranges, joint conventions)"
    )
    arms = sub.add_subparsers(dest="embodiment", metavar="EMBODIMENT", required=True)
    so100 = arms.add_parser(
        "so100",
        help="SO100/SO101 follower or leader (Feetech, or Dynamixel with --bus dynamixel)",
        description="Interactive: torque off, put every joint at mid-range, then sweep each "
        "joint through its range. Writes the calibration file the so100 driver reads "
        "(driver.calibration in config/embodiments/so100.yaml).",
    )
    from vla_runtime.drivers.so100 import calibrate

    calibrate.add_arguments(so100)
    so100.set_defaults(calibrate_run=calibrate.run)
    handlers["calibrate"] = lambda args: int(args.calibrate_run(args))

    try:
        from vla_runtime.launch import launcher
    except ImportError:  # pragma: no cover - only while the launcher is absent
        launcher = None  # type: ignore[assignment]
    if launcher is not None:
        sub = commands.add_parser(
            "launch",
            help="start a graph (config/graphs/NAME.yaml or a path): router + a process per node",
        )
        launcher.add_launch_arguments(sub)
        handlers["launch"] = launcher.run_launch
    return parser, handlers


def main(argv: list[str] | None = None) -> int:
    parser, handlers = _parser()
    argv = sys.argv[1:] if argv is None else argv
    # As a node of a launch graph (`vla-runtime sim` in a *_sim graph) a command gets
    # launch_ros's `--ros-args -r __node:=NAME ...` tail; its own nodes have fixed names.
    if "--ros-args" in argv:
        argv = argv[: argv.index("--ros-args")]
    args, extra = parser.parse_known_args(argv)
    # argparse cannot interleave options with `launch`'s trailing NAME:=VALUE arguments
    # (`launch g --duration 5 a:=b`): collect the ones it left over.
    if extra and getattr(args, "command", None) == "launch" and all(":=" in e for e in extra):
        args.launch_arguments = [*args.launch_arguments, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not args.command:
        parser.print_help()
        return 2
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        return 130
