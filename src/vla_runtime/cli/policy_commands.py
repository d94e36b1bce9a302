"""`vla-runtime policy init|describe|export-onnx|bench`: make, size, export and time models.

torch, the exporter and onnxruntime are imported inside the handlers, so `vla-runtime --help`
stays fast and an ONNX-only install can still run `policy bench --backend onnx --model DIR`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vla_runtime.policy.bench import BenchResult
    from vla_runtime.policy.model.config import ModelConfig
    from vla_runtime.policy.registry import PolicySpec

from vla_runtime.cli._errors import Handler, one_line_errors

# Progress lines on stderr at most this often, and only once a run has lasted this long.
_PROGRESS_PERIOD_S = 2.0


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


# -- output helpers -----------------------------------------------------------------------------


def _print_table(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], *, text: int = 1
) -> None:
    """A rich table when rich is installed, else aligned plain text.

    The first column and the last `text` - 1 are text (left-aligned); the others numbers.
    """
    left = {0, *range(len(headers) - text + 1, len(headers))}
    print(title)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        for row in (headers, *rows):
            cells = [
                c.ljust(w) if i in left else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            print("  ".join(cells))
        return
    table = Table()
    for index, header in enumerate(headers):
        table.add_column(header, justify="left" if index in left else "right")
    for row in rows:
        table.add_row(*row)
    Console(file=sys.stdout, width=120).print(table)


def _bytes(value: float) -> str:
    for scale, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if value >= scale:
            return f"{value / scale:.1f} {suffix}"
    return f"{value:.0f} B"


def _progress(label: str) -> Callable[[int, int], None]:
    """A `measure` progress callback: a line on stderr every few seconds of a long run."""
    started = time.monotonic()
    last = [started]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= _PROGRESS_PERIOD_S or (done == total and now - started > 5.0):
            last[0] = now
            print(f"{label}: {done}/{total} runs, {now - started:.0f} s", file=sys.stderr)

    return report


def _preset(name: str) -> ModelConfig:
    from vla_runtime.policy.model.config import preset

    return preset(name)


# -- init -----------------------------------------------------------------------------------------


def policy_init(args: argparse.Namespace) -> int:
    from vla_runtime.policy.bench import describe_config, human_count
    from vla_runtime.policy.model.weights import CONFIG_FILE, WEIGHTS_FILE, init_model, save_model

    config = _preset(args.config)
    out: Path = args.out
    if (out / WEIGHTS_FILE).exists() and not args.force:
        raise CliError(f"{out / WEIGHTS_FILE} exists; pass --force to overwrite it")
    total = describe_config(config).count("total")
    print(
        f"initialising {config.name}: {human_count(total)} parameters, "
        f"{_bytes(4 * total)} in float32 (seed {args.seed})",
        file=sys.stderr,
    )
    save_model(init_model(config, seed=args.seed), out)
    size = (out / WEIGHTS_FILE).stat().st_size
    print(f"wrote {out / CONFIG_FILE} and {out / WEIGHTS_FILE} ({_bytes(size)})")
    return 0


# -- describe -------------------------------------------------------------------------------------


def policy_describe(args: argparse.Namespace) -> int:
    from vla_runtime.policy.bench import describe_config, human_count

    description = describe_config(_preset(args.config))
    if args.json:
        print(json.dumps(description.to_dict(), indent=2))
        return 0
    rows = []
    for part in description.parts:
        paper, difference, source = "", "", ""
        if part.paper is not None:
            paper = human_count(part.paper.parameters)
            difference = f"{part.difference_pct:+.1f} %"
            source = part.paper.source
        rows.append(
            [part.part, f"{part.parameters:,}", human_count(part.parameters), paper,
             difference, source]
        )  # fmt: skip
    _print_table(
        f"{args.config}: parameters per part (heads: {', '.join(description.config.heads)})",
        ["part", "parameters", "", "paper", "difference", "paper source"],
        rows,
        text=2,
    )
    return 0


# -- export-onnx ----------------------------------------------------------------------------------


def policy_export_onnx(args: argparse.Namespace) -> int:
    from vla_runtime.policy.bench import model_from_argument

    try:
        from vla_runtime.policy.export import export_onnx
    except ImportError as exc:
        raise CliError(f"the ONNX exporter is not available: {exc}") from exc
    model = model_from_argument(args.model, seed=args.seed)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    print(f"exporting {model.config.name} to {out} ...", file=sys.stderr)
    started = time.monotonic()
    files = export_onnx(model, out, opset=args.opset)
    for path in files:
        print(f"{path} ({_bytes(path.stat().st_size)})")
    print(f"exported {len(files)} files in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


# -- bench ----------------------------------------------------------------------------------------


def _bench_spec(args: argparse.Namespace, model: str) -> PolicySpec:
    from vla_runtime.policy.bench import fixed_iterations
    from vla_runtime.policy.registry import PolicySpec

    spec = PolicySpec(
        backend=args.backend,
        model=model,
        embodiment=args.embodiment,
        head=args.head,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
        threads=args.threads,
        per_iteration_context=args.per_iteration_context,
    )
    if args.iterations is not None:
        spec = fixed_iterations(spec, args.iterations)
    return spec


def _check_bench_arguments(args: argparse.Namespace) -> None:
    from vla_runtime.policy.registry import backend_class

    backend_class(args.backend)  # unknown names fail with the known ones, before any export
    if args.iterations is not None and args.head != "recurrent":
        raise CliError("--iterations fixes the recurrent head's iterations; add --head recurrent")
    if args.per_iteration_context and (args.head != "recurrent" or args.backend != "torch"):
        raise CliError("--per-iteration-context needs --head recurrent and --backend torch")
    if args.changed_fraction is not None and not 0.0 <= args.changed_fraction <= 1.0:
        raise CliError(f"--changed-fraction must be in [0, 1], got {args.changed_fraction}")
    if args.runs < 1 or args.warmup < 0:
        raise CliError("--runs must be >= 1 and --warmup >= 0")
    if args.model is not None and not Path(args.model).is_dir():
        raise CliError(
            f"model directory {args.model} not found (make one with `vla-runtime policy init "
            "--config tiny --out DIR`, or pass --config NAME for random weights)"
        )
    _check_head(args)


def _check_head(args: argparse.Namespace) -> None:
    """A head the model lacks fails before any weights are built or loaded."""
    from vla_runtime.policy.model.config import ModelConfig
    from vla_runtime.policy.model.weights import CONFIG_FILE

    if args.model is None:
        config = _preset(args.config)
    elif (Path(args.model) / CONFIG_FILE).is_file():
        config = ModelConfig.from_json(Path(args.model) / CONFIG_FILE)
    else:
        return  # an export directory without a config: the backend checks
    if args.head not in config.heads:
        raise CliError(
            f"model {config.name!r} has no {args.head} head (it has: {', '.join(config.heads)}); "
            f"pick --head {config.heads[0]}"
        )


def policy_bench(args: argparse.Namespace) -> int:
    from vla_runtime.policy.bench import export_model, measure, model_from_argument

    _check_bench_arguments(args)
    label = f"policy bench {args.model or args.config} {args.backend} {args.head}"
    with tempfile.TemporaryDirectory(prefix="vla-policy-bench-") as scratch:
        model = args.model or args.config
        if args.model is None and args.backend != "torch":
            # The exporting backends load files: export random weights of the config first.
            print(f"exporting random {args.config} weights to {scratch} ...", file=sys.stderr)
            try:
                export_model(model_from_argument(args.config, args.seed), Path(scratch))
            except ImportError as exc:
                raise CliError(f"the ONNX exporter is not available: {exc}") from exc
            model = scratch
        result = measure(
            _bench_spec(args, str(model)),
            changed_fraction=args.changed_fraction,
            runs=args.runs,
            warmup=args.warmup,
            progress=_progress(label),
        )
    summary = result.to_dict()
    summary["model"] = args.model or args.config
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    _print_bench(args, result)
    return 0


def _print_bench(args: argparse.Namespace, result: BenchResult) -> None:
    spec = result.spec
    depth = (
        "no depth reasoning"
        if result.changed_fraction is None
        else f"depth reasoning, {result.changed_fraction:.0%} of cells changed"
    )
    stop = (
        f"fixed {spec.max_iterations} iterations"
        if args.iterations is not None
        else f"stop at {spec.threshold:g}, {spec.min_iterations}..{spec.max_iterations}"
    )
    if spec.head == "flow":
        stop = f"{spec.flow_steps} Euler steps"
    title = (
        f"{args.model or args.config} on {spec.backend} ({spec.device}, {spec.dtype}, "
        f"{spec.threads} threads), {spec.head} head ({stop}"
        f"{', context per iteration' if spec.per_iteration_context else ''}), {depth}; "
        f"{result.runs} runs after {result.warmup} warm-up"
    )
    rows = [
        [stage.removesuffix("_ms"), *(f"{getattr(s, k):.2f}" for k in ("p50", "p90", "p99",
                                                                         "mean"))]
        for stage, s in result.stages.items()
    ]  # fmt: skip
    _print_table(title, ["stage [ms]", "p50", "p90", "p99", "mean"], rows)
    reasons = ", ".join(f"{name} {count}" for name, count in sorted(result.stop_reasons.items()))
    print(
        f"iterations: mean {result.iterations_mean:.2f}, min {result.iterations_min}, "
        f"max {result.iterations_max}; stop reasons: {reasons}"
    )
    if result.changed_fraction is not None:
        print(
            f"depth: {result.changed_cells} changed cells, "
            f"{result.depth_forwards_mean:.1f} VLM forwards per query"
        )
    print(
        f"memory ({result.memory_kind}): peak {_bytes(result.memory_peak_bytes)}, "
        f"+{_bytes(result.memory_growth_bytes)} over the {_bytes(result.memory_baseline_bytes)} "
        f"at the first measured run; policy built in {result.setup_s:.1f} s"
    )


# -- registration ---------------------------------------------------------------------------------


def _guard(handler: Handler) -> Handler:
    """User errors (bad names, missing files, a head the model lacks) -> one line, exit 2."""
    from vla_runtime.policy.interface import PolicyError

    return one_line_errors("policy", (CliError, PolicyError, ValueError, OSError), handler)


_EPILOG = """\
Examples:
  vla-runtime policy describe --config molmoact2          # sizes vs the paper, no memory used
  vla-runtime policy init --config tiny --out models/tiny
  vla-runtime policy export-onnx --model models/tiny --out models/tiny-onnx
  vla-runtime policy bench --config tiny --head recurrent --runs 100
  vla-runtime policy bench --model models/tiny-onnx --backend onnx --changed-fraction 0.1
Presets: tiny (real time on 2 CPU cores), molmoact2 (5.1 B), rdvla (1.0 B)."""


def register(commands: Any, handlers: dict[str, Handler]) -> None:
    """Add the `policy` group to the `vla-runtime` subparsers."""
    group: argparse.ArgumentParser = commands.add_parser(
        "policy",
        help="reference models: make random weights, count parameters, export ONNX, benchmark",
        description="Make, size, export and benchmark the reference VLA models.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = group.add_subparsers(dest="verb", metavar="VERB", required=True)

    def add(verb: str, help_text: str, handler: Handler) -> argparse.ArgumentParser:
        sub = verbs.add_parser(verb, help=help_text, description=help_text)
        sub.set_defaults(handler=_guard(handler))
        return sub

    p = add(
        "init",
        "write random weights of a named config: DIR/config.json + DIR/model.safetensors",
        policy_init,
    )
    p.add_argument("--config", required=True, metavar="NAME", help="tiny, molmoact2 or rdvla")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="model directory")
    p.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite existing weights in DIR")

    p = add(
        "describe",
        "parameter counts per part of a config (built on the meta device: no memory), with the "
        "papers' values for molmoact2 and rdvla",
        policy_describe,
    )
    p.add_argument("--config", required=True, metavar="NAME", help="tiny, molmoact2 or rdvla")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = add(
        "export-onnx",
        "export a model directory (or random weights of a named config) to ONNX",
        policy_export_onnx,
    )
    p.add_argument(
        "--model", required=True, metavar="DIR|NAME",
        help="model directory (config.json + model.safetensors) or a config name",
    )  # fmt: skip
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="export directory")
    p.add_argument("--seed", type=int, default=0, help="weight seed for a config name")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: exporter's)")

    p = add(
        "bench",
        "time inference on synthetic 640x480 frames: per-stage latency percentiles, "
        "iterations, stop reasons, peak memory",
        policy_bench,
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--config", default="tiny", metavar="NAME",
        help="random weights of a named config (default tiny; exported first for --backend onnx)",
    )  # fmt: skip
    source.add_argument(
        "--model", metavar="DIR", help="model directory (torch) or ONNX export directory (onnx)"
    )
    p.add_argument(
        "--backend", default="torch", metavar="NAME", help="torch or onnx (default torch)"
    )
    p.add_argument(
        "--head", choices=("flow", "recurrent"), default="flow", help="action head (default flow)"
    )
    p.add_argument(
        "--embodiment", default="so100", metavar="NAME", help="embodiment (default so100)"
    )
    p.add_argument(
        "--iterations", type=int, default=None, metavar="K",
        help="recurrent head: run exactly K iterations (default: adaptive stopping)",
    )  # fmt: skip
    p.add_argument(
        "--changed-fraction", type=float, default=None, metavar="F",
        help="depth reasoning with fraction F of the 10x10 depth cells changed (0..1); "
        "omitted = no depth reasoning",
    )  # fmt: skip
    p.add_argument(
        "--per-iteration-context", action="store_true",
        help="recurrent head: re-project the context every iteration, as upstream RD-VLA does",
    )  # fmt: skip
    p.add_argument(
        "--threads", type=int, default=2, metavar="N", help="intra-op threads (default 2)"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument(
        "--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
        help="torch weights and activations (default float32)",
    )  # fmt: skip
    p.add_argument(
        "--runs", type=int, default=50, metavar="N", help="measured inferences (default 50)"
    )
    p.add_argument(
        "--warmup", type=int, default=5, metavar="N", help="discarded inferences (default 5)"
    )
    p.add_argument(
        "--seed", type=int, default=0, metavar="N", help="weights and noise seed (default 0)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    handlers["policy"] = lambda args: int(args.handler(args))
