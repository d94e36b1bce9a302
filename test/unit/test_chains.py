"""Chain latency per observation: capture -> camera -> scene -> policy -> chunk -> applied."""

from __future__ import annotations

import pytest

from vla_runtime.core.chains import ChainTracker

MS = 1_000_000
CAPTURE = 1_000_000 * MS


def test_a_full_chain() -> None:
    chains = ChainTracker()
    chains.on_camera("top", CAPTURE, CAPTURE + 5 * MS)
    chains.on_camera("wrist", CAPTURE, CAPTURE + 7 * MS)
    chains.on_camera("top", CAPTURE, CAPTURE + 99 * MS)  # a duplicate keeps the first arrival
    chains.on_scene(CAPTURE, CAPTURE + 20 * MS)
    chains.on_chunk(CAPTURE, CAPTURE + 150 * MS)
    traced = chains.on_policy_trace(total_ms=100.0)
    assert traced is not None and chains.on_policy_trace(100.0) is None  # once per chunk
    applied = chains.on_applied(CAPTURE, CAPTURE + 160 * MS)
    assert applied is not None and chains.on_applied(CAPTURE, CAPTURE + 170 * MS) is None
    chain = chains.get(CAPTURE)
    assert chain is not None
    assert chain.camera_age_ms("top") == pytest.approx(5.0)
    assert chain.scene_age_ms == pytest.approx(20.0)
    assert chain.policy_wait_ms == pytest.approx(50.0)  # chunk arrival 150 - total 100
    assert chain.chunk_age_ms == pytest.approx(150.0)
    assert chain.reaction_ms == pytest.approx(160.0)
    assert chain.stages_ms() == pytest.approx(
        {
            "camera/top": 5.0,
            "camera/wrist": 7.0,
            "scene": 20.0,
            "policy_start": 50.0,
            "chunk": 150.0,
            "reaction": 160.0,
        }
    )


def test_partial_chains_unmatched_and_capacity() -> None:
    chains = ChainTracker(capacity=3)
    assert chains.on_policy_trace(10.0) is None  # no chunk yet
    for i in range(5):
        chains.on_camera("top", CAPTURE + i * MS, CAPTURE + i * MS + MS)
    assert chains.get(CAPTURE) is None  # evicted: only the newest 3 are kept
    chain = chains.get(CAPTURE + 4 * MS)
    assert chain is not None and chain.reaction_ms is None and chain.policy_wait_ms is None
    assert chains.on_applied(CAPTURE - MS, CAPTURE) is not None
    assert chains.unmatched_applied == 1
    with pytest.raises(ValueError):
        ChainTracker(capacity=0)
