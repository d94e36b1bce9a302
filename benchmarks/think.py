#!/usr/bin/env python3
"""MolmoThink: depth-token cache versus full re-prediction on a rendered SO100 sequence (issue 6).

The sequence (src/vla_runtime/sim/sequences.py) is the SO100 world seen by its cameras while the
arm sweeps over the static table, then rests. For every frame, in the same process and the same
run, the tiny reference policy (torch, depth reasoning, flow head) answers it twice:

- ``cached``: MolmoThink's scene for the frame (core/think.py: cells compared with their
  references), only the flagged cells decoded, the grid committed back to the cache;
- ``full``: every cell re-predicted (what the policy does without a think node).

Reported per frame and summarised by phase (moving / static): changed fraction, depth-decode time
[ms], VLM forwards spent on depth, policy latency [ms]. Also the detector's own cost per frame
(cut + compare + classify, on the 640x480 third-person frame) and a plot
(changed fraction and depth time over the sequence, both modes).

Usage::

    python benchmarks/think.py --quick               # 3 s sweep + 1 s rest at 10 Hz
    python benchmarks/think.py --json think.json --plot think.svg

The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import machine
from vla_runtime.core.change_detector import cell_similarity, frame_cells
from vla_runtime.core.think import MolmoThink
from vla_runtime.policy.interface import DepthScene, Observation
from vla_runtime.policy.registry import PolicySpec, create_policy
from vla_runtime.sim.sequences import SweepConfig, arm_sweep

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
MS = 1_000_000


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def detector_cost(image: np.ndarray, repeats: int) -> dict[str, float]:
    """Per-frame cost of the whole detection step on `image` (cut, compare, classify) [ms]."""
    think = MolmoThink()
    think.on_frame(0, image)
    think.on_depth_tokens(0, np.zeros((10, 10), np.uint8))
    cut, compare, whole = [], [], []
    reference = frame_cells(image)
    for k in range(repeats):
        t0 = time.perf_counter()
        cells = frame_cells(image)
        t1 = time.perf_counter()
        cell_similarity(cells, reference)
        t2 = time.perf_counter()
        think.on_frame(k + 1, image)
        t3 = time.perf_counter()
        cut.append((t1 - t0) * 1e3)
        compare.append((t2 - t1) * 1e3)
        whole.append((t3 - t2) * 1e3)
    return {
        "frame": f"{image.shape[1]}x{image.shape[0]}",
        "cut_p50_ms": _pct(cut, 50),
        "similarity_p50_ms": _pct(compare, 50),
        "on_frame_p50_ms": _pct(whole, 50),
        "on_frame_p99_ms": _pct(whole, 99),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    sweep = SweepConfig(
        moving_s=args.moving_s, static_s=args.static_s, rate_hz=args.rate_hz, width=640, height=480
    )
    print(f"rendering {sweep.moving_s + sweep.static_s:g} s of the SO100 sweep ...", flush=True)
    frames = arm_sweep(sweep)
    policy = create_policy(
        PolicySpec(model=args.model, head="flow", flow_steps=args.flow_steps, depth=True,
                   threads=args.threads)
    )  # fmt: skip
    primary = policy.camera_names[0]
    think = MolmoThink()
    rows: list[dict[str, Any]] = []
    warm = Observation(
        images=frames[0].images,
        joint_positions=np.zeros(len(JOINTS)),
        joint_names=JOINTS,
        stamp_ns=1,
        scene=DepthScene.full_refresh(1),
    )
    for _ in range(3):
        policy.infer(warm)
    for k, frame in enumerate(frames):
        stamp = (k + 1) * 100 * MS
        scene = think.on_frame(stamp, frame.images[primary])
        row: dict[str, Any] = {
            "t_s": frame.time_s,
            "moving": frame.moving,
            "changed_fraction": scene.changed_fraction,
            "detect_ms": scene.detect_ms,
        }
        for mode in ("cached", "full") if k % 2 == 0 else ("full", "cached"):
            depth = (
                DepthScene(scene.codes, scene.changed, stamp)
                if mode == "cached"
                else DepthScene.full_refresh(stamp)
            )
            output = policy.infer(
                Observation(
                    images=frame.images,
                    joint_positions=frame.joint_positions,
                    joint_names=JOINTS,
                    stamp_ns=stamp,
                    scene=depth,
                )
            )
            trace = output.trace
            row[f"{mode}_depth_ms"] = trace.depth_ms
            row[f"{mode}_forwards"] = trace.depth_forwards
            row[f"{mode}_cells"] = trace.changed_cells
            row[f"{mode}_total_ms"] = trace.total_ms
            if mode == "cached" and output.depth_codes is not None:
                think.on_depth_tokens(stamp, output.depth_codes)
        rows.append(row)
        print(
            f"{k:3d} t={frame.time_s:4.1f}s {'moving' if frame.moving else 'static'}  "
            f"changed {row['changed_fraction'] * 100:5.1f} %  depth {row['cached_depth_ms']:6.1f} "
            f"vs {row['full_depth_ms']:6.1f} ms  total {row['cached_total_ms']:6.1f} vs "
            f"{row['full_total_ms']:6.1f} ms",
            flush=True,
        )
    summary = {}
    after_first = rows[1:]
    for phase, moving in (("moving", True), ("static", False)):
        part = [r for r in after_first if r["moving"] is moving]
        if not part:
            continue
        entry: dict[str, float] = {
            "frames": len(part),
            "changed_fraction_mean": statistics.fmean(r["changed_fraction"] for r in part),
            "changed_fraction_max": max(r["changed_fraction"] for r in part),
        }
        for mode in ("cached", "full"):
            entry[f"{mode}_depth_ms_p50"] = _pct([r[f"{mode}_depth_ms"] for r in part], 50)
            entry[f"{mode}_forwards_mean"] = statistics.fmean(r[f"{mode}_forwards"] for r in part)
            entry[f"{mode}_cells_mean"] = statistics.fmean(r[f"{mode}_cells"] for r in part)
            entry[f"{mode}_total_ms_p50"] = _pct([r[f"{mode}_total_ms"] for r in part], 50)
            entry[f"{mode}_total_ms_p99"] = _pct([r[f"{mode}_total_ms"] for r in part], 99)
        entry["depth_speedup_p50"] = entry["full_depth_ms_p50"] / entry["cached_depth_ms_p50"]
        summary[phase] = entry
    low_change = [r for r in after_first if r["changed_fraction"] <= 0.2]
    if low_change:
        summary["changed_le_20pct"] = {
            "frames": len(low_change),
            "depth_speedup_p50": _pct([r["full_depth_ms"] for r in low_change], 50)
            / _pct([r["cached_depth_ms"] for r in low_change], 50),
        }
    static_cells = [r["cached_cells"] for r in after_first if not r["moving"]]
    summary["static_cells_decoded_max"] = max(static_cells) if static_cells else None
    detector = [
        detector_cost(frames[len(frames) // 3].images[primary], args.detector_repeats),
        detector_cost(
            np.ascontiguousarray(
                np.broadcast_to(frames[0].images[primary][:1, :1], (720, 1280, 3))
            ),
            args.detector_repeats,
        ),
    ]
    return {
        "machine": machine(),
        "model": args.model,
        "threads": args.threads,
        "sequence": vars(sweep),
        "summary": summary,
        "detector": detector,
        "frames": rows,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["frames"]
    t = [r["t_s"] for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    top.plot(t, [100 * r["changed_fraction"] for r in rows], color="tab:blue")
    top.set_ylabel("cells changed [%]")
    moving_end = max((r["t_s"] for r in rows if r["moving"]), default=0.0)
    for axis in (top, bottom):
        axis.axvspan(0, moving_end, color="0.92", zorder=0)
        axis.grid(alpha=0.3)
    top.set_title("MolmoThink on the SO100 sweep (grey: arm moving)")
    bottom.plot(t, [r["full_depth_ms"] for r in rows], label="full re-prediction", color="0.4")
    bottom.plot(t, [r["cached_depth_ms"] for r in rows], label="depth cache", color="tab:orange")
    bottom.set_ylabel("depth decode [ms]")
    bottom.set_xlabel("time [s]")
    bottom.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 s sweep + 1 s rest")
    parser.add_argument("--moving-s", type=float, default=6.0, help="sweep duration (default 6)")
    parser.add_argument("--static-s", type=float, default=3.0, help="rest duration (default 3)")
    parser.add_argument("--rate-hz", type=float, default=10.0, help="frame rate (default 10)")
    parser.add_argument("--model", default="tiny", help="named config or model dir (tiny)")
    parser.add_argument("--flow-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--detector-repeats", type=int, default=300)
    parser.add_argument("--json", type=Path, help="write the full result here")
    parser.add_argument("--plot", type=Path, help="write the plot here (.svg or .png)")
    args = parser.parse_args()
    if args.quick:
        args.moving_s, args.static_s, args.detector_repeats = 3.0, 1.0, 100
    result = run(args)
    if args.plot:
        plot(result, args.plot)
        print(f"plot: {args.plot}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps({"summary": result["summary"], "detector": result["detector"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
