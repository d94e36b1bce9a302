"""Read an MCAP recording of a graph and compute its latencies from stamps and traces.

Everything comes from what the recording holds (DESIGN §3): ages are `log_time − header.stamp`
(the recorder's receive time minus the capture stamp each derived message keeps), policy stage
timings and the driver's loop statistics come from their `/diagnostics` statuses, and the latency
monitor's percentiles and deadline states from its own statuses when it ran. A truncated file is
read as far as it goes; what could not be read is reported, never raised.

    recording = read_recording(Path("run.mcap"))
    print(summary_text(recording))
"""

from __future__ import annotations

import bisect
import math
import os
import struct
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mcap.records import Channel, Footer, Message, Schema
from mcap.stream_reader import StreamReader
from rosbags.typesys import Stores, get_typestore

from vla_runtime.profiling.recorder import header_stamp_ns

_TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
_DIAGNOSTICS = "diagnostic_msgs/msg/DiagnosticArray"
_STAGE_PREFIX = "latency_monitor/stage/"
_DEADLINE_PREFIX = "latency_monitor/deadline/"
POLICY_KEYS = ("vision_ms", "prefill_ms", "depth_ms", "action_ms", "total_ms")
MONITOR_KEYS = ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "count", "rate_hz")
# The policy's scene grid (DESIGN §3: /think/scene is 10x10 cells).
SCENE_CELLS = 100


@dataclass
class TopicStats:
    type_name: str
    count: int = 0
    first_ns: int = 0
    last_ns: int = 0


@dataclass
class Chunk:
    """An action chunk: its observation's capture, its arrival, the driver's next tick."""

    capture_ns: int
    arrival_ns: int
    first_command_ns: int | None = None


@dataclass
class PolicyTrace:
    time_ns: int
    stages_ms: dict[str, float]
    iterations: float
    changed_cells: float


@dataclass
class DeadlineEvent:
    time_ns: int
    rule: str
    state: str
    message: str


@dataclass
class Recording:
    """What a report is made of; every series may be empty (the topic was absent)."""

    path: Path
    file_size: int
    bytes_read: int = 0
    problem: str = ""  # why reading stopped early ("" when the file was complete)
    topics: dict[str, TopicStats] = field(default_factory=dict)
    # stage name -> (arrival ns, latency ms) samples; camera and chain stages from stamps.
    stage_samples: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    unstamped: dict[str, int] = field(default_factory=dict)
    future_stamped: dict[str, int] = field(default_factory=dict)
    chunks: list[Chunk] = field(default_factory=list)
    loop_periods_ms: list[float] = field(default_factory=list)
    loop_source: str = ""
    driver_status: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    policy: list[PolicyTrace] = field(default_factory=list)
    monitor_stages: dict[str, list[tuple[int, dict[str, float]]]] = field(default_factory=dict)
    deadline_events: list[DeadlineEvent] = field(default_factory=list)
    undecodable: int = 0

    @property
    def start_ns(self) -> int:
        return min((t.first_ns for t in self.topics.values() if t.count), default=0)

    @property
    def end_ns(self) -> int:
        return max((t.last_ns for t in self.topics.values() if t.count), default=0)


# --------------------------------------------------------------------------------------------
# Reading


@dataclass
class _Raw:
    """Messages of interest kept until the whole file is read (order-independent analysis)."""

    commands: list[tuple[int, int]] = field(default_factory=list)  # (tick ns, arrival ns)
    modes: list[tuple[int, str]] = field(default_factory=list)
    chunks: list[tuple[int, int]] = field(default_factory=list)  # (capture ns, arrival ns)
    diagnostics: list[tuple[int, Any]] = field(default_factory=list)


def read_recording(path: Path) -> Recording:
    """Read `path` as far as it is readable and analyse it (never raises for a bad file)."""
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        return Recording(path, 0, problem=f"cannot open: {exc.strerror or exc}")
    recording = Recording(path, size)
    raw = _Raw()
    schemas: dict[int, Schema] = {}
    channels: dict[int, tuple[Channel, str, bool]] = {}
    complete = False
    try:
        with open(path, "rb") as stream:
            try:
                for record in StreamReader(stream, record_size_limit=1 << 31).records:
                    if isinstance(record, Message):
                        if record.channel_id in channels:
                            _on_message(recording, raw, *channels[record.channel_id], record)
                    elif isinstance(record, Schema):
                        schemas[record.id] = record
                    elif isinstance(record, Channel):
                        schema = schemas.get(record.schema_id)
                        type_name = schema.name if schema else ""
                        stamped = schema is not None and _starts_with_header(schema.data)
                        channels[record.id] = (record, type_name, stamped)
                        recording.topics.setdefault(record.topic, TopicStats(type_name))
                    elif isinstance(record, Footer):
                        complete = True
                    recording.bytes_read = stream.tell()
            except Exception as exc:
                recording.bytes_read = min(stream.tell(), size)
                recording.problem = f"{type(exc).__name__}: {exc}".strip(": ")
    except OSError as exc:
        recording.problem = f"cannot read: {exc.strerror or exc}"
    if not recording.problem and not complete:
        recording.problem = "the file ends without an MCAP footer (recorder killed?)"
    _analyse(recording, raw)
    return recording


def _starts_with_header(definition: bytes) -> bool:
    for line in definition.decode(errors="replace").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            return line.split()[:2] == ["std_msgs/Header", "header"] or line.split()[:2] == [
                "std_msgs/msg/Header",
                "header",
            ]
    return False


def _on_message(
    recording: Recording, raw: _Raw, channel: Channel, type_name: str, stamped: bool, msg: Message
) -> None:
    topic = channel.topic
    stats = recording.topics[topic]
    if stats.count == 0:
        stats.first_ns = msg.log_time
    stats.count += 1
    stats.first_ns = min(stats.first_ns, msg.log_time)
    stats.last_ns = max(stats.last_ns, msg.log_time)
    stamp = header_stamp_ns(msg.data) if stamped else None
    if stamped and type_name != _DIAGNOSTICS and not topic.endswith("/joint_commands"):
        # Diagnostics are stamped when sent and commands at the tick: no capture age to show.
        _age_sample(recording, _stage_for(topic), stamp, msg.log_time)
    if topic.endswith("/joint_commands"):
        raw.commands.append((stamp or msg.log_time, msg.log_time))
    elif topic.endswith("/robot/mode") and type_name == "std_msgs/msg/String":
        raw.modes.append((msg.log_time, _cdr_string(msg.data)))
    elif topic.endswith("/action_chunk") and stamp is not None:
        raw.chunks.append((stamp, msg.log_time))
    elif type_name == _DIAGNOSTICS:
        try:
            raw.diagnostics.append((msg.log_time, _TYPESTORE.deserialize_cdr(msg.data, type_name)))
        except Exception:
            recording.undecodable += 1


def _stage_for(topic: str) -> str:
    """Stage name for a stamped topic: capture -> arrival of that topic's messages."""
    parts = topic.strip("/").split("/")
    if len(parts) >= 3 and parts[0] == "cameras":
        return f"camera {parts[1]} (capture → arrival)"
    if topic.endswith("/action_chunk"):
        return "chunk age (capture → chunk arrival)"
    return f"{topic} (stamp → arrival)"


def _age_sample(recording: Recording, stage: str, stamp: int | None, arrival_ns: int) -> None:
    if stamp is None:
        recording.unstamped[stage] = recording.unstamped.get(stage, 0) + 1
        return
    age_ms = (arrival_ns - stamp) / 1e6
    if age_ms < 0:
        # Stamped after it arrived: the stamping host's clock is ahead (or the stamp is wrong).
        recording.future_stamped[stage] = recording.future_stamped.get(stage, 0) + 1
        return
    recording.stage_samples.setdefault(stage, []).append((arrival_ns, age_ms))


def _cdr_string(data: bytes) -> str:
    if len(data) < 8:
        return ""
    order = "<" if data[1] & 1 else ">"
    (length,) = struct.unpack_from(f"{order}I", data, 4)
    return data[8 : 8 + max(0, length - 1)].decode(errors="replace")


def _number(values: dict[str, str], key: str) -> float:
    try:
        return float(values.get(key, "nan"))
    except ValueError:
        return math.nan


# --------------------------------------------------------------------------------------------
# Analysis


def _analyse(recording: Recording, raw: _Raw) -> None:
    raw.commands.sort()
    raw.modes.sort()
    _chunks(recording, raw)
    _loop(recording, raw)
    last_inferences = None
    deadline_state: dict[str, str] = {}
    for time_ns, array in sorted(raw.diagnostics, key=lambda item: item[0]):
        for status in array.status:
            values = {kv.key: kv.value for kv in status.values}
            name = status.name
            if name.startswith(_STAGE_PREFIX):
                stage = name[len(_STAGE_PREFIX) :]
                numbers = {key: _number(values, key) for key in MONITOR_KEYS}
                recording.monitor_stages.setdefault(stage, []).append((time_ns, numbers))
            elif name.startswith(_DEADLINE_PREFIX):
                rule = name[len(_DEADLINE_PREFIX) :]
                state = values.get("state", "")
                if not state:
                    state = "breached" if status.message.startswith("breached") else "ok"
                if state != deadline_state.get(rule, "ok"):
                    recording.deadline_events.append(
                        DeadlineEvent(time_ns, rule, state, status.message)
                    )
                deadline_state[rule] = state
            elif name == "policy" or name.rsplit("/", 1)[-1] == "policy":
                inferences = values.get("inferences")
                if inferences is not None and inferences == last_inferences:
                    continue  # the same trace again (diagnostics repeat at 1 Hz)
                last_inferences = inferences
                stages = {key: _number(values, key) for key in POLICY_KEYS}
                if all(math.isnan(v) for v in stages.values()):
                    continue
                recording.policy.append(
                    PolicyTrace(
                        time_ns,
                        stages,
                        _number(values, "iterations"),
                        _number(values, "changed_cells"),
                    )
                )
            elif name.startswith("driver"):
                recording.driver_status.append((time_ns, values))
    for trace in recording.policy:
        for key, value in trace.stages_ms.items():
            if math.isfinite(value):
                stage = f"policy {key.removesuffix('_ms')}"
                recording.stage_samples.setdefault(stage, []).append((trace.time_ns, value))


def _chunks(recording: Recording, raw: _Raw) -> None:
    ticks = [tick for tick, _ in raw.commands]
    mode_times = [t for t, _ in raw.modes]
    for capture_ns, arrival_ns in sorted(raw.chunks):
        chunk = Chunk(capture_ns, arrival_ns)
        i = bisect.bisect_left(ticks, arrival_ns)
        if i < len(ticks):
            # Only a tick in POLICY mode applies a chunk row (unknown mode: assume it does).
            m = bisect.bisect_right(mode_times, ticks[i]) - 1
            if m < 0 or raw.modes[m][1] == "POLICY":
                chunk.first_command_ns = ticks[i]
        recording.chunks.append(chunk)
    applied = [
        (c.arrival_ns, (c.first_command_ns - c.capture_ns) / 1e6)
        for c in recording.chunks
        if c.first_command_ns is not None
    ]
    if applied:
        recording.stage_samples["reaction (capture → first applied tick)"] = applied


def _loop(recording: Recording, raw: _Raw) -> None:
    if len(raw.commands) < 2:
        return
    ticks = np.array([tick for tick, _ in raw.commands], dtype=np.int64)
    periods = np.diff(ticks) / 1e6
    recording.loop_periods_ms = [float(p) for p in periods if p > 0]
    recording.loop_source = "/robot/joint_commands stamps (published ticks)"


# --------------------------------------------------------------------------------------------
# Summary


def percentiles(values: list[float] | np.ndarray, qs: tuple[float, ...]) -> list[float]:
    if len(values) == 0:
        return [math.nan] * len(qs)
    return [float(v) for v in np.percentile(np.asarray(values, dtype=np.float64), qs)]


def stage_table(recording: Recording) -> list[tuple[str, int, float, float, float, float]]:
    """(stage, samples, p50, p90, p99, max) in ms, per stage measured from the recording."""
    rows = []
    for stage, samples in sorted(recording.stage_samples.items()):
        values = np.array([v for _, v in samples])
        p50, p90, p99 = percentiles(values, (50, 90, 99))
        rows.append((stage, len(values), p50, p90, p99, float(values.max())))
    return rows


def summary_text(recording: Recording) -> str:
    """The plain-text summary printed by `vla-runtime report` and embedded in the HTML."""
    lines = []
    duration_s = (recording.end_ns - recording.start_ns) / 1e9
    total = sum(t.count for t in recording.topics.values())
    lines.append(
        f"recording {recording.path} ({recording.file_size / 1e6:.1f} MB): "
        f"{total} messages on {len(recording.topics)} topics over {duration_s:.1f} s"
    )
    if recording.problem:
        percent = 100.0 * recording.bytes_read / max(1, recording.file_size)
        lines.append(
            f"  INCOMPLETE: read {recording.bytes_read} of {recording.file_size} bytes "
            f"({percent:.0f}%), then {recording.problem}; the report covers what was read"
        )
    lines.append("")
    lines.append("topics:")
    width = max([40, *(len(topic) for topic in recording.topics)])
    for topic, stats in sorted(recording.topics.items()):
        span_s = (stats.last_ns - stats.first_ns) / 1e9
        rate = (
            f"{(stats.count - 1) / span_s:8.1f} Hz" if stats.count > 1 and span_s > 0 else " " * 11
        )
        lines.append(f"  {topic:{width}s} {stats.count:7d} msgs {rate}  [{stats.type_name}]")
    lines.append("")
    rows = stage_table(recording)
    width = max([45, *(len(row[0]) for row in rows), *(len(s) for s in recording.monitor_stages)])
    lines.append(
        f"{'stage latency [ms]':{width + 2}s} {'n':>7s}"
        + "".join(f" {q:>8s}" for q in ("p50", "p90", "p99", "max"))
    )
    for stage, n, p50, p90, p99, worst in rows:
        lines.append(f"  {stage:{width}s} {n:7d} {p50:8.2f} {p90:8.2f} {p99:8.2f} {worst:8.2f}")
    if not rows:
        lines.append("  no stamped messages or policy traces in this recording")
    for what, counts in (
        ("without a stamp", recording.unstamped),
        ("stamped in the future (clock skew?)", recording.future_stamped),
    ):
        for stage, count in sorted(counts.items()):
            lines.append(f"  {stage}: {count} messages {what}, left out")
    lines.append("")
    if recording.loop_periods_ms:
        p50, p99 = percentiles(recording.loop_periods_ms, (50, 99))
        lines.append(
            f"driver loop period: p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
            f"max {max(recording.loop_periods_ms):.2f} ms ({recording.loop_source})"
        )
    else:
        lines.append("driver loop period: no /robot/joint_commands in this recording")
    if recording.driver_status:
        _, last = recording.driver_status[-1]
        lines.append(
            "  driver's own statistics (last): "
            + ", ".join(
                f"{key} {last[key]}"
                for key in (
                    "mode",
                    "period_error_p50_ms",
                    "period_error_p99_ms",
                    "overruns",
                    "ticks",
                )
                if key in last
            )
        )
    if recording.policy:
        iterations = [p.iterations for p in recording.policy if math.isfinite(p.iterations)]
        changed = [
            p.changed_cells / SCENE_CELLS
            for p in recording.policy
            if math.isfinite(p.changed_cells)
        ]
        lines.append(
            f"policy: {len(recording.policy)} traces; iterations mean "
            f"{np.mean(iterations) if iterations else math.nan:.2f}, changed fraction mean "
            f"{np.mean(changed) if changed else math.nan:.3f}"
        )
    else:
        lines.append("policy: no `policy` diagnostics in this recording")
    lines.append("")
    if recording.monitor_stages:
        lines.append(
            f"{'latency monitor (last summary) [ms]':{width + 2}s}"
            + "".join(f" {q:>8s}" for q in ("p50", "p90", "p99", "p99.9", "max", "rate"))
        )
        for stage, series in sorted(recording.monitor_stages.items()):
            v = series[-1][1]
            lines.append(
                f"  {stage:{width}s} {v['p50_ms']:8.2f} {v['p90_ms']:8.2f} {v['p99_ms']:8.2f} "
                f"{v['p999_ms']:8.2f} {v['max_ms']:8.2f} {v['rate_hz']:6.1f}Hz"
            )
    else:
        lines.append("latency monitor: absent (no latency_monitor/stage/* statuses)")
    if recording.deadline_events:
        lines.append("deadline events:")
        for event in recording.deadline_events:
            at_s = (event.time_ns - recording.start_ns) / 1e9
            lines.append(f"  {at_s:+9.2f} s  {event.rule}: {event.state} ({event.message})")
    else:
        lines.append("deadline events: none")
    if recording.undecodable:
        lines.append(f"{recording.undecodable} diagnostics messages could not be decoded")
    return "\n".join(lines) + "\n"


def stage_series(recording: Recording) -> dict[str, np.ndarray]:
    """Latency samples in ms per stage, for plotting."""
    series: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(0))
    for stage, samples in recording.stage_samples.items():
        series[stage] = np.array([v for _, v in samples], dtype=np.float64)
    return dict(series)


def write_report(recording_path: Path, output: Path) -> tuple[Recording, str]:
    """Read a recording, write its HTML report to `output`; return it and the text summary."""
    from vla_runtime.profiling.plots import render_html

    recording = read_recording(recording_path)
    output.write_text(render_html(recording), encoding="utf-8")
    return recording, summary_text(recording)
