"""Simulated world: physics step rate, render time per camera, and the whole world in real time.

    .venv/bin/python benchmarks/sim.py [--embodiment so100] [--seconds 10]

For each render size (the policy's 378x378 and the cameras' 640x480):

1. physics: `mj_step` rate of the embodiment's world with nothing else running;
2. render: wall time of `World.render` per camera (scene update + offscreen draw + read-back);
3. real time: the world as `vla-runtime sim` runs it (physics caught up every 5 ms, every
   camera rendered at 15 Hz) for `--seconds`: frames per second reached, behind-real-time
   events, and the process's CPU (all threads, Mesa's rasteriser threads included) in cores.

Rendering is EGL on Mesa's llvmpipe (no GPU); llvmpipe rasterises on LP_NUM_THREADS threads
(default: one per core). The real-time case runs once with the default and once with
LP_NUM_THREADS=1 (a child process each, since Mesa reads it at context creation).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from _common import REPO, machine

SIZES = ((378, 378), (640, 480))


def measure(embodiment: str, width: int, height: int, seconds: float) -> dict[str, object]:
    from vla_runtime.sim.world import WorldConfig, build_world

    world = build_world(WorldConfig(embodiment, width, height))
    steps = 2000
    start = time.perf_counter()
    world.step(steps)
    step_rate_hz = steps / (time.perf_counter() - start)
    render_ms: dict[str, float] = {}
    for camera in world.camera_names:
        world.render(camera)  # GL context and textures
        samples = []
        for _ in range(30):
            begin = time.perf_counter()
            world.render(camera)
            samples.append((time.perf_counter() - begin) * 1e3)
        render_ms[camera] = float(np.median(samples))
    # Real time: a joint sweep keeps the images changing.
    period_ns, camera_period_ns = 5_000_000, round(1e9 / 15.0)
    world.reset()
    base = world.joint_positions()
    cpu0, wall0 = time.process_time(), time.monotonic_ns()
    next_physics = next_camera = wall0
    end = wall0 + round(seconds * 1e9)
    frames = 0
    while (now := time.monotonic_ns()) < end:
        if now >= next_physics:
            phase = (now - wall0) / 1e9
            target = base.copy()
            target[0] += 0.5 * np.sin(phase)
            world.set_joint_targets(target)
            world.advance(now)
            next_physics = max(next_physics + period_ns, now)
        if now >= next_camera:
            for camera in world.camera_names:
                world.render(camera)
            frames += 1
            next_camera += camera_period_ns
            if next_camera <= now:
                next_camera = now + camera_period_ns
        time.sleep(max(0.0, (min(next_physics, next_camera) - time.monotonic_ns()) / 1e9))
    wall_s = (time.monotonic_ns() - wall0) / 1e9
    cores = (time.process_time() - cpu0) / wall_s
    world.close()
    return {
        "size": f"{width}x{height}",
        "step_rate_hz": step_rate_hz,
        "render_ms": render_ms,
        "fps": frames / wall_s,
        "behind": world.behind_real_time_count,
        "lag_s": world.lag_s,
        "cores": cores,
        "lp_threads": os.environ.get("LP_NUM_THREADS", "default"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embodiment", default="so100")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--child", nargs=2, type=int, metavar=("W", "H"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.embodiment, *args.child, args.seconds)))
        return 0
    print(f"machine: {machine()}\n")
    print(
        "| size | LP_NUM_THREADS | physics steps/s | render ms per camera (median) "
        "| fps (15 Hz target) | behind real time | CPU cores |"
    )
    print("|---|---|---:|---|---:|---:|---:|")
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    for width, height in SIZES:
        for threads in (None, "1"):
            child_env = dict(env, LP_NUM_THREADS=threads) if threads else env
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--embodiment",
                    args.embodiment,
                    "--seconds",
                    str(args.seconds),
                    "--child",
                    str(width),
                    str(height),
                ],
                env=child_env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            r = json.loads(out.strip().splitlines()[-1])
            renders = ", ".join(f"{k} {v:.1f}" for k, v in r["render_ms"].items())
            print(
                f"| {r['size']} | {r['lp_threads']} | {r['step_rate_hz']:,.0f} | {renders} "
                f"| {r['fps']:.1f} | {r['behind']} ({r['lag_s']:.2f} s) | {r['cores']:.2f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
