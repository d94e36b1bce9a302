"""`vla-runtime train demos|fit|eval`: record scripted demonstrations, behaviour-clone, evaluate.

The three steps that produce `models/tiny_so100` (docs/training.md):

    vla-runtime train demos --out out/so100_demos --episodes 240
    vla-runtime train fit --demos out/so100_demos --out models/tiny_so100 --steps 2000
    vla-runtime train eval --model models/tiny_so100 --episodes 50 --json out/success.json

torch and MuJoCo are imported inside the handlers, so `vla-runtime --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from vla_runtime.cli._errors import Handler, one_line_errors

_DESCRIPTION = """\
Train the reference model on the simulated SO100 task "touch the red cube".

  demos  run the scripted expert (IK waypoints above and onto the red cube, placed at random)
         and record per step: camera images at the model's input size, joint state, the
         expert's 30-row action chunk, and the first camera's depth cells (MuJoCo depth).
  fit    learn the 128-code depth codebook (k-means on the depth cells), then train the
         model's both heads: depth-token cross-entropy (teacher forced), flow matching, and
         RD-VLA's L1 after a random iteration count (log-normal Poisson, TBPTT). Writes a
         model directory (config.json, model.safetensors, depth_codebook.npy,
         training_report.json) that `create_policy` / policy_node load as `model:`.
  dagger roll a trained policy out and record what it sees, labelled with the expert's
         chunk from each visited state (DAgger); `fit` trains on demos and these together.
  eval   closed-loop success in the world, in process: recurrent head at fixed 1/2/4/8/12
         iterations and adaptive, flow head, with and without the depth-token cache.
"""

_EPILOG = """\
examples:
  vla-runtime train demos --out out/so100_demos --episodes 240            # ~2 min
  vla-runtime train fit --demos out/so100_demos --out models/tiny_so100   # ~20 min, 2 cores
  vla-runtime train eval --model models/tiny_so100 --episodes 50 --json out/success.json
  vla-runtime train eval --model models/tiny_so100 --variants adaptive --cache on
"""


def register(commands: Any, handlers: dict[str, Handler]) -> None:
    """Add the `train` group to the `vla-runtime` subparsers."""
    group: argparse.ArgumentParser = commands.add_parser(
        "train",
        help="record scripted demos in the simulated world, behaviour-clone a model, evaluate it",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = group.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = verbs.add_parser(
        "demos",
        help="record scripted-expert episodes (images, joints, chunks, depth cells)",
        description="Record scripted-expert episodes into DIR (one .npy file per field).",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    p.add_argument("--episodes", type=int, default=240, help="episodes (default 240)")
    p.add_argument("--seed", type=int, default=0, help="seed of episode 0 (default 0)")
    p.add_argument(
        "--embodiment", default="so100", help="embodiment with a scripted expert (so100)"
    )
    p.set_defaults(handler=_guard(train_demos))

    p = verbs.add_parser(
        "fit",
        help="fit the depth codebook and behaviour-clone a model on recorded demos",
        description="Fit the depth codebook and behaviour-clone a fresh model; checkpoints "
        "and the final model go to --out.",
    )
    p.add_argument(
        "--demos",
        type=Path,
        required=True,
        nargs="+",
        metavar="DIR",
        help="one or more directories from `demos` / `dagger` (trained on together)",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="model directory")
    p.add_argument("--config", default="tiny", help="named model config (default tiny)")
    p.add_argument(
        "--init", type=Path, default=None, metavar="DIR", help="continue from this model dir"
    )
    p.add_argument("--steps", type=int, default=2000, help="optimiser steps (default 2000)")
    p.add_argument(
        "--stop-after", type=int, default=0, metavar="N", help="stop at step N of the schedule"
    )
    p.add_argument("--batch-size", type=int, default=8, help="default 8")
    p.add_argument("--warmup", type=int, default=100, help="warm-up steps (default 100)")
    p.add_argument("--lr", type=float, default=1.5e-3, help="peak learning rate")
    p.add_argument(
        "--mean-recurrence", type=float, default=8.0, help="mean sampled iterations (default 8)"
    )
    p.add_argument(
        "--min-recurrence",
        type=int,
        default=1,
        help="fewest sampled iterations (default 1; RD-VLA's sampler at mean 32 rarely "
        "draws below ~10)",
    )
    p.add_argument("--backprop-depth", type=int, default=8, help="TBPTT depth (default 8)")
    p.add_argument(
        "--reset-recurrent-head",
        action="store_true",
        help="with --init: give the recurrent head fresh weights, keep the rest",
    )
    p.add_argument(
        "--recurrent-core-layers",
        default=None,
        metavar="L[,L...]",
        help="with --reset-recurrent-head: the VLM layer each core layer reads (their count "
        "is the core's depth), e.g. 3 for a one-layer core",
    )
    p.add_argument(
        "--recurrent-weight", type=float, default=1.0, help="recurrent loss weight (default 1)"
    )
    p.add_argument(
        "--vision-aux-weight",
        type=float,
        default=0.0,
        help="weight of the training-only cube/position probe on the visual tokens (default 0)",
    )
    p.add_argument(
        "--state-noise",
        type=float,
        default=0.0,
        metavar="RAD",
        help="std of noise on the state tokens' joints in training (default 0)",
    )
    p.add_argument(
        "--gate-lr-scale",
        type=float,
        default=1.0,
        help="learning-rate factor of the recurrent head's vision gates (default 1)",
    )
    p.add_argument("--seed", type=int, default=0, help="weights, data order, noise")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared 2-core machine two threads spin-wait "
        "on each other and run ~4x slower)",
    )
    p.add_argument("--embodiment", default="so100", help="embodiment of the demos")
    p.set_defaults(handler=_guard(train_fit))

    p = verbs.add_parser(
        "dagger",
        help="roll a trained policy out and label every visited state with the expert (DAgger)",
        description="Run the policy closed loop in the world (as `eval` does) and record at "
        "every 5 rows the images, the joints, the scripted expert's chunk from that state and "
        "the depth cells, into DIR (as `demos` does); touched or not, every episode is kept. "
        "Train on it together with the demos: `fit --demos DEMOS DAGGER ... --init MODEL`.",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model directory to roll out")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    p.add_argument("--episodes", type=int, default=100, help="episodes (default 100)")
    p.add_argument("--seed", type=int, default=200_000, help="seed of episode 0 (default 200000)")
    p.add_argument(
        "--beta",
        type=float,
        default=0.0,
        help="probability per query of executing the expert's chunk instead (default 0)",
    )
    p.add_argument(
        "--head",
        choices=("recurrent", "flow"),
        default="recurrent",
        help="action head that drives (default recurrent, adaptive stopping, as deployed)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.set_defaults(handler=_guard(train_dagger))

    p = verbs.add_parser(
        "eval",
        help="closed-loop success rate in the simulated world (table of heads / iterations)",
        description="Closed-loop evaluation, in process: success = the red cube touched "
        "within --time-limit seconds of simulated time.",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="model directory")
    p.add_argument("--episodes", type=int, default=50, help="episodes per variant (default 50)")
    p.add_argument("--seed", type=int, default=100_000, help="first episode seed")
    p.add_argument("--time-limit", type=float, default=6.0, help="seconds (default 6)")
    p.add_argument(
        "--variants",
        default="all",
        help="all | adaptive | flow | fixed:K[,K...] (default all: fixed 1,2,4,8,12, "
        "adaptive, flow)",
    )
    p.add_argument(
        "--cache", choices=("both", "on", "off"), default="both", help="depth-token cache"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write all results")
    p.set_defaults(handler=_guard(train_eval))

    handlers["train"] = lambda args: int(args.handler(args))


def _guard(handler: Handler) -> Handler:
    return one_line_errors("train", (ValueError, OSError, RuntimeError, KeyError), handler)


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def train_demos(args: argparse.Namespace) -> int:
    from vla_runtime.train.demos import DemoConfig, EpisodeResult, record

    config = DemoConfig(embodiment=args.embodiment, episodes=args.episodes, seed=args.seed)
    began = time.monotonic()

    def progress(result: EpisodeResult) -> None:
        done = result.seed - config.seed + 1
        if done % 10 == 0 or not result.success or done == config.episodes:
            _log(
                f"episode {done}/{config.episodes}  seed {result.seed}  "
                f"{'touched' if result.success else 'FAILED'} at {result.duration_s:.2f} s  "
                f"{result.samples} samples  ({time.monotonic() - began:.0f} s)"
            )

    data, results = record(config, progress=progress)
    path = data.save(args.out)
    failed = [r.seed for r in results if not r.success]
    print(
        f"{len(data)} samples from {len(results) - len(failed)}/{len(results)} episodes -> "
        f"{path} ({time.monotonic() - began:.0f} s)"
        + (f"; expert failed on {failed}" if failed else "")
    )
    return 0


def train_dagger(args: argparse.Namespace) -> int:
    from vla_runtime.train.dagger import DaggerConfig, RolloutResult, record_on_policy

    config = DaggerConfig(
        model=args.model,
        head=args.head,
        episodes=args.episodes,
        seed=args.seed,
        beta=args.beta,
        threads=args.threads,
    )
    began = time.monotonic()
    touched: list[bool] = []

    def progress(result: RolloutResult) -> None:
        touched.append(result.success)
        if len(touched) % 10 == 0 or len(touched) == config.episodes:
            _log(
                f"episode {len(touched)}/{config.episodes}  {sum(touched)} touched  "
                f"{result.samples} samples in the last  ({time.monotonic() - began:.0f} s)"
            )

    data, results = record_on_policy(config, progress=progress)
    path = data.save(args.out)
    print(
        f"{len(data)} samples from {len(results)} on-policy episodes "
        f"({sum(r.success for r in results)} touched) -> {path} "
        f"({time.monotonic() - began:.0f} s)"
    )
    return 0


def train_fit(args: argparse.Namespace) -> int:
    import torch

    from vla_runtime.train.trainer import TrainConfig, train_from_demos

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    config = TrainConfig(
        steps=args.steps,
        stop_after=args.stop_after,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_steps=args.warmup,
        mean_recurrence=args.mean_recurrence,
        min_recurrence=args.min_recurrence,
        backprop_depth=args.backprop_depth,
        recurrent_weight=args.recurrent_weight,
        gate_lr_scale=args.gate_lr_scale,
        vision_aux_weight=args.vision_aux_weight,
        state_noise_rad=args.state_noise,
        seed=args.seed,
    )
    report = train_from_demos(
        args.demos,
        args.out,
        config,
        model_config=args.config,
        embodiment=args.embodiment,
        init=args.init,
        reset_recurrent_head=args.reset_recurrent_head,
        recurrent_core_layers=(
            tuple(int(v) for v in args.recurrent_core_layers.split(","))
            if args.recurrent_core_layers
            else None
        ),
        log=_log,
    )
    print(f"{args.out}: {report.steps} steps in {report.wall_s:.0f} s")
    return 0


def _variants(spec: str, cache: str) -> list[Any]:
    from vla_runtime.train.evaluate import Variant, standard_variants

    caches = {"both": (False, True), "on": (True,), "off": (False,)}[cache]
    out = []
    for flag in caches:
        if spec == "all":
            out += standard_variants(flag)
        elif spec == "adaptive":
            out.append(Variant("recurrent adaptive", "recurrent", depth_cache=flag))
        elif spec == "flow":
            out.append(Variant("flow (10 steps)", "flow", depth_cache=flag))
        elif spec.startswith("fixed:"):
            out += [Variant.fixed(int(k), flag) for k in spec[6:].split(",")]
        else:
            raise ValueError(f"--variants {spec!r}: use all, adaptive, flow or fixed:K[,K...]")
    return out


def train_eval(args: argparse.Namespace) -> int:
    from vla_runtime.train.evaluate import (
        EpisodeOutcome,
        EvalConfig,
        Variant,
        evaluate,
        result_records,
        results_table,
    )

    config = EvalConfig(
        episodes=args.episodes, seed=args.seed, time_limit_s=args.time_limit, threads=args.threads
    )
    variants = _variants(args.variants, args.cache)
    began = time.monotonic()
    counts: dict[str, list[bool]] = {}

    def progress(variant: Variant, outcome: EpisodeOutcome) -> None:
        key = f"{variant.name}{' +cache' if variant.depth_cache else ''}"
        seen = counts.setdefault(key, [])
        seen.append(outcome.success)
        if len(seen) % 10 == 0 or len(seen) == config.episodes:
            _log(
                f"{key}: {len(seen)}/{config.episodes} episodes, {sum(seen)} touched  "
                f"({time.monotonic() - began:.0f} s)"
            )

    results = evaluate(args.model, variants, config, progress=progress)
    print(results_table(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"model": args.model, "config": {"episodes": config.episodes,
                 "seed": config.seed, "time_limit_s": config.time_limit_s,
                 "replan_rows": config.replan_rows}, "results": result_records(results)},
                indent=2,
            )
            + "\n"
        )  # fmt: skip
    return 0
