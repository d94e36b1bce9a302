#!/usr/bin/env python3
"""End-to-end reaction latency of the SO100 sim graph, runtime overhead separated (issue 8).

Runs `vla-runtime demo` (the so100_sim graph: world + servo-bus emulator, think, policy,
driver, teleop, latency monitor, every node its own process, on a private Zenoh router) for
`--duration` seconds per case, with the policy engaged, and reads its MCAP recording
(`vla_runtime.profiling.report.read_recording`):

- reaction: capture stamp of an observation -> the driver's first command tick in POLICY mode
  after the chunk answering it arrived (every chunk);
- model compute: the policy's own trace (`total_ms`: vision, prefill, depth, action head), from
  its 1 Hz diagnostics, matched to the chunk it timed;
- camera: capture -> the last camera frame of that capture instant has arrived (the world
  stamps every camera of a frame with one capture instant, then renders them one by one: on a
  real camera this is exposure, readout and transport);
- overhead = reaction - model compute - camera, for the traced chunks: what the runtime adds
  between "every frame of the observation is here" and "the arm moves": MolmoThink's scene
  wait, synchronisation, queueing behind the previous inference (none when the policy is idle),
  chunk transport and the driver's pickup on its next tick. Reaction and overhead use the first
  published command tick after the chunk arrived, and the driver publishes commands every
  other 5 ms tick, so they are upper bounds (up to 5 ms high). Exact parts: overhead to chunk
  arrival (per traced chunk) and the driver's pickup from its own report of the tick that first
  applied a chunk (`applied_since_ns` in its 1 Hz diagnostics; `driver_pickup_exact`).

Cases (same run): ``cameras_15hz`` (the graph's default: frames arrive while the policy is
busy, so most frames wait for it) and ``cameras_5hz`` (slower than one inference: the policy
is idle when a frame lands, so the overhead is the runtime's alone).

Usage::

    python benchmarks/e2e.py --duration 60 --json e2e.json

The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import bisect
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from mcap.reader import make_reader

from _common import machine
from vla_runtime.profiling.recorder import header_stamp_ns
from vla_runtime.profiling.report import read_recording

REPO = Path(__file__).resolve().parents[1]
CASES = {"cameras_15hz": ["camera_rate_hz:=15"], "cameras_5hz": ["camera_rate_hz:=5"]}


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    array = np.asarray(values)
    return {
        "count": int(array.size),
        "p50_ms": float(np.percentile(array, 50)),
        "p99_ms": float(np.percentile(array, 99)),
        "max_ms": float(array.max()),
    }


def camera_ready_ns(mcap: Path) -> dict[int, int]:
    """Capture stamp -> arrival (log time) of its last camera frame (camera_info, same stamp)."""
    ready: dict[int, int] = {}
    with mcap.open("rb") as stream:
        for _, channel, message in make_reader(stream).iter_messages():
            if channel.topic.startswith("/cameras/") and channel.topic.endswith("/camera_info"):
                stamp = header_stamp_ns(message.data)
                if stamp is not None:
                    ready[stamp] = max(ready.get(stamp, 0), message.log_time)
    return ready


def analyse(mcap: Path) -> dict[str, Any]:
    recording = read_recording(mcap)
    ready = camera_ready_ns(mcap)
    applied = [c for c in recording.chunks if c.first_command_ns is not None]
    reaction = [(c.first_command_ns - c.capture_ns) / 1e6 for c in applied]  # type: ignore[operator]
    pickup = [(c.first_command_ns - c.arrival_ns) / 1e6 for c in applied]  # type: ignore[operator]
    arrivals = [c.arrival_ns for c in recording.chunks]
    model: list[float] = []
    overhead: list[float] = []
    to_arrival: list[float] = []
    camera_ms: list[float] = []
    for trace in recording.policy:
        total = trace.stages_ms.get("total_ms", float("nan"))
        i = bisect.bisect_right(arrivals, trace.time_ns) - 1
        if i < 0 or not np.isfinite(total):
            continue
        chunk = recording.chunks[i]
        model.append(total)
        if chunk.first_command_ns is None or chunk.capture_ns not in ready:
            continue
        camera_ms.append((ready[chunk.capture_ns] - chunk.capture_ns) / 1e6)
        overhead.append((chunk.first_command_ns - ready[chunk.capture_ns]) / 1e6 - total)
        to_arrival.append((chunk.arrival_ns - ready[chunk.capture_ns]) / 1e6 - total)
    by_capture = {c.capture_ns: c for c in recording.chunks}
    exact_pickup = []
    for _, values in recording.driver_status:
        stamp, since = values.get("applied_chunk_stamp_ns"), values.get("applied_since_ns")
        if stamp and since and stamp.isdigit() and int(stamp) in by_capture:
            exact_pickup.append((int(since) - by_capture[int(stamp)].arrival_ns) / 1e6)
    scene = [age for _, age in recording.stage_samples.get("/think/scene (stamp → arrival)", [])]
    return {
        "chunks": len(recording.chunks),
        "applied_chunks": len(applied),
        "reaction": _stats(reaction),
        "model_compute": _stats(model),
        "camera": _stats(camera_ms),
        "overhead": _stats(overhead),
        "overhead_to_chunk_arrival": _stats(to_arrival),
        "driver_pickup_exact": _stats(exact_pickup),
        "scene_age": _stats(scene),
        "driver_pickup": _stats(pickup),
    }


def run_case(
    name: str, arguments: list[str], args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    output = out / name
    command = [
        str(Path(sys.executable).with_name("vla-runtime")), "demo", "--duration",
        str(args.duration), "--output", str(output),
        *(f"--arg={a}" for a in arguments),
    ]  # fmt: skip
    if args.policy:
        command += ["--policy", args.policy]
    print(f"== {name}: {' '.join(command)}", flush=True)
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    tail = [line for line in result.stdout.splitlines() if line.startswith(("report:", "result"))]
    print("\n".join(tail), flush=True)
    analysis = analyse(output / "run.mcap")
    analysis["demo_exit"] = result.returncode
    analysis["result_line"] = tail[-1] if tail else ""
    return analysis


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per case")
    parser.add_argument("--policy", help="policy parameter file name or path (demo's default)")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--keep", type=Path, help="keep the runs' outputs in this folder")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args()
    out = args.keep or Path(tempfile.mkdtemp(prefix="vla_e2e_"))
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"machine": machine(), "duration_s": args.duration, "cases": {}}
    for name in args.cases:
        result["cases"][name] = case = run_case(name, CASES[name], args, out)
        for key in (
            "reaction", "model_compute", "camera", "overhead", "overhead_to_chunk_arrival",
            "driver_pickup", "driver_pickup_exact",
        ):  # fmt: skip
            stats = case[key]
            if stats["count"]:
                print(
                    f"  {key:16s} n={stats['count']:4d}  p50 {stats['p50_ms']:7.1f}  "
                    f"p99 {stats['p99_ms']:7.1f}  max {stats['max_ms']:7.1f} ms",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
