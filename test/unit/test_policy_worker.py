"""PolicyWorker with the real tiny torch policy: fresh observations only, failures survived."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from vla_runtime.policy.interface import Observation, Policy, PolicyOutput
from vla_runtime.policy.registry import PolicySpec, create_policy
from vla_runtime.policy.worker import STALL_S, JointSample, PolicyWorker, WorkerOptions

pytest.importorskip("torch")

MS = 1_000_000
JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
CAMERAS = ("third_person", "wrist")


@pytest.fixture(scope="module")
def flow_policy() -> Policy:
    return create_policy(PolicySpec(embodiment="so100", threads=1))


@pytest.fixture(scope="module")
def depth_policy() -> Policy:
    return create_policy(PolicySpec(embodiment="so100", threads=1, depth=True))


@pytest.fixture(scope="module")
def recurrent_policy() -> Policy:
    spec = PolicySpec(
        embodiment="so100", head="recurrent", threshold=0.0, max_iterations=4, threads=1
    )
    return create_policy(spec)


@dataclass
class Collector:
    outputs: list[PolicyOutput] = field(default_factory=list)
    errors: list[tuple[str, Observation]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_output(self, output: PolicyOutput) -> None:
        with self.lock:
            self.outputs.append(output)

    def on_error(self, message: str, observation: Observation) -> None:
        with self.lock:
            self.errors.append((message, observation))


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def make_worker(collector: Collector) -> Iterator[Callable[..., PolicyWorker]]:
    workers: list[PolicyWorker] = []

    def make(policy: Policy, **options: object) -> PolicyWorker:
        worker = PolicyWorker(
            policy, collector.on_output, collector.on_error, WorkerOptions(**options)
        )
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.stop()


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def feed(
    worker: PolicyWorker,
    stamp_ns: int,
    *,
    third_person: np.ndarray | None = None,
    positions: np.ndarray | None = None,
) -> None:
    """One frame per camera and a joint state, all at `stamp_ns`."""
    first = image(stamp_ns) if third_person is None else third_person
    worker.add_image("third_person", stamp_ns, first)
    worker.add_image("wrist", stamp_ns, image(stamp_ns + 1))
    state = np.linspace(-0.2, 0.2, len(JOINTS)) if positions is None else positions
    worker.add_joint_state(stamp_ns, JOINTS, state)


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_chunks_answer_fresh_observations_back_to_back(
    flow_policy: Policy, make_worker: Callable[..., PolicyWorker], collector: Collector
) -> None:
    worker = make_worker(flow_policy)
    worker.start()
    stamps = []
    start_ns = time.time_ns()
    deadline = time.monotonic() + 20.0
    # Frames at 100 Hz, faster than the policy (frames get skipped), until a chunk is out;
    # then a few more, so that a later frame is answered too.
    while not collector.outputs and time.monotonic() < deadline:
        stamps.append(start_ns + len(stamps) * 10 * MS)
        feed(worker, stamps[-1])
        time.sleep(0.01)
    for _ in range(5):
        stamps.append(start_ns + len(stamps) * 10 * MS)
        feed(worker, stamps[-1])
        time.sleep(0.01)
    wait_for(
        lambda: bool(collector.outputs) and collector.outputs[-1].stamp_ns == stamps[-1],
        20.0,
        "the freshest frame's chunk",
    )
    count = len(collector.outputs)
    time.sleep(0.5)  # no new frames: nothing more may start
    assert len(collector.outputs) == count, "inference ran again without a new frame"

    answered = [output.stamp_ns for output in collector.outputs]
    assert len(answered) >= 2
    assert set(answered) <= set(stamps)  # each chunk keeps its observation's capture stamp
    assert answered == sorted(set(answered))  # never twice, never back in time
    for output in collector.outputs:
        assert output.actions.shape == (30, len(JOINTS))
        assert np.isfinite(output.actions).all()
        assert output.joint_names == JOINTS
        assert output.chunk_rate_hz == 30.0
        assert output.depth_codes is None
    stats = worker.stats()
    assert (stats.inferences, stats.failures) == (count, 0)
    assert stats.last_trace.total_ms > 0 and stats.last_trace.iterations == 10
    level, message, values = worker.diagnostics()
    assert (level, message) == ("OK", "running")
    for key in ("vision_ms", "prefill_ms", "action_ms", "total_ms", "iterations", "stop_reason"):
        assert key in values
    assert values["inferences"] == str(count) and values["stop_reason"] == "steps"
    assert int(values["frames_skipped"]) > 0
    worker.stop()
    assert not worker.running
    worker.stop()  # idempotent


def test_a_failed_step_publishes_nothing_and_the_worker_keeps_going(
    flow_policy: Policy, make_worker: Callable[..., PolicyWorker], collector: Collector
) -> None:
    worker = make_worker(flow_policy)
    worker.start()
    gray = np.zeros((48, 64), np.uint8)  # the policy wants HxWx3 RGB
    feed(worker, 1000 * MS, third_person=gray)
    wait_for(lambda: len(collector.errors) == 1, 20.0, "the first failure")
    message, observation = collector.errors[0]
    assert "third_person" in message and "HxWx3" in message
    assert observation.stamp_ns == 1000 * MS
    level, reported, values = worker.diagnostics()
    assert level == "ERROR" and reported == message and values["failures"] == "1"

    feed(worker, 1100 * MS, positions=np.full(len(JOINTS), np.nan))  # non-finite state
    wait_for(lambda: len(collector.errors) == 2, 20.0, "the second failure")
    assert "non-finite joint positions" in collector.errors[1][0]

    feed(worker, 1200 * MS)  # a good observation: the worker answers it
    wait_for(lambda: len(collector.outputs) == 1, 20.0, "a chunk after the failures")
    assert collector.outputs[0].stamp_ns == 1200 * MS
    stats = worker.stats()
    assert (stats.inferences, stats.failures) == (1, 2)
    assert worker.diagnostics()[0] == "OK"  # the latest step succeeded


def test_an_exception_in_the_output_callback_is_a_counted_failure(
    flow_policy: Policy, collector: Collector
) -> None:
    calls = []

    def broken(output: PolicyOutput) -> None:
        calls.append(output)
        raise RuntimeError("publisher gone")

    worker = PolicyWorker(flow_policy, broken, collector.on_error)
    worker.start()
    try:
        feed(worker, 1000 * MS)
        wait_for(lambda: len(collector.errors) == 1, 20.0, "the failure")
        feed(worker, 1100 * MS)
        wait_for(lambda: len(calls) == 2, 20.0, "a second step")
        assert worker.running
        assert "publisher gone" in collector.errors[0][0]
        assert worker.stats().inferences == 0
    finally:
        worker.stop()


def test_joint_states_of_another_embodiment_are_rejected_and_reported(
    flow_policy: Policy, make_worker: Callable[..., PolicyWorker], collector: Collector
) -> None:
    worker = make_worker(flow_policy)
    worker.start()
    problem = worker.add_joint_state(100 * MS, ("joint1", "joint2"), [0.0, 0.1])
    assert problem is not None and "shoulder_pan" in problem and "joint1" in problem
    for camera in CAMERAS:
        assert worker.add_image(camera, 100 * MS, image(1)) is None
    time.sleep(0.3)
    assert collector.outputs == [] and collector.errors == []  # nothing to infer on
    level, message, values = worker.diagnostics()
    assert level == "WARN" and message == problem
    assert values["joint_states_rejected"] == "1" and values["missing"] == "joint_states"
    assert worker.diagnostics()[1] == "waiting for joint_states"  # reported once
    worker.add_joint_state(100 * MS, JOINTS, np.zeros(len(JOINTS)))
    wait_for(lambda: len(collector.outputs) == 1, 20.0, "a chunk once the state fits")


def test_bgr_frames_become_rgb_joints_are_reordered_and_unknown_inputs_rejected(
    flow_policy: Policy, make_worker: Callable[..., PolicyWorker]
) -> None:
    worker = make_worker(flow_policy)  # not started: the sync is inspected directly
    bgr = image(3)
    assert worker.add_image("third_person", 5 * MS, bgr, "bgr8") is None
    assert worker.add_image("wrist", 5 * MS, bgr) is None
    # The same joints in another order are reordered into the policy's order, not rejected.
    order = (*JOINTS[1:], JOINTS[0])
    positions = np.arange(len(JOINTS), dtype=np.float64) * 0.1
    assert worker.add_joint_state(5 * MS, order, np.roll(positions, -1)) is None
    synced = worker.sync.latest_complete(0)
    assert synced is not None
    state = synced.messages["joint_states"].payload
    assert isinstance(state, JointSample) and np.array_equal(state.positions, positions)
    assert np.array_equal(synced.messages["third_person"].payload, bgr[..., ::-1])
    assert np.array_equal(synced.messages["wrist"].payload, bgr)
    assert "not one of" in (worker.add_image("front", 5 * MS, bgr) or "")
    assert "mono16" in (worker.add_image("wrist", 5 * MS, bgr, "mono16") or "")
    assert worker.stats().inputs_rejected == 2


def test_the_scene_drives_depth_reasoning(
    depth_policy: Policy, make_worker: Callable[..., PolicyWorker], collector: Collector
) -> None:
    # A long scene wait: the frame waits for its scene, which arrives after the frame.
    worker = make_worker(depth_policy, scene=True, scene_wait_s=30.0)
    worker.start()
    feed(worker, 100 * MS)
    time.sleep(0.3)
    assert collector.outputs == []  # still waiting for the primary frame's scene
    grid = np.zeros((10, 10, 2), np.uint8)
    grid[..., 0] = 7
    grid[2:4, 5:8, 1] = 1  # six changed cells
    assert worker.add_scene(100 * MS, grid) is None
    wait_for(lambda: len(collector.outputs) == 1, 20.0, "a chunk with depth tokens")
    output = collector.outputs[0]
    assert output.depth_codes is not None and output.depth_codes.shape == (10, 10)
    assert output.depth_stamp_ns == 100 * MS  # the primary frame's stamp, like the scene
    unchanged = grid[..., 1] == 0
    assert np.array_equal(output.depth_codes[unchanged], grid[..., 0][unchanged])
    assert output.trace.changed_cells == 6
    assert worker.stats().scenes_missing == 0

    bad = grid.copy()
    bad[0, 0, 0] = 200  # codes are 0..127
    assert "depth codes" in (worker.add_scene(200 * MS, bad) or "")
    assert "10x10x2" in (worker.add_scene(200 * MS, grid[:5]) or "")
    assert worker.stats().inputs_rejected == 2


def test_without_a_scene_every_cell_is_decoded(
    depth_policy: Policy, make_worker: Callable[..., PolicyWorker], collector: Collector
) -> None:
    worker = make_worker(depth_policy, scene=True, scene_wait_s=0.0)  # think node absent
    worker.start()
    feed(worker, 100 * MS)
    wait_for(lambda: len(collector.outputs) == 1, 20.0, "a chunk without a scene")
    output = collector.outputs[0]
    assert output.trace.changed_cells == 100 and output.depth_stamp_ns == 100 * MS
    assert worker.stats().scenes_missing == 1
    assert worker.diagnostics()[2]["scenes_missing"] == "1"


def test_the_time_budget_reaches_the_anytime_head(
    recurrent_policy: Policy, make_worker: Callable[..., PolicyWorker], collector: Collector
) -> None:
    unbounded = make_worker(recurrent_policy)
    unbounded.start()
    feed(unbounded, 100 * MS)
    wait_for(lambda: len(collector.outputs) == 1, 20.0, "an unbounded chunk")
    unbounded.stop()
    assert collector.outputs[0].trace.stop_reason == "max_iterations"

    bounded = make_worker(recurrent_policy, time_budget_s=1e-6)
    bounded.start()
    feed(bounded, 200 * MS)
    wait_for(lambda: len(collector.outputs) == 2, 20.0, "a bounded chunk")
    trace = collector.outputs[1].trace
    assert (trace.stop_reason, trace.iterations) == ("deadline", 1)


def test_max_rate_caps_inference(
    flow_policy: Policy, make_worker: Callable[..., PolicyWorker], collector: Collector
) -> None:
    worker = make_worker(flow_policy, max_rate_hz=2.0)
    worker.start()
    start_ns = time.time_ns()
    began = time.monotonic()
    k = 0
    while time.monotonic() - began < 1.6:  # frames at ~50 Hz for 1.6 s
        feed(worker, start_ns + k * 20 * MS)
        k += 1
        time.sleep(0.02)
    worker.stop()
    # At 2 Hz: starts at 0, 0.5, 1.0, 1.5 s at most.
    assert 2 <= len(collector.outputs) <= 4, len(collector.outputs)


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="max_rate_hz"):
        WorkerOptions(max_rate_hz=-1.0)
    with pytest.raises(ValueError, match="sync_tolerance_s"):
        WorkerOptions(sync_tolerance_s=float("nan"))


def test_stamps_that_never_match_are_reported(
    flow_policy: Policy, make_worker: Callable[..., PolicyWorker], collector: Collector
) -> None:
    worker = make_worker(flow_policy, sync_tolerance_s=0.01)
    worker.start()
    start_ns = time.time_ns()
    began = time.monotonic()
    k = 0
    while time.monotonic() - began < STALL_S + 0.3:
        stamp = start_ns + k * 50 * MS
        for camera in CAMERAS:
            worker.add_image(camera, stamp, image(k))
        worker.add_joint_state(stamp - 125 * MS, JOINTS, np.zeros(len(JOINTS)))  # >= 25 ms off
        k += 1
        time.sleep(0.05)
    level, message, values = worker.diagnostics()
    assert collector.outputs == []
    assert level == "WARN" and "within 10 ms" in message, message
    assert int(values["unsynchronised"]) > 0
