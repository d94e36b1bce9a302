"""The monitor's state: stage rows, deadline rows, clock and input reports (no middleware)."""

from __future__ import annotations

import pytest

from vla_runtime.core.deadlines import DeadlineRule, Kind
from vla_runtime.core.latency_monitor import LatencyMonitor

S = 1_000_000_000
MS = 1_000_000


def test_monitor_reports_stages_deadlines_clock_and_bad_input() -> None:
    rules = [DeadlineRule("stale", Kind.OBSERVATION_AGE, 200.0, release_after_s=1.0)]
    monitor = LatencyMonitor(["top"], rules)
    t = 1000 * S
    for i in range(10):
        monitor.on_image("top", t + i * 33 * MS, t + i * 33 * MS + 4 * MS)
    monitor.on_image("top", 0, t + S)  # no stamp
    monitor.on_image("top", t + 5 * S, t + S)  # from the future
    monitor.on_mode("POLICY", t)
    monitor.on_chunk(t + 9 * 33 * MS, t + S)  # 703 ms old, in POLICY: breach
    assert [a.request for a in monitor.evaluate(t + S)] == ["hold"]
    monitor.on_policy_status({"inferences": "3", "total_ms": "120.5", "vision_ms": "30"}, t + S)
    monitor.on_driver_status(
        {
            "ticks": "200",
            "overruns": "0",
            "applied_chunk_stamp_ns": str(t + 9 * 33 * MS),
            "applied_since_ns": str(t + S + 5 * MS),
        },
        t + S + 10 * MS,
    )
    for tick in range(20):  # the driver's commands every 10 ms, one 30 ms late
        monitor.on_joint_command(t + tick * 10 * MS + (30 * MS if tick >= 10 else 0), t + S)
    rows = {row.name: row for row in monitor.report(t + S + 20 * MS)}
    period = rows["latency_monitor/stage/driver_period"].values
    assert period["count"] == "19" and float(period["max_ms"]) == pytest.approx(40.0, rel=1e-2)
    error = rows["latency_monitor/stage/driver_period_error"].values
    assert float(error["p50_ms"]) < 0.01
    assert float(error["max_ms"]) == pytest.approx(30.0, rel=1e-2)
    assert monitor.driver_period.overruns == 1
    camera = rows["latency_monitor/stage/camera_age/top"]
    assert camera.level == "OK" and camera.values["count"] == "10"
    assert float(camera.values["p50_ms"]) == pytest.approx(4.0, rel=1e-2)
    assert float(rows["latency_monitor/stage/camera_gap/top"].values["p50_ms"]) == pytest.approx(
        33.0, rel=1e-2
    )
    assert float(rows["latency_monitor/stage/policy_total"].values["max_ms"]) == pytest.approx(
        120.5, rel=1e-2
    )
    assert float(rows["latency_monitor/stage/policy_wait"].values["max_ms"]) == pytest.approx(
        703 - 120.5, rel=1e-2
    )
    assert float(rows["latency_monitor/stage/reaction"].values["max_ms"]) == pytest.approx(
        708.0, rel=1e-2
    )
    for stage in ("policy_prefill", "policy_depth", "policy_action", "chunk_age"):
        assert f"latency_monitor/stage/{stage}" in rows
    deadline = rows["latency_monitor/deadline/stale"]
    assert deadline.level == "ERROR" and deadline.message.startswith("breached: ")
    assert deadline.values["state"] == "breached" and deadline.values["limit"] == "200"
    assert rows["latency_monitor/clock"].level == "WARN"
    assert rows["latency_monitor/clock"].values["negative_ages"] == "1"
    inputs = rows["latency_monitor/inputs"]
    assert inputs.values["missing_stamps"] == "1"
    later = {row.name: row for row in monitor.report(t + 20 * S)}
    assert "/cameras/top/image_raw" in later["latency_monitor/inputs"].values["silent_topics"]
    assert later["latency_monitor/clock"].level == "OK"


def test_garbage_diagnostics_are_ignored() -> None:
    monitor = LatencyMonitor(["top"], [])
    monitor.on_policy_status({"inferences": "x", "total_ms": "nan"}, S)
    monitor.on_policy_status({"inferences": "1", "total_ms": "nan"}, S)
    monitor.on_policy_status({}, S)
    monitor.on_driver_status({"ticks": "-", "applied_chunk_stamp_ns": "0"}, S)
    monitor.on_driver_status({"applied_chunk_stamp_ns": "12", "applied_since_ns": "zz"}, S)
    rows = {row.name: row for row in monitor.report(2 * S)}
    assert rows["latency_monitor/stage/policy_total"].values["count"] == "0"
    assert rows["latency_monitor/stage/reaction"].values["count"] == "0"
    assert monitor.evaluate(2 * S) == []
