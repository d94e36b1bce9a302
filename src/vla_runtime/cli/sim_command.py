"""`vla-runtime sim EMBODIMENT`: the simulated world alone, on the ROS graph.

Publishes, from one thread that owns the world:

- `/cameras/<camera>/image_raw` (rgb8, sensor-data QoS) for every camera of the embodiment's
  `policy.cameras`, at `--camera-rate-hz`, all stamped with one capture instant per frame (the
  world state they show, taken before rendering), for the `ros_topic` camera source or a policy
  directly;
- `/cameras/<camera>/camera_info` with each image, stamped alike: pinhole intrinsics from the
  MuJoCo camera's fovy at the render size (fy = h / (2 tan(fovy / 2)), fx = fy, centre cx, cy);
- `/sim/joint_states` at `--state-rate-hz`: the simulated joints in `joint_names` order;
- `/diagnostics` at 1 Hz: a DiagnosticStatus `sim: <embodiment>` with the task state (object
  poses, the red cube's distance, success) and the behind-real-time count.

With `--servo-bus` the world also runs a Feetech servo-bus emulator on a pty (ids from the
embodiment's `driver.ids`) coupled to its joints: `driver_node ... -p driver.port:=<pty>` then
closes the loop through the real protocol. With `--can` (YAM) it runs one Damiao motor set per
arm (`driver.arm_names`, ids and models from the driver's config) on an SLCAN pty each:
`-p driver.interface:=slcan -p driver.left.channel:=<pty> ...`. With `--franka-ros2` (Franka) it
runs the franka_ros2 stand-in node coupled to the world: our Franka driver needs nothing else.
Without a coupling the arm holds its start pose.
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
    sub.add_argument(
        "--can",
        action="store_true",
        help="run Damiao motor emulators on SLCAN ptys (one per arm) coupled to the world (YAM)",
    )
    sub.add_argument(
        "--franka-ros2",
        action="store_true",
        help="run the franka_ros2 stand-in (topics and services) coupled to the world (Franka)",
    )
    sub.add_argument(
        "--link",
        metavar="PATH",
        help="with --servo-bus: symlink PATH to the pty; with --can: a folder, where each arm's "
        "pty is linked as its driver channel's name (can_follower_l, can_follower_r)",
    )
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
    if sum((args.servo_bus, args.can, args.franka_ros2)) > 1:
        print("vla-runtime sim: pick one of --servo-bus, --can, --franka-ros2", flush=True)
        world.close()
        return 2
    couplings: list[Any] = []
    cleanups: list[Callable[[], None]] = []
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` ends it as cleanly as Ctrl-C
    ros.init(args=[])
    node = ros.Node("sim")
    try:
        if args.servo_bus:
            bus, coupling = _servo_bus(args, world.joint_names)
            cleanups.append(bus.stop)
            couplings.append(coupling)
            where = f"{args.link} -> {bus.port}" if args.link else bus.port
            print(f"servo bus (ids {' '.join(map(str, bus.ids))}) on {where}", flush=True)
        elif args.can:
            couplings += _damiao(args, world, cleanups)
        elif args.franka_ros2:
            couplings.append(_franka_ros2(world, cleanups))
        for coupling in couplings:  # the emulators start where the world is
            coupling.report(world)
        _loop(args, node, world, couplings)
    except KeyboardInterrupt:
        pass
    finally:
        world.close()
        for cleanup in reversed(cleanups):
            cleanup()
        if args.servo_bus and args.link and os.path.islink(args.link):
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


def _driver_parameters(embodiment: str) -> tuple[Any, dict[str, Any]]:
    from vla_runtime.drivers.embodiment import driver_parameters
    from vla_runtime.resources import resolve

    path = resolve("config", f"embodiments/{embodiment}.yaml")
    with path.open(encoding="utf-8") as stream:
        parameters = yaml.safe_load(stream)["/**"]["ros__parameters"]
    flat: dict[str, Any] = {}

    def flatten(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                flatten(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            flat[prefix] = value

    flatten("", parameters)
    return path, driver_parameters(flat)


def _damiao(args: argparse.Namespace, world: Any, cleanups: list[Callable[[], None]]) -> list[Any]:
    """One Damiao motor set per YAM arm on an SLCAN pty, each coupled to its arm's joints."""
    from vla_runtime.drivers.emulators.damiao import DamiaoMotorSet, EmulatedMotor
    from vla_runtime.drivers.yam.driver import YamArm, build
    from vla_runtime.sim.coupling import DamiaoCoupling

    path, parameters = _driver_parameters(args.embodiment)
    try:
        driver = build(world.joint_names, parameters)
    except (ValueError, TypeError) as exc:
        raise SystemExit(
            f"vla-runtime sim: --can needs a YAM driver config in {path}: {exc}"
        ) from exc
    arms = [arm for arm in getattr(driver, "arms", [driver]) if isinstance(arm, YamArm)]
    if not arms:
        raise SystemExit(f"vla-runtime sim: --can needs a YAM (Damiao) driver in {path}")
    if args.link:
        os.makedirs(args.link, exist_ok=True)
    couplings = []
    for arm in arms:
        config = arm.config
        motors = DamiaoMotorSet(
            [
                EmulatedMotor(i, model, feedback_id=i + config.feedback_id_offset)
                for i, model in zip(config.ids, config.models, strict=True)
            ],
            internal_physics=False,
        )
        cleanups.append(motors.close)
        link = os.path.join(args.link, os.path.basename(config.channel)) if args.link else None
        pty = motors.serve_slcan(link)
        couplings.append(
            DamiaoCoupling(
                motors,
                arm.joint_names,
                gripper_id=config.gripper_id,
                gripper_closed_motor_rad=config.gripper_closed_motor_rad,
                gripper_open_motor_rad=config.gripper_open_motor_rad,
                gripper_stroke_m=config.gripper_stroke_m,
            )
        )
        where = f"{link} -> {pty}" if link else pty
        print(
            f"damiao motors (ids {' '.join(map(str, config.ids))}) for "
            f"{arm.joint_names[0]}..{arm.joint_names[-1]} on slcan {where}",
            flush=True,
        )
    return couplings


def _franka_ros2(world: Any, cleanups: list[Callable[[], None]]) -> Any:
    """The franka_ros2 stand-in node, spun on its own thread, coupled to the world."""
    import threading

    from vla_runtime.drivers.emulators.franka_ros2 import (
        FrankaRos2Emulator,
        FrankaRos2EmulatorConfig,
    )
    from vla_runtime.sim.coupling import FrankaCoupling

    if len(world.joint_names) != 8:
        raise SystemExit("vla-runtime sim: --franka-ros2 needs the franka embodiment")
    start = tuple(float(p) for p in world.joint_positions()[:7])
    emulator = FrankaRos2Emulator(FrankaRos2EmulatorConfig(initial_positions=start))
    executor = ros.SingleThreadedExecutor()
    executor.add_node(emulator)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set() and ros.ok():
            executor.spin_once(timeout_sec=0.05)

    thread = threading.Thread(target=spin, name="franka_ros2", daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join(timeout=2.0)
        emulator.destroy_node()

    cleanups.append(close)
    print("franka_ros2 stand-in coupled to the world", flush=True)
    return FrankaCoupling(emulator)


def _camera_info(world: Any, camera: str) -> Any:
    fx, fy, cx, cy = world.camera_intrinsics(camera)
    info = get_message("sensor_msgs/msg/CameraInfo")()
    info.header.frame_id = f"sim/{camera}"
    info.height, info.width = world.config.height, world.config.width
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def _loop(args: argparse.Namespace, node: Any, world: Any, couplings: list[Any]) -> None:
    from vla_runtime.nodes._diagnostics import diagnostic_array

    sensor = ros.qos_profile_sensor_data
    images = {
        camera: node.create_publisher(
            get_message("sensor_msgs/msg/Image"), f"/cameras/{camera}/image_raw", sensor
        )
        for camera in world.camera_names
    }
    infos = {
        camera: node.create_publisher(
            get_message("sensor_msgs/msg/CameraInfo"), f"/cameras/{camera}/camera_info", sensor
        )
        for camera in world.camera_names
    }
    info_messages = {camera: _camera_info(world, camera) for camera in world.camera_names}
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
                for coupling in couplings:
                    coupling.command(world)
                world.advance(now)
                for coupling in couplings:
                    coupling.report(world)
            if now >= due["camera"]:
                # Every camera shows the same world state: one capture instant for all (system
                # time, like ROS stamps), taken before rendering, so the render time counts as
                # the camera's latency (exposure + readout on a real one).
                stamp = time.time_ns()
                for camera, publisher in images.items():
                    pixels = world.render(camera)
                    publisher.publish(
                        convert.numpy_to_image(pixels, "rgb8", stamp, f"sim/{camera}")
                    )
                    info = info_messages[camera]
                    info.header.stamp = convert.ns_to_stamp(stamp)
                    infos[camera].publish(info)
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
