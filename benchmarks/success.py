#!/usr/bin/env python3
"""Closed-loop success of a trained policy in the simulated SO100 world (issue 8).

In process, no middleware (`vla_runtime.train.evaluate`): per episode the cubes are placed for
the episode's seed, the policy sees the rendered cameras (640x480, squashed to 378x378 by the
policy) and the joint state, the first 10 rows (1/3 s) of each chunk are executed at 30 Hz,
and success is the world's "red cube touched" predicate within the time limit (6 s simulated).

Rows: the recurrent head at fixed 1, 2, 4, 8, 12 iterations and adaptive (threshold 1e-3,
min 2, max 32; mean iterations per query reported), and the flow head (10 Euler steps); each
without the depth-token cache (all 100 cells decoded every query) and with it (the MolmoThink
cache of DESIGN §6 over `core.change_detector`: only cells whose pixels moved away from their
reference are re-decoded). Every row runs the same seeds.

Targets (issue 8): adaptive >= 90 % and within 2 points of fixed 12 with fewer mean
iterations; fixed 1 clearly below fixed 4.

Usage::

    python benchmarks/success.py --model models/tiny_so100               # 50 episodes per row
    python benchmarks/success.py --episodes 10 --variants adaptive,flow  # quick look
    python benchmarks/success.py --json out/success.json --jobs 2

Markdown table on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from vla_runtime.train.evaluate import (  # noqa: E402
    EvalConfig,
    Variant,
    VariantResult,
    evaluate,
    result_records,
    results_table,
    standard_variants,
)


def _run(model: str, variant: Variant, config: EvalConfig) -> VariantResult:
    return evaluate(model, [variant], config)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(REPO / "models" / "tiny_so100"))
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=100_000)
    parser.add_argument("--time-limit", type=float, default=6.0)
    parser.add_argument(
        "--variants",
        default="all",
        help="all, or a comma list of: fixed1 fixed2 fixed4 fixed8 fixed12 adaptive flow",
    )
    parser.add_argument("--cache", choices=("both", "on", "off"), default="both")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    config = EvalConfig(episodes=args.episodes, seed=args.seed, time_limit_s=args.time_limit)
    caches = {"both": (False, True), "on": (True,), "off": (False,)}[args.cache]
    keys = {"fixed1": 0, "fixed2": 1, "fixed4": 2, "fixed8": 3, "fixed12": 4, "adaptive": 5,
            "flow": 6}  # fmt: skip
    variants: list[Variant] = []
    for cache in caches:
        table = standard_variants(cache)
        if args.variants == "all":
            variants += table
        else:
            variants += [table[keys[name]] for name in args.variants.split(",")]

    began = time.monotonic()
    results: dict[int, VariantResult] = {}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {
            pool.submit(_run, args.model, variant, config): index
            for index, variant in enumerate(variants)
        }
        for future in as_completed(futures):
            index = futures[future]
            result = future.result()
            results[index] = result
            cache_note = " +cache" if result.variant.depth_cache else ""
            print(
                f"{result.variant.name}{cache_note}: {100 * result.success_rate:.0f} % "
                f"({time.monotonic() - began:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    ordered = [results[i] for i in range(len(variants))]
    print(results_table(ordered))
    print(
        f"\n{args.episodes} episodes per row, seeds {args.seed}..; "
        f"{time.monotonic() - began:.0f} s"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "model": args.model,
            "episodes": args.episodes,
            "seed": args.seed,
            "time_limit_s": args.time_limit,
            "wall_s": time.monotonic() - began,
            "results": result_records(ordered),
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
