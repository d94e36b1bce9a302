"""Deadline rules: each kind trips and clears, release hysteresis, malformed files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vla_runtime.core.deadlines import (
    DeadlineConfigError,
    DeadlineEngine,
    DeadlineRule,
    Kind,
    State,
    load_rules,
    parse_rules,
)

S = 1_000_000_000
MS = 1_000_000
ROOT = Path(__file__).resolve().parents[2]


def rule(kind: Kind, limit: float, **extra: object) -> DeadlineRule:
    return DeadlineRule(name=kind.value, kind=kind, limit=limit, **extra)  # type: ignore[arg-type]


def requests(actions: list) -> list[str]:
    return [action.request for action in actions]


def test_observation_age_trips_once_and_releases_after_the_hysteresis() -> None:
    engine = DeadlineEngine([rule(Kind.OBSERVATION_AGE, 250.0, window_s=1.0, release_after_s=2.0)])
    now = 100 * S
    engine.observe_observation_age(100.0, now)
    assert engine.evaluate(now) == []
    engine.observe_observation_age(400.0, now + 10 * MS)
    actions = engine.evaluate(now + 10 * MS)
    assert requests(actions) == ["hold"]
    assert "400 ms old" in actions[0].reason and "\n" not in actions[0].reason
    engine.observe_observation_age(450.0, now + 20 * MS)
    assert engine.evaluate(now + 20 * MS) == []  # once per breach
    # The old sample leaves the 1 s window: clear from then on, released 2 s later.
    assert engine.evaluate(now + 1100 * MS) == []
    assert engine.statuses[0].state == State.BREACHED
    assert engine.evaluate(now + 2500 * MS) == []
    assert requests(engine.evaluate(now + 3200 * MS)) == ["release"]
    assert engine.statuses[0].state == State.RELEASED
    # A new breach holds again.
    engine.observe_observation_age(500.0, now + 4 * S)
    assert requests(engine.evaluate(now + 4 * S)) == ["hold"]


def test_a_condition_back_within_the_hysteresis_restarts_it() -> None:
    engine = DeadlineEngine([rule(Kind.CAMERA_GAP, 200.0, release_after_s=1.0)])

    def frames(start_ms: int, end_ms: int) -> list:
        actions = []
        for at_ms in range(start_ms, end_ms, 50):
            engine.observe_camera_frame("top", at_ms * MS)
            actions += engine.evaluate(at_ms * MS)
        return actions

    assert frames(0, 100) == []
    assert requests(engine.evaluate(400 * MS)) == ["hold"]  # 350 ms since the last frame
    assert frames(400, 1000) == []  # clear for 0.6 s: not yet released
    assert engine.evaluate(1300 * MS) == []  # a second gap (350 ms): still breached...
    assert engine.statuses[0].state == State.BREACHED
    assert frames(1300, 2250) == []  # ...and the hysteresis starts again from 1.3 s
    assert requests(frames(2250, 2400)) == ["release"]


def test_camera_gap_names_the_camera_and_ignores_unseen_ones() -> None:
    engine = DeadlineEngine([rule(Kind.CAMERA_GAP, 200.0, cameras=("top", "wrist"))])
    assert engine.evaluate(S) == []  # nothing seen yet: start-up is not a breach
    engine.observe_camera_frame("top", S)
    engine.observe_camera_frame("wrist", S + 250 * MS)
    actions = engine.evaluate(S + 300 * MS)
    assert requests(actions) == ["hold"] and "'top'" in actions[0].reason


def test_policy_latency_percentile_over_the_window() -> None:
    engine = DeadlineEngine(
        [rule(Kind.POLICY_LATENCY, 300.0, window_s=5.0, percentile=90.0, min_samples=5)]
    )
    t = 50 * S
    for i in range(4):
        engine.observe_policy_latency(900.0, t + i * MS)
    assert engine.evaluate(t + 5 * MS) == []  # fewer than min_samples
    for i in range(36):
        engine.observe_policy_latency(100.0, t + (10 + i) * MS)
    assert engine.evaluate(t + 50 * MS) == []  # p90 with 4 slow in 40 is fast
    for i in range(4):
        engine.observe_policy_latency(900.0, t + (60 + i) * MS)
    actions = engine.evaluate(t + 70 * MS)
    assert requests(actions) == ["hold"] and "p90" in actions[0].reason
    # No auto-release configured: stays breached while the arm holds...
    engine.observe_mode("HOLD")
    assert engine.evaluate(t + 10 * S) == []
    assert engine.statuses[0].state == State.BREACHED
    # ...and is ok again once clear and the operator released the arm.
    engine.observe_mode("POLICY")
    assert engine.evaluate(t + 10 * S + MS) == []
    assert engine.statuses[0].state == State.OK


def test_driver_overrun_rate_trips_clears_and_survives_a_restart() -> None:
    engine = DeadlineEngine(
        [rule(Kind.DRIVER_OVERRUN_RATE, 0.05, window_s=2.0, release_after_s=0.5)]
    )
    for second in range(4):
        engine.observe_driver_ticks(second * 200, 0, second * S)
    assert engine.evaluate(3 * S) == []
    engine.observe_driver_ticks(4 * 200, 40, 4 * S)  # 40 overruns in the 400 ticks of 2 s
    actions = engine.evaluate(4 * S)
    assert requests(actions) == ["hold"] and "10.0%" in actions[0].reason
    for second in range(5, 9):
        engine.observe_driver_ticks(second * 200, 40, second * S)
    assert requests(engine.evaluate(7 * S)) == []  # clear from 7 s (window past the burst)
    assert requests(engine.evaluate(8 * S)) == ["release"]
    engine.observe_driver_ticks(10, 0, 9 * S)  # restarted: counters reset, no false ratio
    assert engine.evaluate(9 * S) == []


def test_liveliness_only_for_nodes_seen_once() -> None:
    engine = DeadlineEngine(
        [rule(Kind.LIVELINESS, 0.5, nodes=("driver", "policy"), release_after_s=1.0)]
    )
    engine.observe_nodes(["driver"], S)  # 'policy' never seen: start-up order, no breach
    assert engine.evaluate(S + 400 * MS) == []
    actions = engine.evaluate(S + 600 * MS)  # 'driver' gone for 0.6 s
    assert requests(actions) == ["hold"] and "'driver'" in actions[0].reason
    released = []
    for at_ms in range(2000, 3200, 100):  # back in the graph, seen at every check
        engine.observe_nodes(["driver"], at_ms * MS)
        released += requests(engine.evaluate(at_ms * MS))
    assert released == ["release"]


def test_release_waits_for_every_breached_rule() -> None:
    engine = DeadlineEngine(
        [
            rule(Kind.CAMERA_GAP, 200.0, release_after_s=0.5),
            DeadlineRule("stale", Kind.OBSERVATION_AGE, 100.0, release_after_s=0.0),
        ]
    )
    engine.observe_camera_frame("top", 0)
    engine.observe_observation_age(500.0, 300 * MS)
    assert requests(engine.evaluate(300 * MS)) == ["hold", "hold"]
    for t in range(4, 30):
        engine.observe_camera_frame("top", t * 100 * MS)
        assert "release" not in requests(engine.evaluate(t * 100 * MS))
    assert [s.state for s in engine.statuses] == [State.RELEASED, State.BREACHED]


@pytest.mark.parametrize("embodiment", ["so100", "yam_bimanual", "franka"])
def test_shipped_deadline_files_load(embodiment: str) -> None:
    rules = load_rules(ROOT / f"config/deadlines/{embodiment}.yaml")
    assert {r.kind for r in rules} == set(Kind)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"deadline": {}}, "one top-level key 'deadlines'"),
        (
            {"deadlines": {"a": {"kind": "camera_gaps", "limit_ms": 1}}},
            "Did you mean 'camera_gap'",
        ),
        ({"deadlines": {"a": {"kind": "camera_gap", "limit_ms": 1, "windw_s": 2}}}, "windw_s"),
        ({"deadlines": {"a": {"kind": "camera_gap", "limit_s": 1}}}, "allowed: cameras, kind"),
        ({"deadlines": {"a": {"kind": "policy_latency"}}}, "needs 'limit_ms'"),
        ({"deadlines": {"a": {"kind": "camera_gap", "limit_ms": "x"}}}, "deadline 'a'"),
        ({"deadlines": {"a": {"kind": "camera_gap", "limit_ms": -1}}}, "limit must be"),
        ({"deadlines": {"a": {"kind": "liveliness", "limit_s": 1}}}, "needs `nodes"),
        ({"deadlines": {"a": 3}}, "expected a record"),
        (
            {
                "deadlines": {
                    "a": {"kind": "observation_age", "limit_ms": 1, "release_after_s": -1}
                }
            },
            "release_after_s",
        ),
    ],
)
def test_malformed_rules_name_the_key_and_the_allowed_values(
    document: object, message: str
) -> None:
    with pytest.raises(DeadlineConfigError, match="deadline") as info:
        parse_rules(document, "so100.yaml")
    assert message in str(info.value)


def test_malformed_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("deadlines: [unclosed\n")
    with pytest.raises(DeadlineConfigError, match=r"bad\.yaml"):
        load_rules(path)
    path.write_text(yaml.safe_dump({"deadlines": {"x": {"kind": "nope", "limit_ms": 1}}}))
    with pytest.raises(DeadlineConfigError, match="observation_age, policy_latency"):
        load_rules(path)
    with pytest.raises(DeadlineConfigError, match=r"missing\.yaml"):
        load_rules(tmp_path / "missing.yaml")


def test_next_due_is_when_a_time_driven_rule_would_trip_or_release() -> None:
    engine = DeadlineEngine(
        [
            rule(Kind.CAMERA_GAP, 300.0, release_after_s=1.0),
            rule(Kind.LIVELINESS, 0.5, nodes=("driver",)),
            rule(Kind.OBSERVATION_AGE, 250.0),  # window-based: judged on input, never due
        ]
    )
    assert engine.next_due_ns() is None  # nothing seen yet
    engine.observe_camera_frame("wrist", 10 * S)
    engine.observe_camera_frame("top", 10 * S + 50 * MS)
    assert engine.next_due_ns() == 10 * S + 300 * MS + 1  # the oldest camera's gap
    engine.observe_nodes(["driver"], 10 * S - 400 * MS)
    due = engine.next_due_ns()
    assert due == 10 * S + 100 * MS + 1  # the node's absence passes 0.5 s first
    assert engine.evaluate(due - 1) == []  # exactly at the limit: not yet
    engine.observe_nodes(["driver"], due)
    assert requests(engine.evaluate(due)) == []
    gap_due = engine.next_due_ns()
    assert gap_due == 10 * S + 300 * MS + 1
    assert requests(engine.evaluate(gap_due)) == ["hold"]  # the camera gap, at its due time
    assert engine.next_due_ns() == due + 500 * MS + 1  # breached camera rule: nothing due
    engine.observe_camera_frame("wrist", 11 * S)
    engine.observe_camera_frame("top", 11 * S)
    engine.observe_nodes(["driver"], 11 * S)
    assert engine.evaluate(11 * S) == []  # clear from 11 s: release due 1 s later
    assert engine.next_due_ns() == 11 * S + 500 * MS + 1  # the node's limit comes before it
    engine.observe_camera_frame("wrist", 11 * S + 900 * MS)
    engine.observe_camera_frame("top", 11 * S + 900 * MS)
    engine.observe_nodes(["driver"], 11 * S + 900 * MS)
    assert engine.next_due_ns() == 12 * S  # the release hysteresis ends first
    assert requests(engine.evaluate(12 * S)) == ["release"]
