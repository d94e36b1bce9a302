"""`vla-runtime sim EMBODIMENT`: the simulated world alone, on the ROS graph.

Publishes, from one thread that owns the world:

- `/cameras/<camera>/image_raw` (rgb8, sensor-data QoS) for every camera of the embodiment's
  `policy.cameras`, at `--camera-rate-hz`, stamped with the render time (the frame's capture
  time), for the `ros_topic` camera source or a policy directly;
- `/sim/joint_states` at `--state-rate-hz`: the simulated joints in `joint_names` order;
- `/diagnostics` at 1 Hz: a DiagnosticStatus `sim: <embodiment>` with the task state (object
  poses, the red cube's distance, success) and the behind-real-time count.

With `--servo-bus` the world also runs a Feetech servo-bus emulator on a pty (ids from the
embodiment's `driver.ids`) coupled to its joints: `driver_node ... -p driver.port:=<pty>` then
closes the loop through the real protocol. Without it, /sim/joint_targets is not read: the arm
holds its start pose.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import yaml

from vla_runtime import ros
from vla_runtime.ros import convert
from vla_runtime.ros.interfaces import get_message

Handler = Callable[[argparse.Namespace], int]

# Physics chunk: the world catches up with the clock this often (and couples the emulator).
_PHYSICS_PERIOD_S = 0.005


def register(commands: Any, handlers: dict[str, Handler]) -> None:
    """Add `sim` to the `vla-runtime` subparsers."""
    sub = commands.add_parser(
        "sim",
        help="run the simulated world of an embodiment (MuJoCo): cameras, joints, task state",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument("embodiment", metavar="EMBODIMENT", help="so100, yam_bimanual or franka")
    sub.add_argument("--width", type=int, default=640, help="camera width [px] (default 640)")
    sub.add_argument("--height", type=int, default=480, help="camera height [px] (default 480)")
    sub.add_argument("--camera-rate-hz", type=float, default=15.0, help="default 15")
    sub.add_argument("--state-rate-hz", type=float, default=50.0, help="default 50")
    sub.add_argument(
        "--duration", type=float, default=None, metavar="S", help="stop after S seconds"
    )
    sub.add_argument(
        "--servo-bus",
        action="store_true",
        help="run a Feetech servo-bus emulator on a pty coupled to the world (SO100)",
    )
    sub.add_argument("--link", metavar="PATH", help="with --servo-bus: symlink PATH to the pty")
    handlers["sim"] = run


def run(args: argparse.Namespace) -> int:
    # Imported here: mujoco and its GL context only for this command.
    from vla_runtime.sim.world import WorldConfig, build_world

    if args.camera_rate_hz <= 0 or args.state_rate_hz <= 0:
        print("vla-runtime sim: rates must be > 0", flush=True)
        return 2
    try:
        world = build_world(WorldConfig(args.embodiment, args.width, args.height))
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"vla-runtime sim: {exc.args[0] if exc.args else exc}", flush=True)
        return 2
    bus, coupling = _servo_bus(args, world.joint_names) if args.servo_bus else (None, None)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` ends it as cleanly as Ctrl-C
    ros.init(args=[])
    node = ros.Node("sim")
    try:
        if bus is not None:
            where = f"{args.link} -> {bus.port}" if args.link else bus.port
            print(f"servo bus (ids {' '.join(map(str, bus.ids))}) on {where}", flush=True)
        _loop(args, node, world, coupling)
    except KeyboardInterrupt:
        pass
    finally:
        world.close()
        if bus is not None:
            bus.stop()
            if args.link and os.path.islink(args.link):
                os.unlink(args.link)
        node.destroy_node()
        ros.try_shutdown()
    return 0


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _servo_bus(args: argparse.Namespace, joint_names: tuple[str, ...]) -> tuple[Any, Any]:
    from vla_runtime.drivers.emulators.servo_bus import ServoBusEmulator
    from vla_runtime.resources import resolve
    from vla_runtime.sim.coupling import ServoBusCoupling

    path = resolve("config", f"embodiments/{args.embodiment}.yaml")
    with path.open(encoding="utf-8") as stream:
        driver = yaml.safe_load(stream)["/**"]["ros__parameters"].get("driver", {})
    ids = [int(i) for i in driver.get("ids", ())]
    if len(ids) != len(joint_names):
        raise SystemExit(
            f"vla-runtime sim: --servo-bus needs driver.ids for {len(joint_names)} joints in "
            f"{path}; {args.embodiment}'s driver has none (use its own emulator)"
        )
    bus = ServoBusEmulator(ids, physics_rate_hz=None).start()
    if args.link:
        if os.path.islink(args.link):
            os.unlink(args.link)
        os.symlink(bus.port, args.link)
    return bus, ServoBusCoupling(bus, ids)


def _loop(args: argparse.Namespace, node: Any, world: Any, coupling: Any) -> None:
    from vla_runtime.nodes._diagnostics import diagnostic_array

    sensor = ros.qos_profile_sensor_data
    images = {
        camera: node.create_publisher(
            get_message("sensor_msgs/msg/Image"), f"/cameras/{camera}/image_raw", sensor
        )
        for camera in world.camera_names
    }
    states = node.create_publisher(
        get_message("sensor_msgs/msg/JointState"), "/sim/joint_states", sensor
    )
    diagnostics = node.create_publisher(
        get_message("diagnostic_msgs/msg/DiagnosticArray"), "/diagnostics", 10
    )
    print(
        f"sim {args.embodiment}: cameras {', '.join(world.camera_names)} at "
        f"{args.width}x{args.height} {args.camera_rate_hz:g} Hz; Ctrl-C to stop",
        flush=True,
    )
    for camera in world.camera_names:  # the first render creates the GL context (~0.1 s)
        world.render(camera)
    start_ns = time.monotonic_ns()
    end_ns = math.inf if args.duration is None else start_ns + args.duration * 1e9
    periods_ns = {
        "physics": round(_PHYSICS_PERIOD_S * 1e9),
        "camera": round(1e9 / args.camera_rate_hz),
        "state": round(1e9 / args.state_rate_hz),
        "diagnostics": 1_000_000_000,
    }
    due = dict.fromkeys(periods_ns, start_ns)
    frames = 0
    try:
        while (now := time.monotonic_ns()) < end_ns:
            if now >= due["physics"]:
                if coupling is not None:
                    coupling.command(world)
                world.advance(now)
                if coupling is not None:
                    coupling.report(world)
            if now >= due["camera"]:
                for camera, publisher in images.items():
                    pixels = world.render(camera)
                    stamp = time.time_ns()  # message stamps are system time (ROS time)
                    publisher.publish(
                        convert.numpy_to_image(pixels, "rgb8", stamp, f"sim/{camera}")
                    )
                frames += 1
            if now >= due["state"]:
                states.publish(
                    convert.numpy_to_joint_state(
                        world.joint_names,
                        world.joint_positions(),
                        world.joint_velocities(),
                        stamp_ns=time.time_ns(),
                    )
                )
            if now >= due["diagnostics"]:
                diagnostics.publish(
                    diagnostic_array(node, f"sim: {args.embodiment}", "mujoco", *_status(world))
                )
            for key, period in periods_ns.items():
                if now >= due[key]:
                    due[key] += period
                    if due[key] <= now:  # missed periods are skipped, not burst: newest wins
                        due[key] = now + period
            time.sleep(max(0.0, (min(due.values()) - time.monotonic_ns()) / 1e9))
    except KeyboardInterrupt:  # Ctrl-C: the summary below, then the caller cleans up
        pass
    elapsed_s = (time.monotonic_ns() - start_ns) / 1e9
    print(
        f"sim {args.embodiment}: {frames} camera frames in {elapsed_s:.1f} s, behind real time "
        f"{world.behind_real_time_count} times ({world.lag_s:.3f} s dropped)",
        flush=True,
    )


def _status(world: Any) -> tuple[str, str, dict[str, str]]:
    state = world.task_state()
    values = {
        f"{name}.position": " ".join(f"{v:.4f}" for v in pose.position)
        for name, pose in state.objects.items()
    }
    values |= {
        f"{name}.quaternion": " ".join(f"{v:.4f}" for v in pose.quaternion)
        for name, pose in state.objects.items()
    }
    values["target_distance_m"] = f"{state.target_distance_m:.4f}"
    values["success"] = str(state.success).lower()
    values["sim_time_s"] = f"{world.time_s:.3f}"
    values["behind_real_time_count"] = str(world.behind_real_time_count)
    values["lag_s"] = f"{world.lag_s:.3f}"
    behind = world.behind_real_time_count > 0
    level = "WARN" if behind else "OK"
    message = "red cube touched" if state.success else "touch the red cube"
    if behind:
        message += f"; behind real time {world.behind_real_time_count} times"
    return level, message, values
