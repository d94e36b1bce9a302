#!/usr/bin/env python3
"""Open-loop chunk error of the recurrent head against its iteration count (issue 8, RD-VLA).

Closed-loop success saturates (a chunk a few millimetres off still touches the cube, and the
next query corrects it), so this looks at the chunks themselves: fresh scripted-expert episodes
(seeds from 300 000, never trained on) are recorded, and at every recorded state the policy is
queried through `create_policy` (the deployed inference path, same initial-state noise) with
the recurrent head at fixed 1, 2, 4, 8, 12 iterations and adaptive. Per row: the mean absolute
error of the chunk against the expert's chunk from that state [mrad, arm joints, all 30 rows],
its 90th percentile, and how far the chunk still moves between iteration r and r + 1.

Usage::

    python benchmarks/iterations.py --model models/tiny_so100 --episodes 20
    python benchmarks/iterations.py --json out/iterations.json

Markdown table on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from vla_runtime.policy.interface import Observation  # noqa: E402
from vla_runtime.policy.registry import create_policy  # noqa: E402
from vla_runtime.policy.transforms import load_transform_config  # noqa: E402
from vla_runtime.train.demos import DemoConfig, record  # noqa: E402
from vla_runtime.train.evaluate import Variant  # noqa: E402

ARM_JOINTS = 5  # shoulder pan/lift, elbow, wrist flex/roll: the gripper is held
FIXED = (1, 2, 4, 8, 12)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(REPO / "models" / "tiny_so100"))
    parser.add_argument("--episodes", type=int, default=20, help="fresh expert episodes")
    parser.add_argument("--seed", type=int, default=300_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    began = time.monotonic()
    data, _ = record(DemoConfig(episodes=args.episodes, seed=args.seed))
    print(f"{len(data)} states from {args.episodes} episodes ({time.monotonic() - began:.0f} s)",
          file=sys.stderr)  # fmt: skip
    transform = load_transform_config("so100")
    variants = [Variant.fixed(k, False) for k in FIXED]
    variants.append(Variant("recurrent adaptive", "recurrent"))
    chunks: dict[str, np.ndarray] = {}
    iterations: dict[str, float] = {}
    for variant in variants:
        policy = create_policy(variant.spec(args.model, args.threads))
        out, used = [], []
        for i in range(len(data)):
            policy.reset()  # the same initial-state noise for every variant
            images = dict(zip(transform.cameras, data.images[i], strict=True))
            output = policy.infer(
                Observation(
                    images,
                    data.joint_positions[i].astype(np.float64),
                    transform.joint_names,
                )
            )
            out.append(output.actions)
            used.append(output.trace.iterations)
        chunks[variant.name] = np.stack(out)
        iterations[variant.name] = float(np.mean(used))
        print(f"{variant.name}: done ({time.monotonic() - began:.0f} s)", file=sys.stderr)

    labels = data.actions[:, :, :ARM_JOINTS]
    rows = []
    names = [v.name for v in variants]
    for index, name in enumerate(names):
        error = np.abs(chunks[name][:, :, :ARM_JOINTS] - labels).mean(axis=(1, 2)) * 1e3
        step = None
        if index + 1 < len(FIXED):  # fixed k -> the next fixed count
            following = chunks[names[index + 1]][:, :, :ARM_JOINTS]
            step = float(np.abs(following - chunks[name][:, :, :ARM_JOINTS]).mean() * 1e3)
        rows.append(
            {
                "variant": name,
                "mean_iterations": iterations[name],
                "chunk_error_mrad": float(error.mean()),
                "chunk_error_p90_mrad": float(np.percentile(error, 90)),
                "change_to_next_row_mrad": step,
            }
        )
    print(
        "| variant | mean iterations | chunk error [mrad] | p90 [mrad] "
        "| change to next row [mrad] |"
    )
    print("|---|---|---|---|---|")
    for row in rows:
        step = row["change_to_next_row_mrad"]
        print(
            f"| {row['variant']} | {row['mean_iterations']:.2f} | "
            f"{row['chunk_error_mrad']:.1f} | {row['chunk_error_p90_mrad']:.1f} | "
            f"{'' if step is None else f'{step:.1f}'} |"
        )
    print(f"\n{len(data)} states, {args.episodes} episodes from seed {args.seed}; "
          f"{time.monotonic() - began:.0f} s")  # fmt: skip
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": args.model, "states": len(data),
                                         "rows": rows}, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
