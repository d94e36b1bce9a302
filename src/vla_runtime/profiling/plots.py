"""The report's figures as inline SVG, and the self-contained HTML page around them.

Every panel degrades to a "no data" panel naming what was missing, so a recording without a
camera, a policy or a latency monitor still gives a complete report.
"""

from __future__ import annotations

import html
import io
from datetime import datetime, timezone

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from vla_runtime.profiling.report import SCENE_CELLS, Recording, stage_series, summary_text

# (section id, title, what the plot shows): the report's sections, in order.
SECTIONS = (
    ("latency-cdf", "Latency CDF per stage", "Fraction of samples at or below a latency."),
    (
        "chunk-timeline",
        "Per-chunk timeline",
        "For each action chunk (by its observation's capture time): capture → chunk arrival, "
        "then arrival → first driver tick in POLICY mode after it (≈ first applied row).",
    ),
    (
        "loop-period",
        "Driver loop period",
        "Histogram of the intervals between published /robot/joint_commands ticks.",
    ),
    (
        "iterations",
        "Policy iterations and changed fraction",
        "Refinement iterations per inference and the fraction of scene cells that changed.",
    ),
    (
        "deadline-events",
        "Deadline events",
        "Latency-monitor deadline rules over time (breached / released / ok).",
    ),
)
_MAX_CDF_POINTS = 600  # a CDF drawn from quantiles: same curve, a small SVG
_MAX_BARS = 80
_TIMELINE_BINS = 60
_MONITOR_QUANTILES = (("p50_ms", 0.5), ("p90_ms", 0.9), ("p99_ms", 0.99), ("p999_ms", 0.999))
_STATE_COLOURS = {"breached": "#d62728", "released": "#2ca02c", "ok": "#1f77b4"}


def _svg(figure: Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.find("<svg") :]


def _figure(height: float = 3.6) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(9.0, height), dpi=100)
    return figure, figure.add_subplot()


def _no_data(reason: str) -> str:
    figure, ax = _figure(1.6)
    ax.text(0.5, 0.5, f"no data: {reason}", ha="center", va="center", fontsize=12, color="#666")
    ax.set_axis_off()
    return _svg(figure)


def latency_cdf(recording: Recording) -> str:
    series = {k: v for k, v in stage_series(recording).items() if len(v)}
    if not series and not recording.monitor_stages:
        return _no_data("no stamped messages, policy traces, chunks or latency-monitor summaries")
    figure, ax = _figure(4.2)
    for index, (stage, values) in enumerate(sorted(series.items())):
        quantiles = np.linspace(0.0, 1.0, min(len(values), _MAX_CDF_POINTS))
        xs = np.quantile(values, quantiles)
        style = ("-", "--", "-.")[index // 10 % 3]  # the colour cycle repeats after 10
        ax.step(xs, quantiles, style, where="post", label=f"{stage} (n={len(values)})")
    # The monitor keeps histograms, not samples: its last percentiles as points on the CDF.
    for stage, history in sorted(recording.monitor_stages.items()):
        latest = history[-1][1]
        points = [(latest[key], q) for key, q in _MONITOR_QUANTILES if np.isfinite(latest[key])]
        if points and all(x > 0 for x, _ in points):
            xs_, qs = zip(*points, strict=True)
            ax.plot(xs_, qs, "x--", lw=0.8, label=f"monitor: {stage} (p50/p90/p99/p99.9)")
    ax.set_xscale("log")
    ax.set_xlabel("latency [ms] (log scale)")
    ax.set_ylabel("fraction ≤ latency")
    ax.set_ylim(0, 1.0)
    for q in (0.5, 0.99):
        ax.axhline(q, color="#999", lw=0.6, ls=":")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _svg(figure)


def chunk_timeline(recording: Recording) -> str:
    chunks = recording.chunks
    if not chunks:
        return _no_data("no /policy/action_chunk messages with stamps")
    start = recording.start_ns
    x = np.array([(c.capture_ns - start) / 1e9 for c in chunks])
    transit = np.array([(c.arrival_ns - c.capture_ns) / 1e6 for c in chunks])
    apply = np.array(
        [
            (c.first_command_ns - c.arrival_ns) / 1e6 if c.first_command_ns else np.nan
            for c in chunks
        ]
    )
    figure, ax = _figure(3.8)
    labels = ("capture → chunk arrival", "arrival → first applied tick")
    colours = ("#1f77b4", "#ff7f0e")
    applied = np.isfinite(apply).any()
    if len(chunks) <= _MAX_BARS:
        width = max(float(np.median(np.diff(x))) * 0.8, 1e-3) if len(x) > 1 else 0.05
        ax.bar(x, transit, width=width, color=colours[0], label=labels[0])
        if applied:
            ax.bar(
                x,
                np.nan_to_num(apply),
                width=width,
                bottom=transit,
                color=colours[1],
                label=labels[1],
            )
    else:  # thousands of bars alias into noise: each chunk a dot, and the median per bin
        total = transit + apply
        for values, colour, label in ((transit, colours[0], labels[0]), (total, colours[1], "")):
            if not np.isfinite(values).any():
                continue
            ax.plot(x, values, ".", ms=2, alpha=0.25, color=colour, rasterized=True)
            edges = np.linspace(x.min(), x.max() + 1e-9, _TIMELINE_BINS + 1)
            which = np.digitize(x, edges) - 1
            medians = [
                np.nanmedian(values[which == b])
                if np.isfinite(values[which == b]).any()
                else np.nan
                for b in range(_TIMELINE_BINS)
            ]
            name = label or "capture → first applied tick"
            ax.plot(
                (edges[:-1] + edges[1:]) / 2,
                medians,
                "-",
                color=colour,
                lw=1.5,
                label=f"{name} (dots: chunks, line: median)",
            )
    if not applied:
        ax.set_title("no driver tick in POLICY mode after any chunk", fontsize=9, loc="right")
    ax.set_xlabel("observation capture time [s from recording start]")
    ax.set_ylabel("latency [ms]")
    ax.set_ylim(bottom=0)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False)
    return _svg(figure)


def loop_period_histogram(recording: Recording) -> str:
    periods = np.array(recording.loop_periods_ms)
    if not len(periods):
        return _no_data("no /robot/joint_commands in the recording")
    figure, ax = _figure()
    top = float(np.percentile(periods, 99.9)) * 1.2
    ax.hist(np.clip(periods, 0, top), bins=80, color="#2ca02c")
    median = float(np.median(periods))
    ax.axvline(median, color="k", lw=1, ls="--", label=f"median {median:.2f} ms")
    ax.set_yscale("log")
    ax.set_xlabel(f"period [ms] (values above {top:.1f} ms drawn at the edge)")
    ax.set_ylabel("ticks (log)")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return _svg(figure)


def iterations_over_time(recording: Recording) -> str:
    traces = recording.policy
    if not traces:
        return _no_data("no `policy` statuses on /diagnostics")
    start = recording.start_ns
    t = np.array([(p.time_ns - start) / 1e9 for p in traces])
    iterations = np.array([p.iterations for p in traces])
    changed = np.array([p.changed_cells / SCENE_CELLS for p in traces])
    figure, ax = _figure()
    lines = ax.step(t, iterations, where="post", color="#9467bd", label="iterations")
    ax.set_xlabel("time [s from recording start] (one point per policy status, 1 Hz)")
    ax.set_ylabel("iterations", color="#9467bd")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    right = ax.twinx()
    lines += right.plot(t, changed, ".-", ms=4, color="#8c564b", label="changed fraction")
    right.set_ylabel("changed fraction of scene cells", color="#8c564b")
    right.set_ylim(0, 1.05)
    ax.legend(
        lines,
        [str(line.get_label()) for line in lines],
        fontsize=8,
        loc="lower left",
        bbox_to_anchor=(0.0, 1.0),
        ncol=2,
        frameon=False,
    )
    return _svg(figure)


def deadline_timeline(recording: Recording) -> str:
    events = recording.deadline_events
    if not events:
        why = (
            "no deadline events (every rule stayed ok)"
            if recording.monitor_stages
            else "no latency monitor statuses in the recording"
        )
        return _no_data(why)
    rules = sorted({e.rule for e in events})
    figure, ax = _figure(max(1.8, 0.5 * len(rules) + 1.2))
    end_s = (recording.end_ns - recording.start_ns) / 1e9
    for row, rule in enumerate(rules):
        mine = [e for e in events if e.rule == rule]
        for i, event in enumerate(mine):
            begin = (event.time_ns - recording.start_ns) / 1e9
            stop = (mine[i + 1].time_ns - recording.start_ns) / 1e9 if i + 1 < len(mine) else end_s
            if event.state == "breached":
                ax.broken_barh(
                    [(begin, max(stop - begin, 0.05))],
                    (row - 0.3, 0.6),
                    color="#d62728",
                    alpha=0.5,
                )
            ax.plot(begin, row, "v", color=_STATE_COLOURS.get(event.state, "k"), ms=8)
    ax.set_yticks(range(len(rules)), rules)
    ax.set_xlim(0, max(end_s, 1e-3))
    ax.set_ylim(-0.7, len(rules) - 0.3)
    ax.set_xlabel("time [s from recording start]; ▼ red = breached, green = released, blue = ok")
    ax.grid(True, axis="x", alpha=0.3)
    return _svg(figure)


def _event_table(recording: Recording) -> str:
    if not recording.deadline_events:
        return ""
    rows = "".join(
        f"<tr><td>+{(e.time_ns - recording.start_ns) / 1e9:.2f} s</td><td>{html.escape(e.rule)}"
        f"</td><td>{html.escape(e.state)}</td><td>{html.escape(e.message)}</td></tr>"
        for e in recording.deadline_events
    )
    return (
        f"<table><tr><th>time</th><th>rule</th><th>state</th><th>message</th></tr>{rows}</table>"
    )


def render_html(recording: Recording) -> str:
    """The whole report as one HTML document (inline SVG and CSS; no external assets)."""
    plots = {
        "latency-cdf": latency_cdf,
        "chunk-timeline": chunk_timeline,
        "loop-period": loop_period_histogram,
        "iterations": iterations_over_time,
        "deadline-events": deadline_timeline,
    }
    body = []
    for section, title, caption in SECTIONS:
        try:
            svg = plots[section](recording)
        except Exception as exc:
            svg = _no_data(f"plot failed ({type(exc).__name__}: {exc})")
        extra = _event_table(recording) if section == "deadline-events" else ""
        body.append(
            f'<section id="{section}"><h2>{html.escape(title)}</h2>'
            f'<p class="caption">{html.escape(caption)}</p>{svg}{extra}</section>'
        )
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    warning = (
        f'<p class="warning">Incomplete recording: {html.escape(recording.problem)}</p>'
        if recording.problem
        else ""
    )
    title = html.escape(f"vla_runtime profile: {recording.path.name}")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{_CSS}</style></head><body>"
        f'<h1>{title}</h1><p class="caption">generated {generated}</p>{warning}'
        f'<section id="summary"><h2>Summary</h2><pre>{html.escape(summary_text(recording))}'
        f"</pre></section>{''.join(body)}</body></html>\n"
    )


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}"
    "h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}"
    "pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:12px}"
    ".caption{color:#555;font-size:13px}.warning{background:#fff3cd;padding:.6em}"
    "svg{max-width:100%;height:auto}table{border-collapse:collapse;font-size:13px}"
    "td,th{border:1px solid #ddd;padding:2px 8px;text-align:left}"
)
