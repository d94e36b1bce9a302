#!/usr/bin/env python3
"""Policy inference on CPU (issue 3): every table of BENCHMARKS.md "Policy", in one process.

Sections (``--sections``, default all, in this order):

- ``e2e`` (a): the `tiny` model, end-to-end `infer()` (transform, vision, prefill, action head,
  decode) p50/p90/p99, torch and ONNX side by side, flow head (10 Euler steps) and recurrent
  head (adaptive stopping at the default 1e-3 threshold). Targets: p50 <= 60 ms (flow),
  <= 40 ms (recurrent). The ONNX model is an export of the same random weights.
- ``recurrent`` (b): `tiny`'s recurrent head at 1, 4, 8, 16, 32 fixed iterations: action-head
  and total latency, and peak RSS over the measured runs (must stay flat in K: only the
  (queries, width) state is carried), with the fixed context projected once per query
  (`TorchRunner`) and re-projected every iteration as upstream RD-VLA does
  (`PerIterationContextRunner`), side by side.
- ``head`` (b'): the RD-VLA-sized head alone (width 896, 4 layers, 8 queries, 577 context tokens:
  65 latent + proprio, 512 vision [rd-vla.md §1.6]) with random weights and a random context:
  one query = prelude + context projections + K iterations (cached) against prelude + K
  iterations that each re-project the context (`iterate_uncached`). Also the matmul FLOPs of one
  iteration both ways (torch's FlopCounterMode), the number §1.6 estimates at ~88 % saved.
- ``depth`` (c): MolmoThink depth reasoning on `tiny` with 0, 10, 50, 100 % of the 10x10 cells
  changed (seeded random cells): depth-stage latency and VLM forwards per query.
- ``params`` (d): parameter counts of the full-size presets (built on the meta device) against
  the papers' values.

Every measured case reports the CPU that other processes used meanwhile ("others CPU %", 100 =
one core, from the root cgroup's counter minus this process): on a shared 2-core machine,
anything above a few % means the case's tail is somebody else's.

Usage::

    python benchmarks/policy.py --quick                # ~1 min smoke run (CI)
    python benchmarks/policy.py                        # the BENCHMARKS.md numbers
    python benchmarks/policy.py --sections e2e,depth --runs 300 --json policy.json

Markdown tables on stdout, progress on stderr; ``--json OUT`` writes every result.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from _common import cpu_seconds, machine, machine_busy_seconds
from vla_runtime.policy.bench import (
    BenchResult,
    describe_config,
    export_model,
    fixed_iterations,
    human_count,
    measure,
    model_from_argument,
)
from vla_runtime.policy.registry import PolicySpec

SECTIONS = ("e2e", "recurrent", "head", "depth", "params")
TARGET_P50_MS = {"flow": 60.0, "recurrent": 40.0}
ITERATIONS = (1, 4, 8, 16, 32)
CHANGED_FRACTIONS = (0.0, 0.1, 0.5, 1.0)
FULL_SIZE = ("molmoact2", "rdvla")
# The RD-VLA head's context [rd-vla.md §1.1, §1.6]: 64 latent queries + 1 proprio token, then
# 256 patch tokens for each of 2 cameras.
RDVLA_CONTEXT_TOKENS = 577
RDVLA_VISION_TOKENS = 512
RDVLA_WIDTH = 896

T = TypeVar("T")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class LoadMeter:
    """CPU other processes used while a case ran (100 = one core)."""

    def __init__(self) -> None:
        self.pid = os.getpid()

    def run(self, work: Callable[[], T]) -> tuple[T, float]:
        wall, busy, ours = time.monotonic(), machine_busy_seconds(), cpu_seconds(self.pid)
        result = work()
        wall_s = time.monotonic() - wall
        others_s = (machine_busy_seconds() - busy) - (cpu_seconds(self.pid) - ours)
        return result, round(max(0.0, 100.0 * others_s / wall_s), 1)


def _ms(value: float) -> str:
    return f"{value:.1f}" if math.isfinite(value) else "—"


def _table(headers: list[str], rows: list[list[str]], text: tuple[int, ...] = (0,)) -> str:
    """A markdown table; columns in `text` left-aligned, the others (numbers) right-aligned."""
    lines = ["| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join("---" if i in text else "---:" for i in range(len(headers))) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _mib(value: float) -> str:
    return f"{value / 2**20:.1f}"


@dataclasses.dataclass
class Settings:
    runs: int
    warmup: int
    threads: int
    head_runs: int
    iterations: tuple[int, ...]
    head_iterations: tuple[int, ...]
    meter: LoadMeter
    onnx_dir: Path | None = None
    onnx_error: str = ""

    def spec(self, **overrides: Any) -> PolicySpec:
        return dataclasses.replace(PolicySpec(model="tiny", threads=self.threads), **overrides)

    def measure(self, label: str, spec: PolicySpec, **kwargs: Any) -> tuple[BenchResult, float]:
        _say(f"#   {label} ...")
        return self.meter.run(lambda: measure(spec, runs=self.runs, warmup=self.warmup, **kwargs))


def _record(result: BenchResult, others: float, **extra: Any) -> dict[str, Any]:
    return {**extra, **result.to_dict(), "others_cpu_pct": others}


# -- (a) end to end -----------------------------------------------------------------------------


def _onnx_export(settings: Settings, scratch: Path) -> None:
    """Export `tiny`'s random weights once; the ONNX rows are skipped (with the reason) when
    the exporter or the backend is missing."""
    _say("#   exporting tiny (random weights, seed 0) to ONNX ...")
    try:
        started = time.monotonic()
        export_model(model_from_argument("tiny", seed=0), scratch)
        _say(f"#   exported in {time.monotonic() - started:.1f} s")
        settings.onnx_dir = scratch
    except Exception as exc:
        settings.onnx_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        _say(f"#   ONNX skipped: {settings.onnx_error}")


def end_to_end(settings: Settings, scratch: Path) -> tuple[str, list[dict[str, Any]]]:
    _onnx_export(settings, scratch)
    records: list[dict[str, Any]] = []
    rows = []
    for head in ("flow", "recurrent"):
        cells: dict[str, BenchResult | str] = {}
        for backend in ("torch", "onnx"):
            if backend == "onnx" and settings.onnx_dir is None:
                cells[backend] = "skipped"
                continue
            model = "tiny" if backend == "torch" else str(settings.onnx_dir)
            spec = settings.spec(backend=backend, model=model, head=head)
            try:
                result, others = settings.measure(f"{backend} {head}", spec)
            except Exception as exc:
                cells[backend] = f"failed: {str(exc).splitlines()[0][:100]}"
                _say(f"#   {backend} {head} failed: {exc}")
                continue
            cells[backend] = result
            records.append(_record(result, others, section="e2e"))
        row = [head]
        for backend in ("torch", "onnx"):
            cell = cells[backend]
            if isinstance(cell, str):
                row += [cell, "", "", ""]
                continue
            total = cell.stages["total_ms"]
            row += [_ms(total.p50), _ms(total.p90), _ms(total.p99), f"{cell.iterations_mean:.1f}"]
        target = TARGET_P50_MS[head]
        verdict = " / ".join(
            f"{backend}: {'met' if cell.stages['total_ms'].p50 <= target else 'MISSED'}"
            for backend, cell in cells.items()
            if not isinstance(cell, str)
        )
        row += [f"≤ {target:g}", verdict or "—"]
        rows.append(row)
    headers = [
        "head", "torch p50", "p90", "p99", "iter", "onnx p50", "p90", "p99", "iter",
        "target p50", "met?",
    ]  # fmt: skip
    text = (
        f"### (a) tiny end to end, CPU, {settings.threads} threads [ms]\n\n"
        + _table(headers, rows, text=(0, 10))
        + _stage_lines(records)
        + (f"\n\nONNX skipped: {settings.onnx_error}" if settings.onnx_error else "")
    )
    return text, records


def _stage_lines(records: list[dict[str, Any]]) -> str:
    lines = ["", "", "Per stage, p50 ms (vision / prefill / action), stop reasons, others' CPU %:"]
    lines.append("")
    for r in records:
        s = r["stages"]
        lines.append(
            f"- {r['backend']} {r['head']}: {_ms(s['vision_ms']['p50'])} / "
            f"{_ms(s['prefill_ms']['p50'])} / {_ms(s['action_ms']['p50'])}; stop "
            f"{r['stop_reasons']}; others {r['others_cpu_pct']} %"
        )
    return "\n".join(lines)


# -- (b) recurrent head: fixed iterations, memory, context once vs per iteration ---------------


def recurrent_sweep(settings: Settings) -> tuple[str, list[dict[str, Any]]]:
    records = []
    rows = []
    for k in settings.iterations:
        pair: dict[bool, tuple[BenchResult, float]] = {}
        for per_iteration in (False, True):
            spec = fixed_iterations(
                settings.spec(head="recurrent", per_iteration_context=per_iteration), k
            )
            label = f"recurrent K={k} {'per-iteration' if per_iteration else 'once'}"
            pair[per_iteration] = settings.measure(label, spec)
            records.append(_record(*pair[per_iteration], section="recurrent", iterations=k))
        once, every = pair[False][0], pair[True][0]
        once_action, every_action = once.stages["action_ms"].p50, every.stages["action_ms"].p50
        rows.append(
            [
                str(k),
                _ms(once_action),
                _ms(every_action),
                f"{every_action / once_action:.2f}x",
                _ms(once.stages["total_ms"].p50),
                _ms(every.stages["total_ms"].p50),
                _mib(once.memory_peak_bytes),
                _mib(once.memory_growth_bytes),
                _mib(every.memory_peak_bytes),
                f"{max(pair[False][1], pair[True][1]):.0f}",
            ]
        )
    peaks = [r["memory"]["peak_bytes"] for r in records if not r["per_iteration_context"]]
    rise = max([0, *(after - before for before, after in itertools.pairwise(peaks))])
    headers = [
        "K", "action p50 once", "action p50 per-iter", "speed-up", "total p50 once",
        "total p50 per-iter", "peak RSS MiB once", "growth MiB once", "peak RSS MiB per-iter",
        "others CPU %",
    ]  # fmt: skip
    text = (
        f"### (b) tiny recurrent head, fixed K iterations, CPU, {settings.threads} threads "
        "[ms]\n\n"
        + _table(headers, rows)
        + "\n\nMemory: the K values run in ascending order in one process, so anything the "
        "loop kept per iteration would raise the peak from one K to the next. Largest rise of "
        f"the peak RSS (context once) from one K to the next: {_mib(rise)} MiB; 'growth' = peak "
        "minus the RSS when the measured runs began (RSS left by earlier sections can make the "
        "first row higher; `--sections recurrent` runs it alone)."
    )
    return text, records


# -- (b') the RD-VLA-sized head alone ----------------------------------------------------------


def head_only(settings: Settings) -> tuple[str, list[dict[str, Any]]]:
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vla_runtime.policy.model.config import RecurrentHeadConfig
    from vla_runtime.policy.model.recurrent_head import RecurrentHead

    torch.set_num_threads(settings.threads)
    config = RecurrentHeadConfig(context="hidden")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    head = RecurrentHead(
        config, key_dim=RDVLA_WIDTH, value_dim=RDVLA_WIDTH, action_width=32
    ).eval()
    head.requires_grad_(False)  # FlopCounterMode's module hooks trip over grad-less params
    tokens = RDVLA_CONTEXT_TOKENS
    layers = max(head.tapped_layers) + 1
    # Every VLM layer gets the same random states (expand: one copy in memory); the head reads
    # only its tapped layers.
    context = torch.randn(1, 1, tokens, RDVLA_WIDTH).expand(layers, -1, -1, -1)
    task_index = torch.arange(tokens - RDVLA_VISION_TOKENS)
    vision_index = torch.arange(tokens - RDVLA_VISION_TOKENS, tokens)
    state0 = torch.randn(1, config.queries, config.width) * config.init_std
    torch.random.set_rng_state(generator_state)
    sources = (context, context, task_index, vision_index)

    def prelude() -> torch.Tensor:
        """What upstream computes once per query before iterating: the prelude layer(s)."""
        return head.prelude_output(*sources)

    def cached(k: int) -> None:
        prepared = head.prepare(*sources)
        state = state0
        for _ in range(k):
            state, _chunk = head.iterate(state, *prepared)

    def uncached(k: int) -> None:
        prelude_out = prelude()
        state = state0
        for _ in range(k):
            state, _chunk = head.iterate_uncached(state, prelude_out, *sources)

    def flops(work: Callable[[], object]) -> int:
        with FlopCounterMode(display=False) as counter:
            work()
        return int(counter.get_total_flops())

    records: list[dict[str, Any]] = []
    rows = []
    with torch.inference_mode():
        prepared = head.prepare(*sources)
        prelude_out = prepared[0]
        iterate_flops = flops(lambda: head.iterate(state0, *prepared))
        uncached_flops = flops(lambda: head.iterate_uncached(state0, prelude_out, *sources))
        prepare_flops = flops(lambda: head.prepare(*sources))
        prelude_flops = flops(prelude)
        saved = 1.0 - iterate_flops / uncached_flops
        for k in settings.head_iterations:
            timings: dict[str, list[float]] = {}
            for mode, work in (("cached", cached), ("uncached", uncached)):
                _say(f"#   RD-VLA-sized head K={k} {mode} ...")

                def timed(work: Callable[[int], None] = work, k: int = k) -> list[float]:
                    work(k)  # warm-up
                    samples = []
                    for _ in range(settings.head_runs):
                        started = time.perf_counter_ns()
                        work(k)
                        samples.append((time.perf_counter_ns() - started) / 1e6)
                    return samples

                timings[mode], others = settings.meter.run(timed)
                records.append(
                    {
                        "section": "head",
                        "iterations": k,
                        "mode": mode,
                        "runs": settings.head_runs,
                        "p50_ms": float(np.median(timings[mode])),
                        "min_ms": min(timings[mode]),
                        "others_cpu_pct": others,
                        "gflop": (
                            prepare_flops + k * iterate_flops
                            if mode == "cached"
                            else prelude_flops + k * uncached_flops
                        )
                        / 1e9,
                    }
                )
            c, u = records[-2], records[-1]
            rows.append(
                [
                    str(k),
                    _ms(c["p50_ms"]),
                    _ms(u["p50_ms"]),
                    f"{u['p50_ms'] / c['p50_ms']:.2f}x",
                    f"{c['gflop']:.1f}",
                    f"{u['gflop']:.1f}",
                    f"{u['gflop'] / c['gflop']:.2f}x",
                    f"{max(c['others_cpu_pct'], u['others_cpu_pct']):.0f}",
                ]
            )
    parameters = sum(p.numel() for p in head.parameters())
    headers = [
        "K", "cached p50 ms", "uncached p50 ms", "speed-up", "cached GFLOP",
        "uncached GFLOP", "FLOP ratio", "others CPU %",
    ]  # fmt: skip
    text = (
        f"### (b') RD-VLA-sized recurrent head alone ({human_count(parameters)} parameters, "
        f"{tokens}-token context), CPU, {settings.threads} threads, median of "
        f"{settings.head_runs}\n\n"
        + _table(headers, rows)
        + f"\n\nOne iteration: {iterate_flops / 1e9:.2f} GFLOP with the context projected once, "
        f"{uncached_flops / 1e9:.2f} GFLOP re-projecting it: {saved:.1%} of the iteration's "
        "FLOPs saved (rd-vla.md §1.6 estimates ~88 % for upstream's layout). Per query, once: "
        f"prepare {prepare_flops / 1e9:.2f} GFLOP; upstream's prelude {prelude_flops / 1e9:.2f}."
    )
    records.append(
        {
            "section": "head_flops",
            "parameters": parameters,
            "iteration_gflop_cached": iterate_flops / 1e9,
            "iteration_gflop_uncached": uncached_flops / 1e9,
            "prepare_gflop": prepare_flops / 1e9,
            "prelude_gflop": prelude_flops / 1e9,
            "saved_fraction": saved,
        }
    )
    return text, records


# -- (c) depth reasoning -----------------------------------------------------------------------


def depth(settings: Settings) -> tuple[str, list[dict[str, Any]]]:
    records = []
    rows = []
    for fraction in CHANGED_FRACTIONS:
        spec = settings.spec(head="flow")
        result, others = settings.measure(
            f"depth {fraction:.0%} changed", spec, changed_fraction=fraction
        )
        records.append(_record(result, others, section="depth"))
        rows.append(
            [
                f"{fraction:.0%}",
                str(result.changed_cells),
                f"{result.depth_forwards_mean:.0f}",
                _ms(result.stages["depth_ms"].p50),
                _ms(result.stages["depth_ms"].p99),
                _ms(result.stages["prefill_ms"].p50),
                _ms(result.stages["total_ms"].p50),
                f"{others:.0f}",
            ]
        )
    full = records[-1]["stages"]["depth_ms"]["p50"] if records else math.nan
    for row, record in zip(rows, records, strict=True):
        row.insert(5, f"{record['stages']['depth_ms']['p50'] / full:.2f}" if full else "—")
    headers = [
        "changed", "cells", "VLM forwards", "depth p50", "depth p99", "÷ 100 %", "prefill p50",
        "total p50", "others CPU %",
    ]  # fmt: skip
    text = (
        f"### (c) tiny depth reasoning (flow head), CPU, {settings.threads} threads [ms]\n\n"
        + _table(headers, rows)
    )
    return text, records


# -- (d) parameter counts ----------------------------------------------------------------------


def parameters() -> tuple[str, list[dict[str, Any]]]:
    records = []
    rows = []
    for name in FULL_SIZE:
        description = describe_config(model_config(name))
        records.append({"section": "params", **description.to_dict()})
        for part in description.parts:
            if part.parameters == 0:
                continue
            paper = part.paper
            rows.append(
                [
                    name,
                    part.part,
                    f"{part.parameters:,}",
                    human_count(paper.parameters) if paper else "",
                    f"{part.difference_pct:+.1f} %" if paper else "",
                    paper.source if paper else "",
                ]
            )
    text = "### (d) parameters of the full-size presets against the papers\n\n" + _table(
        ["preset", "part", "ours", "paper", "difference", "source"], rows, text=(0, 1, 5)
    )
    return text, records


def model_config(name: str) -> Any:
    from vla_runtime.policy.model.config import preset

    return preset(name)


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs", type=int, default=200, help="measured inferences per case (default 200)"
    )
    parser.add_argument(
        "--warmup", type=int, default=10, help="discarded inferences per case (default 10)"
    )
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument(
        "--head-runs",
        type=int,
        default=5,
        help="timed queries per case of the RD-VLA-sized head (default 5)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="10 runs per case, K up to 32 for tiny, 1 and 8 for "
        "the RD-VLA-sized head: a smoke run (about a minute)",
    )  # fmt: skip
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}"
    )
    parser.add_argument(
        "--json", type=Path, default=None, metavar="OUT", help="write every result as JSON"
    )
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; known: {', '.join(SECTIONS)}")
    settings = Settings(
        runs=10 if args.quick else args.runs,
        warmup=2 if args.quick else args.warmup,
        threads=args.threads,
        head_runs=1 if args.quick else args.head_runs,
        iterations=ITERATIONS,
        head_iterations=(1, 8) if args.quick else ITERATIONS,
        meter=LoadMeter(),
    )
    import torch

    header = (
        f"# Policy benchmark: {machine()}; torch {torch.__version__}; {settings.threads} "
        f"threads; {settings.runs} runs after {settings.warmup} warm-up per case"
    )
    _say(header)
    print(header + "\n")
    results: dict[str, Any] = {
        "machine": machine(),
        "torch": torch.__version__,
        "settings": {
            "runs": settings.runs,
            "warmup": settings.warmup,
            "threads": settings.threads,
            "head_runs": settings.head_runs,
            "quick": args.quick,
        },
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vla-bench-policy-") as scratch:
        for section in sections:
            _say(f"# {section}")
            if section == "e2e":
                text, records = end_to_end(settings, Path(scratch))
            elif section == "recurrent":
                text, records = recurrent_sweep(settings)
            elif section == "head":
                text, records = head_only(settings)
            elif section == "depth":
                text, records = depth(settings)
            else:
                text, records = parameters()
            print(text + "\n", flush=True)
            results[section] = records
    _say(f"# done in {time.monotonic() - started:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        _say(f"# wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
