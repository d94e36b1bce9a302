"""Graph-level deadlines (DESIGN §4): rules from `config/deadlines/<embodiment>.yaml`, an engine
that turns observations into HOLD and release actions.

The file is plain YAML (not a ROS parameter file: rules are a map of records, which ROS
parameters cannot express), one record per rule under `deadlines:`:

    deadlines:
      stale_observation:            # its name: diagnostics latency_monitor/deadline/<name>
        kind: observation_age
        limit_ms: 250.0
        window_s: 1.0
        release_after_s: 2.0        # auto-release once clear this long; 0 or absent = never

Kinds and their limit (units in the key):
    observation_age      limit_ms        max age of a chunk's observation when it arrives or is
                                         first applied by the driver, over window_s
    policy_latency       limit_ms        percentile (default 99) of the policy's total_ms over
                                         window_s (default 10), once min_samples (default 5) seen
    camera_gap           limit_ms        time since a camera's last frame (cameras: default every
                                         camera seen so far)
    driver_overrun_rate  limit_fraction  driver loop overruns / ticks over window_s (default 5)
    liveliness           limit_s         a node of `nodes` gone from the graph for longer than this

A rule holds once per breach (one action, one line saying why) and, when `release_after_s` > 0,
releases after its condition has been clear that long and no other rule is breached. A rule
without auto-release stays breached until its condition is clear and the arm has left HOLD (the
operator released it). Pure: times are passed in.
"""

from __future__ import annotations

import difflib
import enum
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vla_runtime.core.latency_stats import WindowedRatio

_NS = 1_000_000_000


class Kind(str, enum.Enum):
    OBSERVATION_AGE = "observation_age"
    POLICY_LATENCY = "policy_latency"
    CAMERA_GAP = "camera_gap"
    DRIVER_OVERRUN_RATE = "driver_overrun_rate"
    LIVELINESS = "liveliness"


# kind -> (the limit's key, {optional key: default})
_SCHEMA: dict[Kind, tuple[str, dict[str, Any]]] = {
    Kind.OBSERVATION_AGE: ("limit_ms", {"window_s": 1.0}),
    Kind.POLICY_LATENCY: ("limit_ms", {"window_s": 10.0, "percentile": 99.0, "min_samples": 5}),
    Kind.CAMERA_GAP: ("limit_ms", {"cameras": []}),
    Kind.DRIVER_OVERRUN_RATE: ("limit_fraction", {"window_s": 5.0}),
    Kind.LIVELINESS: ("limit_s", {"nodes": []}),
}
_COMMON = {"kind", "release_after_s"}


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest option, or '' (as drivers/parameters.py words it;
    core/ imports nothing from drivers/)."""
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


class DeadlineConfigError(ValueError):
    """A deadline file that cannot be used; the message names the key and what is allowed."""


@dataclass(frozen=True)
class DeadlineRule:
    """One deadline (see the module docstring for the kinds and their units)."""

    name: str
    kind: Kind
    limit: float
    release_after_s: float = 0.0
    window_s: float = 1.0
    percentile: float = 99.0
    min_samples: int = 1
    cameras: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = f"deadline {self.name!r}"
        if not (math.isfinite(self.limit) and self.limit >= 0):
            raise DeadlineConfigError(f"{where}: the limit must be finite and >= 0")
        if not (math.isfinite(self.release_after_s) and self.release_after_s >= 0):
            raise DeadlineConfigError(f"{where}: release_after_s must be >= 0 (0 = never)")
        if not (math.isfinite(self.window_s) and self.window_s > 0):
            raise DeadlineConfigError(f"{where}: window_s must be > 0")
        if not 0 < self.percentile <= 100:
            raise DeadlineConfigError(f"{where}: percentile must be in (0, 100]")
        if self.kind == Kind.LIVELINESS and not self.nodes:
            raise DeadlineConfigError(f"{where}: liveliness needs `nodes: [<node name>, ...]`")


def parse_rules(document: Any, source: str = "deadlines") -> list[DeadlineRule]:
    """Rules from a parsed YAML document `{deadlines: {name: {kind: ..., ...}}}`."""
    if not isinstance(document, Mapping) or set(document) != {"deadlines"}:
        keys = list(document) if isinstance(document, Mapping) else type(document).__name__
        raise DeadlineConfigError(f"{source}: expected one top-level key 'deadlines', got {keys}")
    records = document["deadlines"] or {}
    if not isinstance(records, Mapping):
        raise DeadlineConfigError(f"{source}: 'deadlines' must map rule names to records")
    return [_parse_rule(str(name), record, source) for name, record in records.items()]


def _parse_rule(name: str, record: Any, source: str) -> DeadlineRule:
    where = f"{source}: deadline {name!r}"
    if not isinstance(record, Mapping):
        raise DeadlineConfigError(f"{where}: expected a record with 'kind' and a limit")
    kinds = [k.value for k in Kind]
    raw_kind = record.get("kind")
    if raw_kind not in kinds:
        raise DeadlineConfigError(
            f"{where}: kind {raw_kind!r} is not one of {', '.join(kinds)}."
            + did_you_mean(str(raw_kind), kinds)
        )
    kind = Kind(raw_kind)
    limit_key, optional = _SCHEMA[kind]
    allowed = _COMMON | {limit_key} | set(optional)
    for key in record:
        if key not in allowed:
            raise DeadlineConfigError(
                f"{where}: unknown key {key!r} for kind {kind.value}; allowed: "
                f"{', '.join(sorted(allowed))}." + did_you_mean(str(key), allowed)
            )
    if limit_key not in record:
        raise DeadlineConfigError(f"{where}: kind {kind.value} needs {limit_key!r}")
    values = {**optional, **{k: v for k, v in record.items() if k != "kind"}}
    try:
        return DeadlineRule(
            name=name,
            kind=kind,
            limit=float(values.pop(limit_key)),
            release_after_s=float(values.pop("release_after_s", 0.0) or 0.0),
            window_s=float(values.pop("window_s", 1.0)),
            percentile=float(values.pop("percentile", 99.0)),
            min_samples=int(values.pop("min_samples", 1)),
            cameras=tuple(str(c) for c in values.pop("cameras", [])),
            nodes=tuple(str(n) for n in values.pop("nodes", [])),
        )
    except (TypeError, ValueError) as exc:
        if isinstance(exc, DeadlineConfigError):
            raise DeadlineConfigError(f"{source}: {exc}") from exc
        raise DeadlineConfigError(f"{where}: {exc}") from exc


def load_rules(path: str | Path) -> list[DeadlineRule]:
    """Rules of a deadline file; DeadlineConfigError (with the file's name) when malformed."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DeadlineConfigError(f"{path}: {exc}") from exc
    return parse_rules(document, str(path))


class State(str, enum.Enum):
    OK = "ok"
    BREACHED = "breached"
    RELEASED = "released"


@dataclass(frozen=True)
class Action:
    """What the monitor must do: call /robot/hold or /robot/release."""

    request: str  # 'hold' | 'release'
    rule: str
    reason: str


@dataclass
class RuleStatus:
    """A rule's latest evaluation."""

    rule: DeadlineRule
    state: State = State.OK
    value: float = math.nan
    reason: str = ""
    clear_since_ns: int | None = None


@dataclass
class _Samples:
    """(time, value) pairs of the last `window_ns`."""

    window_ns: int
    items: deque[tuple[int, float]] = field(default_factory=deque)

    def add(self, now_ns: int, value: float) -> None:
        self.items.append((now_ns, value))

    def values(self, now_ns: int) -> list[float]:
        while self.items and self.items[0][0] < now_ns - self.window_ns:
            self.items.popleft()
        return [value for _, value in self.items]


class DeadlineEngine:
    """Evaluates rules against what the monitor observed; yields hold/release actions."""

    def __init__(self, rules: Sequence[DeadlineRule]) -> None:
        names = [rule.name for rule in rules]
        if len(set(names)) != len(names):
            raise DeadlineConfigError(f"deadline names must be unique, got {names}")
        self.statuses = [RuleStatus(rule) for rule in rules]
        self._ages = {r.name: _Samples(round(r.window_s * _NS)) for r in rules}
        self._policy = {r.name: _Samples(round(r.window_s * _NS)) for r in rules}
        self._overruns = {r.name: WindowedRatio(r.window_s) for r in rules}
        self._frames: dict[str, int] = {}
        self._node_seen: dict[str, int] = {}
        self._mode = ""

    # -- observations ------------------------------------------------------------------------

    def observe_observation_age(self, age_ms: float, now_ns: int) -> None:
        for samples in self._ages.values():
            samples.add(now_ns, age_ms)

    def observe_policy_latency(self, total_ms: float, now_ns: int) -> None:
        for samples in self._policy.values():
            samples.add(now_ns, total_ms)

    def observe_camera_frame(self, camera: str, now_ns: int) -> None:
        self._frames[camera] = now_ns

    def observe_driver_ticks(self, ticks: int, overruns: int, now_ns: int) -> None:
        """The driver's cumulative counters; a counter going down (restart) starts afresh."""
        for ratio in self._overruns.values():
            ratio.record(overruns, ticks, now_ns)

    def observe_nodes(self, names: Iterable[str], now_ns: int) -> None:
        for name in names:
            self._node_seen[name] = now_ns

    def observe_mode(self, mode: str) -> None:
        self._mode = mode

    # -- evaluation ----------------------------------------------------------------------------

    def evaluate(self, now_ns: int) -> list[Action]:
        """Update every rule at `now_ns`; the hold/release calls to make, in order."""
        actions: list[Action] = []
        released: list[RuleStatus] = []
        for status in self.statuses:
            value, reason = self._measure(status.rule, now_ns)
            status.value = value
            breached = not math.isnan(value) and value > status.rule.limit
            if breached:
                status.clear_since_ns = None
                if status.state != State.BREACHED:
                    status.state, status.reason = State.BREACHED, reason
                    actions.append(Action("hold", status.rule.name, reason))
                continue
            if status.state != State.BREACHED:
                continue
            if status.clear_since_ns is None:
                status.clear_since_ns = now_ns
            cleared_s = (now_ns - status.clear_since_ns) / _NS
            release_after_s = status.rule.release_after_s
            if release_after_s > 0 and cleared_s >= release_after_s:
                status.state = State.RELEASED
                released.append(status)
            elif release_after_s == 0 and self._mode not in ("", "HOLD"):
                status.state, status.reason = State.OK, ""  # the operator released it
        if released and not any(s.state == State.BREACHED for s in self.statuses):
            names = ", ".join(s.rule.name for s in released)
            actions.append(Action("release", names, f"{names} clear"))
        return actions

    def next_due_ns(self) -> int | None:
        """The earliest time a time-driven rule changes state if nothing new arrives: a camera
        gap or a node's absence passing its limit, a breached rule's release hysteresis ending.
        The node evaluates exactly then (rather than on its next periodic check), so such a
        breach holds the arm within the hold call's round trip of becoming true. None = no such
        time now (window-based rules change only on input, which is evaluated as it arrives)."""
        dues: list[int] = []
        for status in self.statuses:
            rule = status.rule
            if status.state == State.BREACHED:
                if status.clear_since_ns is not None and rule.release_after_s > 0:
                    dues.append(status.clear_since_ns + math.ceil(rule.release_after_s * _NS))
                continue
            if rule.kind == Kind.CAMERA_GAP:
                cameras = rule.cameras or tuple(self._frames)
                seen = [self._frames[c] for c in cameras if c in self._frames]
                limit_ns = math.ceil(rule.limit * 1e6)
            elif rule.kind == Kind.LIVELINESS:
                seen = [self._node_seen[n] for n in rule.nodes if n in self._node_seen]
                limit_ns = math.ceil(rule.limit * _NS)
            else:
                continue
            if seen:
                dues.append(min(seen) + limit_ns + 1)  # breached once the value exceeds it
        return min(dues, default=None)

    def _measure(self, rule: DeadlineRule, now_ns: int) -> tuple[float, str]:
        """The rule's current value (NaN = nothing to judge) and a one-line reason."""
        if rule.kind == Kind.OBSERVATION_AGE:
            ages = self._ages[rule.name].values(now_ns)
            value = max(ages) if ages else math.nan
            return value, (
                f"{rule.name}: a chunk answered an observation {value:.0f} ms old "
                f"(limit {rule.limit:g} ms)"
            )
        if rule.kind == Kind.POLICY_LATENCY:
            totals = sorted(self._policy[rule.name].values(now_ns))
            if len(totals) < max(rule.min_samples, 1):
                return math.nan, ""
            value = percentile_of(totals, rule.percentile)
            return value, (
                f"{rule.name}: policy p{rule.percentile:g} {value:.0f} ms over "
                f"{rule.window_s:g} s (limit {rule.limit:g} ms)"
            )
        if rule.kind == Kind.CAMERA_GAP:
            cameras = rule.cameras or tuple(self._frames)
            gaps = {
                camera: (now_ns - self._frames[camera]) / 1e6
                for camera in cameras
                if camera in self._frames
            }
            if not gaps:
                return math.nan, ""
            worst = max(gaps, key=lambda camera: gaps[camera])
            return gaps[worst], (
                f"{rule.name}: no frame from camera {worst!r} for {gaps[worst]:.0f} ms "
                f"(limit {rule.limit:g} ms)"
            )
        if rule.kind == Kind.DRIVER_OVERRUN_RATE:
            value = self._overruns[rule.name].ratio()
            return value, (
                f"{rule.name}: driver overran {value:.1%} of its ticks over "
                f"{rule.window_s:g} s (limit {rule.limit:.1%})"
            )
        # LIVELINESS: only nodes seen once can be lost (start-up order is not a breach).
        lost = {
            node: (now_ns - self._node_seen[node]) / _NS
            for node in rule.nodes
            if node in self._node_seen
        }
        if not lost:
            return math.nan, ""
        node = max(lost, key=lambda n: lost[n])
        return lost[node], (
            f"{rule.name}: node {node!r} gone from the graph for {lost[node]:.1f} s "
            f"(limit {rule.limit:g} s)"
        )


def percentile_of(values: Sequence[float], percentile: float) -> float:
    """Nearest-rank percentile of sorted `values` (NaN when empty)."""
    if not values:
        return math.nan
    index = min(len(values) - 1, max(math.ceil(percentile / 100 * len(values)) - 1, 0))
    return values[index]
