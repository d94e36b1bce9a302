"""The state behind `vla-runtime top`: the latest /diagnostics statuses, rendered as rich tables.

No middleware here: `DiagnosticsBoard.update()` takes decoded DiagnosticArray messages, `render()`
returns what to print, so both are tested without a graph.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

STAGE_PREFIX = "latency_monitor/stage/"
DEADLINE_PREFIX = "latency_monitor/deadline/"
MONITOR_PREFIX = "latency_monitor"
# Statuses are published at 1 Hz; one missed twice over is shown as stale.
STALE_S = 3.0
_LEVELS = {0: ("OK", "green"), 1: ("WARN", "yellow"), 2: ("ERROR", "red"), 3: ("STALE", "dim")}
_STATE_STYLES = {"ok": "green", "breached": "bold red", "released": "yellow"}
# Per-node keys worth a glance, in display order; the rest stay in `topic echo /diagnostics`.
_NODE_KEYS = (
    "mode",
    "hold_reason",
    "overruns",
    "period_error_p99_ms",
    "rate_hz",
    "total_ms",
    "iterations",
    "observation_age_ms",
    "changed_cells",
    "last_error",
)


@dataclass
class Status:
    level: int
    message: str
    values: dict[str, str]
    received_s: float


class DiagnosticsBoard:
    """The newest status per name, from any number of DiagnosticArray messages."""

    def __init__(self) -> None:
        self.statuses: dict[str, Status] = {}

    def update(self, array: object, now_s: float | None = None) -> None:
        now_s = time.monotonic() if now_s is None else now_s
        for status in getattr(array, "status", ()):
            level = status.level
            if isinstance(level, bytes):  # rclpy's byte fields
                level = int.from_bytes(level, "little")
            self.statuses[status.name] = Status(
                int(level),
                status.message,
                {kv.key: kv.value for kv in status.values},
                now_s,
            )

    @property
    def monitor_present(self) -> bool:
        return any(name.startswith(MONITOR_PREFIX) for name in self.statuses)

    def render(self, now_s: float | None = None) -> RenderableType:
        now_s = time.monotonic() if now_s is None else now_s
        parts: list[RenderableType] = []
        stages = {
            n[len(STAGE_PREFIX) :]: s
            for n, s in self.statuses.items()
            if n.startswith(STAGE_PREFIX)
        }
        deadlines = {
            n[len(DEADLINE_PREFIX) :]: s
            for n, s in self.statuses.items()
            if n.startswith(DEADLINE_PREFIX)
        }
        if stages:
            table = Table(title="latency stages (latency_monitor)", title_justify="left")
            table.add_column("stage")
            for column in ("p50 ms", "p90 ms", "p99 ms", "max ms", "rate Hz", "count"):
                table.add_column(column, justify="right")
            for stage, status in sorted(stages.items()):
                v = status.values
                table.add_row(
                    Text(stage, style="dim" if now_s - status.received_s > STALE_S else ""),
                    *(
                        _number(v.get(key))
                        for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "rate_hz")
                    ),
                    v.get("count", ""),
                )
            parts.append(table)
        if deadlines:
            table = Table(title="deadlines", title_justify="left")
            for column in ("rule", "state", "value", "limit", "message"):
                table.add_column(column)
            for rule, status in sorted(deadlines.items()):
                state = status.values.get("state") or (
                    "breached" if status.message.startswith("breached") else "ok"
                )
                table.add_row(
                    rule, Text(state, style=_STATE_STYLES.get(state, "")), status.message
                )
            parts.append(table)
        if not self.monitor_present:
            parts.append(
                Text(
                    "latency monitor: absent (no latency_monitor/* statuses on /diagnostics); "
                    "start latency_monitor for per-stage percentiles and deadlines",
                    style="yellow",
                )
            )
        # Everything else, the monitor's own clock and input warnings included.
        nodes = {
            n: s
            for n, s in self.statuses.items()
            if not n.startswith((STAGE_PREFIX, DEADLINE_PREFIX))
        }
        table = Table(title="nodes", title_justify="left")
        for column in ("status", "level", "message", "values", "age s"):
            table.add_column(column, justify="right" if column == "age s" else "left")
        for name, status in sorted(nodes.items()):
            label, style = _LEVELS.get(status.level, (str(status.level), ""))
            age_s = now_s - status.received_s
            if age_s > STALE_S:
                label, style = "STALE", "dim"
            shown = ", ".join(
                f"{key} {status.values[key]}" for key in _NODE_KEYS if status.values.get(key)
            )
            table.add_row(name, Text(label, style=style), status.message, shown, f"{age_s:.1f}")
        if not nodes:
            table.add_row("(no node statuses on /diagnostics yet)", "", "", "", "")
        parts.append(table)
        return Group(*parts)


def _number(text: str | None) -> str:
    try:
        value = float(text or "nan")
    except ValueError:
        return text or ""
    return "" if math.isnan(value) else f"{value:.2f}"
