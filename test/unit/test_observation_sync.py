"""ObservationSync: the freshest complete set within a stamp tolerance, each frame used once."""

from __future__ import annotations

import threading
import time

import pytest

from vla_runtime.core.observation_sync import ObservationSync

MS = 1_000_000


def sync_of(*, scene: bool = False, history: int = 8) -> ObservationSync[str]:
    others = ("joint_states", "scene") if scene else ("joint_states",)
    return ObservationSync(("top", "wrist"), others, history=history)


def test_nothing_until_every_source_has_a_message() -> None:
    sync = sync_of()
    assert sync.latest_complete(50 * MS) is None
    sync.add("top", 100 * MS, "top@100")
    sync.add("wrist", 101 * MS, "wrist@101")
    assert sync.missing() == ("joint_states",)
    assert sync.latest_complete(50 * MS) is None
    assert sync.counters().incomplete == 1
    sync.add("joint_states", 99 * MS, "q@99")
    synced = sync.latest_complete(50 * MS)
    assert synced is not None
    assert {name: m.payload for name, m in synced.messages.items()} == {
        "top": "top@100",
        "wrist": "wrist@101",
        "joint_states": "q@99",
    }
    # Stamped with the oldest camera frame; the reference is the newest one.
    assert (synced.stamp_ns, synced.reference_ns) == (100 * MS, 101 * MS)
    assert synced.spread_ns == 2 * MS


def test_the_freshest_set_wins_and_each_source_contributes_its_closest_message() -> None:
    sync = sync_of()
    for k in range(5):  # cameras at ~30 Hz, a little out of phase
        sync.add("top", (1000 + 33 * k) * MS, f"top{k}")
        sync.add("wrist", (1004 + 33 * k) * MS, f"wrist{k}")
    for t in range(990, 1140, 10):  # joint states at 100 Hz
        sync.add("joint_states", t * MS, f"q{t}")
    synced = sync.latest_complete(20 * MS)
    assert synced is not None
    payloads = {name: m.payload for name, m in synced.messages.items()}
    assert payloads == {"top": "top4", "wrist": "wrist4", "joint_states": "q1130"}
    assert synced.stamp_ns == 1132 * MS  # top4: the oldest camera frame of the set
    assert synced.reference_ns == 1136 * MS


def test_a_reference_frame_is_never_returned_twice_and_time_never_goes_back() -> None:
    sync = sync_of()
    sync.add("top", 100 * MS, "top0")
    sync.add("wrist", 100 * MS, "wrist0")
    sync.add("joint_states", 100 * MS, "q0")
    assert sync.latest_complete(10 * MS) is not None
    assert sync.latest_complete(10 * MS) is None  # nothing new: no second answer
    sync.add("joint_states", 110 * MS, "q1")  # new joint state alone is not a new observation
    assert sync.latest_complete(10 * MS) is None
    sync.add("top", 90 * MS, "late top")  # an older frame arriving late never wins
    assert sync.latest_complete(10 * MS) is None
    assert sync.counters().out_of_order == 1
    sync.add("top", 133 * MS, "top1")  # one new frame: a new set, reusing the wrist frame
    synced = sync.latest_complete(40 * MS)
    assert synced is not None
    assert synced.messages["top"].payload == "top1"
    assert synced.messages["wrist"].payload == "wrist0"
    assert synced.stamp_ns == 100 * MS
    assert sync.counters().sets == 2


def test_stamps_beyond_the_tolerance_are_not_synchronised() -> None:
    sync = sync_of()
    sync.add("top", 100 * MS, "top")
    sync.add("wrist", 100 * MS, "wrist")
    sync.add("joint_states", 30 * MS, "old q")  # 70 ms older than the frames
    assert sync.latest_complete(50 * MS) is None
    assert sync.counters().unsynchronised == 1
    sync.add("joint_states", 140 * MS, "q")  # 40 ms after the frames: within 50 ms
    synced = sync.latest_complete(50 * MS)
    assert synced is not None and synced.messages["joint_states"].payload == "q"


def test_an_older_frame_is_used_when_the_newest_cannot_be_matched_yet() -> None:
    # The scene for the newest frame has not arrived yet (think is still computing it): the
    # newest frame whose scene is there is answered instead.
    sync = sync_of(scene=True)
    for k, stamp in enumerate((100, 133, 166)):
        sync.add("top", stamp * MS, f"top{k}")
        sync.add("wrist", stamp * MS, f"wrist{k}")
        sync.add("joint_states", stamp * MS, f"q{k}")
    sync.add("scene", 133 * MS, "scene1")
    synced = sync.latest_complete(5 * MS)
    assert synced is not None
    assert synced.messages["top"].payload == "top1"
    assert synced.messages["scene"].payload == "scene1"
    assert sync.counters().frames_skipped == 2  # top0 and wrist0 will never be answered
    sync.add("scene", 166 * MS, "scene2")
    synced = sync.latest_complete(5 * MS)
    assert synced is not None and synced.messages["scene"].payload == "scene2"
    assert synced.stamp_ns == 166 * MS


def test_rings_keep_only_the_last_messages() -> None:
    sync = ObservationSync(("top",), ("joint_states",), history={"joint_states": 2})
    for t in range(10):
        sync.add("top", t * MS, f"top{t}")
        sync.add("joint_states", t * MS, f"q{t}")
    sync.add("top", 100 * MS, "top100")
    synced = sync.latest_complete(200 * MS)
    assert synced is not None
    assert synced.messages["joint_states"].payload == "q9"
    assert synced.messages["top"].payload == "top100"


def test_a_duplicate_stamp_replaces_the_message_and_reset_forgets_everything() -> None:
    sync = sync_of()
    sync.add("top", 100 * MS, "first")
    sync.add("top", 100 * MS, "second")
    sync.add("wrist", 100 * MS, "wrist")
    sync.add("joint_states", 100 * MS, "q")
    synced = sync.latest_complete(0)
    assert synced is not None and synced.messages["top"].payload == "second"
    sync.reset()
    assert sync.missing() == ("top", "wrist", "joint_states")
    assert sync.counters().sets == 0
    for name in ("top", "wrist", "joint_states"):
        sync.add(name, 100 * MS, name)  # the same stamps again: fresh after a reset
    assert sync.latest_complete(0) is not None


def test_configuration_mistakes_are_named() -> None:
    with pytest.raises(ValueError, match="at least one camera"):
        ObservationSync((), ("joint_states",))
    with pytest.raises(ValueError, match="unique"):
        ObservationSync(("top", "top"))
    with pytest.raises(ValueError, match="history"):
        ObservationSync(("top",), history=0)
    sync = sync_of()
    with pytest.raises(KeyError, match="unknown source 'front'"):
        sync.add("front", 0, "x")
    with pytest.raises(ValueError, match="tolerance"):
        sync.latest_complete(-1)


def test_a_producer_and_a_consumer_thread_never_see_a_frame_twice() -> None:
    sync = sync_of(history=16)
    frames = 500
    seen: list[int] = []
    done = threading.Event()

    def consume() -> None:
        while not done.is_set() or sync.has_fresh_frame():
            synced = sync.latest_complete(2 * MS)
            if synced is not None:
                seen.append(synced.reference_ns)
            time.sleep(0.0002)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for k in range(frames):  # the middleware's callbacks, interleaved like a 3-topic stream
        for name in sync.sources:
            sync.add(name, k * MS, f"{name}{k}")
        if k % 10 == 0:
            time.sleep(0.001)
    done.set()
    consumer.join(timeout=10)
    assert not consumer.is_alive()
    assert len(seen) > 1, "the consumer got at most one set"
    assert seen == sorted(set(seen))  # strictly increasing: never twice, never back in time
    assert seen[-1] == (frames - 1) * MS
    assert sync.counters().sets == len(seen)
