"""Camera replay -> think_node -> policy_node (tiny, depth reasoning), each its own process.

A rendered sequence of the SO100 world (the arm sweeps over the table, then rests; looped) is
replayed by two camera_nodes. think_node flags the third-person cells that changed against
their references; policy_node decodes only those and returns the full grid, which think_node
commits. The test plays the driver (/robot/joint_states) and watches scenes, depth tokens and
diagnostics. Covered: the first grid answers a full refresh, later ones decode only a few
cells while the arm moves and none while it rests, the policy keeps every cached code it was
given, the cache only ever holds codes the policy predicted for that cell on a frame that
flagged it, /think/reset forces a full re-prediction, and bad inputs are counted, not used.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from graph_helpers import spin_in_background, start_process, stop

from vla_runtime import ros
from vla_runtime.ros import convert
from vla_runtime.ros.interfaces import get_message, get_service

pytestmark = pytest.mark.integration
pytest.importorskip("torch")

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
Image = get_message("sensor_msgs/msg/Image")
JointState = get_message("sensor_msgs/msg/JointState")
DiagnosticArray = get_message("diagnostic_msgs/msg/DiagnosticArray")
Trigger = get_service("std_srvs/srv/Trigger")
# Node start-up (torch import, model build) and the first inference on a loaded 2-core machine.
FIRST_TOKENS_S = 120.0
RATE_HZ = 10.0


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vla_runtime.sim.sequences import SweepConfig, arm_sweep, write_recording

    frames = arm_sweep(SweepConfig(moving_s=3.0, static_s=3.0, rate_hz=RATE_HZ))
    return write_recording(tmp_path_factory.mktemp("think") / "sweep.mcap", frames, RATE_HZ)


def node(module: str, *parameters: str) -> subprocess.Popen[str]:
    args: list[str] = []
    for parameter in parameters:
        args += ["-p", parameter]
    return start_process("-m", f"vla_runtime.nodes.{module}", "--ros-args", *args)


class Watcher:
    """Plays the driver; records scenes, depth tokens and think/policy statuses by stamp."""

    def __init__(self) -> None:
        self.node = ros.Node("think_watcher")
        self.lock = threading.Lock()
        self.scenes: dict[int, np.ndarray] = {}
        self.scene_order: list[int] = []
        self.tokens: list[tuple[int, np.ndarray]] = []
        self.statuses: dict[str, Any] = {}
        sensor = ros.qos_profile_sensor_data
        self.states = self.node.create_publisher(JointState, "/robot/joint_states", sensor)
        self.frames = self.node.create_publisher(Image, "/cameras/third_person/image_raw", sensor)
        self.bad_tokens = self.node.create_publisher(Image, "/policy/depth_tokens", 10)
        self.node.create_subscription(Image, "/think/scene", self._scene, sensor)
        self.node.create_subscription(Image, "/policy/depth_tokens", self._tokens, 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._diagnostics, 10)
        self.reset = self.node.create_client(Trigger, "/think/reset")
        spin_in_background(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, daemon=True)
        self._thread.start()

    def _play(self) -> None:
        while not self._stop.is_set():
            self.states.publish(
                convert.numpy_to_joint_state(
                    JOINTS, np.zeros(len(JOINTS)), stamp_ns=time.time_ns()
                )
            )
            self._stop.wait(0.02)

    def _scene(self, msg: Any) -> None:
        grid = convert.image_to_numpy(msg)
        with self.lock:
            stamp = convert.stamp_to_ns(msg.header.stamp)
            self.scenes[stamp] = grid
            self.scene_order.append(stamp)

    def _tokens(self, msg: Any) -> None:
        grid = convert.image_to_numpy(msg).reshape(msg.height, msg.width)
        with self.lock:
            self.tokens.append((convert.stamp_to_ns(msg.header.stamp), grid))

    def _diagnostics(self, msg: Any) -> None:
        with self.lock:
            for status in msg.status:
                self.statuses[status.name] = status

    def values(self, name: str) -> dict[str, str]:
        with self.lock:
            status = self.statuses.get(name)
        return {kv.key: kv.value for kv in status.values} if status is not None else {}

    def answered(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(stamp, scene grid, token grid) for every token grid whose scene was seen."""
        with self.lock:
            return [(s, self.scenes[s], t) for s, t in self.tokens if s in self.scenes]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def watcher(ros_context: None) -> Iterator[Watcher]:
    w = Watcher()
    yield w
    w.close()


def wait_for(
    condition: Callable[[], bool], timeout_s: float, what: str, processes: list[Any]
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        for process in processes:
            assert process.poll() is None, f"a node exited: {stop(process)}"
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def test_replay_think_policy_decodes_only_changed_cells_with_a_consistent_cache(
    recording: Path, watcher: Watcher, processes: list[subprocess.Popen[str]]
) -> None:
    processes.append(
        node(
            "policy_node", "threads:=1", "head:=flow", "flow_steps:=2",
            "scene_topic:=/think/scene", "scene_wait_s:=0.2", "sync_tolerance_s:=0.08",
        )
    )  # fmt: skip
    processes.append(node("think_node", "embodiment:=so100"))
    for camera in ("third_person", "wrist"):
        processes.append(
            node(
                "camera_node", f"name:={camera}", "source:=replay", "fps:=10.0",
                f"source.file:={recording}", "source.loop:=true",
            )
        )  # fmt: skip

    wait_for(lambda: len(watcher.answered()) >= 1, FIRST_TOKENS_S, "depth tokens", processes)
    first_stamp, first_scene, _ = watcher.answered()[0]
    assert first_scene[..., 1].all()  # an empty cache: every cell is predicted

    def partial_and_static() -> bool:
        counts = [int(scene[..., 1].sum()) for _, scene, _ in watcher.answered()[1:]]
        return any(0 < c <= 30 for c in counts) and any(c == 0 for c in counts)

    wait_for(partial_and_static, 90.0, "partial decodes and a static scene", processes)

    # /think/reset: the next scenes flag every cell again, until a full grid is committed.
    assert watcher.reset.wait_for_service(timeout_sec=10.0)
    response = watcher.reset.call(Trigger.Request(), 10.0)
    assert response is not None and response.success
    reset_at = time.time_ns()

    def refreshed() -> bool:
        return any(s > reset_at and g[..., 1].all() for s, g, _ in watcher.answered())

    wait_for(refreshed, 30.0, "a full refresh after /think/reset", processes)

    answered = watcher.answered()
    assert len(answered) >= 5
    with watcher.lock:
        scene_order = list(watcher.scene_order)
        scenes = dict(watcher.scenes)
    # The policy feeds back every cached code it was given.
    for _, scene, tokens in answered:
        kept = scene[..., 1] == 0
        assert np.array_equal(tokens[kept], scene[..., 0][kept])
    # The cache only holds, for each cell, a code the policy predicted for it on a frame that
    # flagged it (a grid earlier than the scene), never a code it was not asked for.
    predicted: dict[int, set[int]] = {cell: set() for cell in range(100)}
    events = sorted(
        [(s, 1, scenes[s], None) for s in scene_order] + [(s, 0, g, t) for s, g, t in answered],
        key=lambda event: (event[0], event[1]),
    )
    for stamp, _kind, scene, tokens in events:
        flat_changed = scene[..., 1].reshape(-1)
        if tokens is not None:  # a committed grid: the cells its scene flagged are predicted
            for cell in np.flatnonzero(flat_changed):
                predicted[int(cell)].add(int(tokens.reshape(-1)[cell]))
        else:  # a scene: every unchanged cell's code was predicted earlier
            codes = scene[..., 0].reshape(-1)
            for cell in np.flatnonzero(flat_changed == 0):
                assert int(codes[cell]) in predicted[int(cell)], (stamp, cell)

    # Bad depth tokens (unknown stamp, wrong shape, codes out of range) and a bad frame.
    bad = [
        convert.numpy_to_image(np.zeros((10, 10, 1), np.uint8), "mono8", stamp_ns=123),
        convert.numpy_to_image(np.zeros((5, 10, 1), np.uint8), "mono8", stamp_ns=first_stamp),
        convert.numpy_to_image(np.full((10, 10, 1), 200, np.uint8), "mono8", first_stamp),
    ]
    for msg in bad:
        watcher.bad_tokens.publish(msg)
    watcher.frames.publish(convert.numpy_to_image(np.zeros((4, 4, 1), np.uint16), "mono16"))
    wait_for(
        lambda: int(watcher.values("think").get("rejected", "0")) >= 4, 10.0,
        "four rejections", processes,
    )  # fmt: skip
    time.sleep(1.5)  # let the policy go on past them
    for process in processes:
        assert process.poll() is None, stop(process)

    think = watcher.values("think")
    assert int(think["commits"]) >= 5 and int(think["resets"]) == 1
    assert int(think["rejected"]) >= 4 and int(think["full_refreshes"]) >= 2
    assert len(think["cache_age_s"].split()) == 100
    policy = watcher.values("policy")
    assert int(policy["failures"]) == 0
