"""What the latency monitor knows: stage distributions, chains, deadlines, bad input (pure).

The node (nodes/latency_monitor.py) converts messages to (stamp, arrival) pairs and status
key-values and feeds them here; `evaluate()` gives the hold/release calls to make and `report()`
the DiagnosticStatus rows to publish. Stage names and status formats are the contract read by
`vla-runtime top` and `report` (docs/latency.md):

    latency_monitor/stage/<stage>    OK     p50_ms p90_ms p99_ms p999_ms max_ms count rate_hz
    latency_monitor/deadline/<rule>  OK|ERROR 'ok' | 'breached: <reason>'   value limit state
    latency_monitor/clock            OK|WARN  negative ages seen (clocks disagree)
    latency_monitor/inputs           OK|WARN  missing stamps, silent topics
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from vla_runtime.core.chains import ChainTracker
from vla_runtime.core.deadlines import Action, DeadlineEngine, DeadlineRule, Kind, State
from vla_runtime.core.latency_stats import LatencyStats, PeriodTracker

PREFIX = "latency_monitor"
POLICY_STAGES = {  # policy trace key -> stage
    "total_ms": "policy_total",
    "vision_ms": "policy_vision",
    "prefill_ms": "policy_prefill",
    "depth_ms": "policy_depth",
    "action_ms": "policy_action",
}
# A topic seen once and then quiet for this long is reported silent.
SILENT_S = 2.0
# Negative ages within this long ago keep the clock status at WARN.
CLOCK_WARN_S = 10.0
_NS = 1_000_000_000


@dataclass(frozen=True)
class StatusRow:
    """One DiagnosticStatus: name, level ('OK'|'WARN'|'ERROR'), message, key-values."""

    name: str
    level: str
    message: str
    values: dict[str, str]


def _parse_int(values: Mapping[str, str], key: str) -> int | None:
    try:
        return int(values[key])
    except (KeyError, ValueError):
        return None


def _parse_float(values: Mapping[str, str], key: str) -> float | None:
    try:
        value = float(values[key])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) else None


class LatencyMonitor:
    """Per-stage statistics, observation chains and deadline enforcement for one graph."""

    def __init__(
        self,
        cameras: Sequence[str],
        rules: Sequence[DeadlineRule],
        window_s: int = 10,
        command_period_s: float = 0.01,
    ) -> None:
        """Args:
        cameras: camera names (stages camera_age/<cam>, camera_gap/<cam>).
        rules: the deadlines to enforce.
        window_s: rolling window of the stage statistics.
        command_period_s: expected interval of /robot/joint_commands (the driver publishes
            every round(control rate / state publish rate) ticks), for driver_period_error.
        """
        self.cameras = tuple(cameras)
        self.window_s = window_s
        self.rules = tuple(rules)
        self.engine = DeadlineEngine(rules)
        self.chains = ChainTracker()
        stages = [f"camera_age/{c}" for c in self.cameras]
        stages += [f"camera_gap/{c}" for c in self.cameras]
        stages += ["scene_age", *POLICY_STAGES.values(), "policy_wait", "chunk_age"]
        stages += ["depth_tokens_age", "reaction", "joint_state_age"]
        self.stages: dict[str, LatencyStats] = {name: LatencyStats(window_s) for name in stages}
        self.driver_period = PeriodTracker(command_period_s, window_s)
        self.stages["driver_period"] = self.driver_period.intervals
        self.stages["driver_period_error"] = self.driver_period.errors
        self.critical_nodes = tuple(
            node for rule in rules if rule.kind == Kind.LIVELINESS for node in rule.nodes
        )
        self.missing_stamps = 0
        self.negative_ages = 0
        self.max_ahead_ms = 0.0
        self._negative_topics: set[str] = set()
        self._last_negative_ns: int | None = None
        self._last_arrival: dict[str, int] = {}
        self._last_capture: dict[str, int] = {}
        self._policy_inferences: int | None = None
        self._mode = ""

    # -- inputs ----------------------------------------------------------------------------

    def _age(self, topic: str, stamp_ns: int, now_ns: int) -> float | None:
        """now - stamp in ms, or None (counted) for a missing stamp or one from the future."""
        self._last_arrival[topic] = now_ns
        if stamp_ns <= 0:
            self.missing_stamps += 1
            return None
        age_ms = (now_ns - stamp_ns) / 1e6
        if age_ms < 0:
            self.negative_ages += 1
            self.max_ahead_ms = max(self.max_ahead_ms, -age_ms)
            self._negative_topics.add(topic)
            self._last_negative_ns = now_ns
            return None
        return age_ms

    def _record(self, stage: str, value_ms: float, now_ns: int) -> None:
        stats = self.stages.get(stage)
        if stats is None:
            stats = self.stages[stage] = LatencyStats(self.window_s)
        stats.record(value_ms, now_ns)

    def on_image(self, camera: str, stamp_ns: int, now_ns: int) -> None:
        age = self._age(f"/cameras/{camera}/image_raw", stamp_ns, now_ns)
        self.engine.observe_camera_frame(camera, now_ns)
        if age is None:
            return
        self._record(f"camera_age/{camera}", age, now_ns)
        self.chains.on_camera(camera, stamp_ns, now_ns)
        previous = self._last_capture.get(camera)
        self._last_capture[camera] = stamp_ns
        if previous is not None and stamp_ns > previous:
            self._record(f"camera_gap/{camera}", (stamp_ns - previous) / 1e6, now_ns)

    def on_scene(self, stamp_ns: int, now_ns: int) -> None:
        age = self._age("/think/scene", stamp_ns, now_ns)
        if age is not None:
            self._record("scene_age", age, now_ns)
            self.chains.on_scene(stamp_ns, now_ns)

    def on_depth_tokens(self, stamp_ns: int, now_ns: int) -> None:
        age = self._age("/policy/depth_tokens", stamp_ns, now_ns)
        if age is not None:
            self._record("depth_tokens_age", age, now_ns)

    def on_chunk(self, stamp_ns: int, now_ns: int) -> None:
        age = self._age("/policy/action_chunk", stamp_ns, now_ns)
        if age is None:
            return
        self._record("chunk_age", age, now_ns)
        self.chains.on_chunk(stamp_ns, now_ns)
        # In POLICY mode the driver applies this chunk from its next tick: its observation's
        # age is judged now, without waiting for the driver's 1 Hz report of it.
        if self._mode == "POLICY":
            self.engine.observe_observation_age(age, now_ns)

    def on_joint_state(self, stamp_ns: int, now_ns: int) -> None:
        age = self._age("/robot/joint_states", stamp_ns, now_ns)
        if age is not None:
            self._record("joint_state_age", age, now_ns)

    def on_joint_command(self, stamp_ns: int, now_ns: int) -> None:
        """The driver's tick stamps: their intervals are its (published) loop period."""
        if self._age("/robot/joint_commands", stamp_ns, now_ns) is not None:
            self.driver_period.record(stamp_ns, now_ns)

    def on_mode(self, mode: str, now_ns: int) -> None:
        self._last_arrival["/robot/mode"] = now_ns
        self._mode = mode
        self.engine.observe_mode(mode)

    def on_policy_status(self, values: Mapping[str, str], now_ns: int) -> None:
        """The policy's diagnostics: a new trace when its inference counter moved."""
        inferences = _parse_int(values, "inferences")
        if inferences is None or inferences == self._policy_inferences:
            return
        first = self._policy_inferences is None
        self._policy_inferences = inferences
        if first and inferences == 0:
            return
        for key, stage in POLICY_STAGES.items():
            value = _parse_float(values, key)
            if value is not None and value > 0:
                self._record(stage, value, now_ns)
        total = _parse_float(values, "total_ms")
        if total is None:
            return
        self.engine.observe_policy_latency(total, now_ns)
        chain = self.chains.on_policy_trace(total)
        wait = chain.policy_wait_ms if chain is not None else None
        if wait is not None and wait >= 0:
            self._record("policy_wait", wait, now_ns)

    def on_driver_status(self, values: Mapping[str, str], now_ns: int) -> None:
        """The driver's diagnostics: loop counters and which chunk it applies since when."""
        ticks, overruns = _parse_int(values, "ticks"), _parse_int(values, "overruns")
        if ticks is not None and overruns is not None:
            self.engine.observe_driver_ticks(ticks, overruns, now_ns)
        stamp = _parse_int(values, "applied_chunk_stamp_ns")
        since = _parse_int(values, "applied_since_ns")
        if not stamp or not since:
            return
        chain = self.chains.on_applied(stamp, since)
        if chain is not None and chain.reaction_ms is not None and chain.reaction_ms >= 0:
            self._record("reaction", chain.reaction_ms, now_ns)
            self.engine.observe_observation_age(chain.reaction_ms, now_ns)

    def on_nodes(self, names: Iterable[str], now_ns: int) -> None:
        self.engine.observe_nodes(names, now_ns)

    # -- outputs ---------------------------------------------------------------------------

    def evaluate(self, now_ns: int) -> list[Action]:
        return self.engine.evaluate(now_ns)

    def next_due_ns(self) -> int | None:
        """When a time-driven deadline (camera gap, liveliness, release) can next change."""
        return self.engine.next_due_ns()

    def report(self, now_ns: int) -> list[StatusRow]:
        rows = [
            StatusRow(f"{PREFIX}/stage/{name}", "OK", "", stats.window(now_ns).as_values())
            for name, stats in self.stages.items()
        ]
        for status in self.engine.statuses:
            breached = status.state == State.BREACHED
            rows.append(
                StatusRow(
                    f"{PREFIX}/deadline/{status.rule.name}",
                    "ERROR" if breached else "OK",
                    f"breached: {status.reason}" if breached else "ok",
                    {
                        "value": f"{status.value:.4g}",
                        "limit": f"{status.rule.limit:g}",
                        "state": status.state.value,
                    },
                )
            )
        recent = (
            self._last_negative_ns is not None
            and now_ns - self._last_negative_ns < CLOCK_WARN_S * _NS
        )
        rows.append(
            StatusRow(
                f"{PREFIX}/clock",
                "WARN" if recent else "OK",
                (
                    f"stamps up to {self.max_ahead_ms:.1f} ms ahead of this clock on "
                    f"{', '.join(sorted(self._negative_topics))}: do the hosts' clocks agree?"
                    if recent
                    else "ok"
                ),
                {
                    "negative_ages": str(self.negative_ages),
                    "max_ahead_ms": f"{self.max_ahead_ms:.3f}",
                },
            )
        )
        silent = sorted(
            topic
            for topic, at_ns in self._last_arrival.items()
            if topic != "/robot/mode" and now_ns - at_ns > SILENT_S * _NS
        )
        problems = []
        if silent:
            problems.append(f"silent: {', '.join(silent)}")
        if self.missing_stamps:
            problems.append(f"{self.missing_stamps} messages without a stamp")
        rows.append(
            StatusRow(
                f"{PREFIX}/inputs",
                "WARN" if problems else "OK",
                "; ".join(problems) or "ok",
                {
                    "missing_stamps": str(self.missing_stamps),
                    "negative_ages": str(self.negative_ages),
                    "silent_topics": ",".join(silent),
                    "unmatched_applied": str(self.chains.unmatched_applied),
                },
            )
        )
        return rows
