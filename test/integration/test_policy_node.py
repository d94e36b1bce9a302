"""policy_node (tiny torch model, so100) in its own process, fed by this test over zenoh.

The test plays the cameras (rgb8 frames with capture stamps at 20 Hz, the wrist camera 3 ms
behind the third-person one), the driver (/robot/joint_states at 50 Hz) and, for MolmoThink,
the think node (a 10x10 8UC2 scene per primary frame, same stamp). Covered: well-formed chunks
stamped with an observation's capture stamp, depth tokens with a chunk's stamp, diagnostics
carrying the trace, joint states of another embodiment rejected while the node keeps running,
and a misspelt backend ending the process with exit code 2.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from graph_helpers import start_process, stop

from vla_runtime import ros
from vla_runtime.ros import convert
from vla_runtime.ros.interfaces import get_message

pytestmark = pytest.mark.integration
pytest.importorskip("torch")

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
CAMERAS = ("third_person", "wrist")
WRIST_LAG_NS = 3_000_000
Image = get_message("sensor_msgs/msg/Image")
JointState = get_message("sensor_msgs/msg/JointState")
JointTrajectory = get_message("trajectory_msgs/msg/JointTrajectory")
DiagnosticArray = get_message("diagnostic_msgs/msg/DiagnosticArray")
TRACE_KEYS = (
    "vision_ms", "prefill_ms", "depth_ms", "action_ms", "total_ms", "iterations", "residual",
    "stop_reason", "changed_cells", "inferences", "failures", "joint_states_rejected",
)  # fmt: skip
# Node start-up (torch import, model build) and the first inference on a loaded 2-core machine.
FIRST_CHUNK_S = 90.0


def policy_node(*parameters: str) -> subprocess.Popen[str]:
    args = ["-p", "threads:=1"]
    for parameter in parameters:
        args += ["-p", parameter]
    return start_process("-m", "vla_runtime.nodes.policy_node", "--ros-args", *args)


class Rig:
    """The test's node: cameras, joint states and scene out; chunks, tokens, diagnostics in."""

    def __init__(self, joint_names: tuple[str, ...] = JOINTS, scene: bool = False) -> None:
        self.node = ros.Node("policy_rig")
        self.joint_names = joint_names
        self.scene = scene
        self.lock = threading.Lock()
        self.frame_stamps: dict[str, list[int]] = {camera: [] for camera in CAMERAS}
        self.chunks: list[Any] = []
        self.tokens: list[Any] = []
        self.statuses: list[Any] = []
        sensor = ros.qos_profile_sensor_data
        self.cameras = {
            camera: self.node.create_publisher(Image, f"/cameras/{camera}/image_raw", sensor)
            for camera in CAMERAS
        }
        self.states = self.node.create_publisher(JointState, "/robot/joint_states", sensor)
        self.scenes = self.node.create_publisher(Image, "/think/scene", sensor)
        self.node.create_subscription(JointTrajectory, "/policy/action_chunk", self._chunk, 10)
        self.node.create_subscription(Image, "/policy/depth_tokens", self._tokens, 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._diagnostics, 10)
        self.executor = ros.SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._spin, daemon=True),
            threading.Thread(target=self._play, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _spin(self) -> None:
        while ros.ok() and not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def _play(self) -> None:
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(4)]
        tick = 0
        while not self._stop.is_set():
            stamp = time.time_ns()
            state = 0.1 * np.sin(np.arange(len(self.joint_names)) + tick * 0.05)
            self.states.publish(
                convert.numpy_to_joint_state(self.joint_names, state, stamp_ns=stamp)
            )
            if tick % 2 == 0:  # cameras at 20 Hz, joint states at 50 Hz
                with self.lock:
                    self.frame_stamps["third_person"].append(stamp)
                    self.frame_stamps["wrist"].append(stamp + WRIST_LAG_NS)
                pixels = frames[tick // 2 % len(frames)]
                self.cameras["third_person"].publish(convert.numpy_to_image(pixels, "rgb8", stamp))
                self.cameras["wrist"].publish(
                    convert.numpy_to_image(pixels[::-1].copy(), "rgb8", stamp + WRIST_LAG_NS)
                )
                if self.scene:
                    grid = np.zeros((10, 10, 2), np.uint8)
                    grid[..., 0] = 5
                    grid[tick % 10, :, 1] = 1  # one changed row per frame
                    self.scenes.publish(convert.numpy_to_image(grid, "8UC2", stamp))
            tick += 1
            self._stop.wait(0.02)

    def _chunk(self, msg: Any) -> None:
        with self.lock:
            self.chunks.append(msg)

    def _tokens(self, msg: Any) -> None:
        with self.lock:
            self.tokens.append(msg)

    def _diagnostics(self, msg: Any) -> None:
        with self.lock:
            self.statuses.extend(s for s in msg.status if s.name == "policy")

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self.node.destroy_node()


@pytest.fixture
def make_rig(ros_context: None) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(**kwargs: Any) -> Rig:
        rigs.append(Rig(**kwargs))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.close()


def wait_for(
    predicate: Callable[[], bool],
    timeout_s: float,
    what: str,
    process: subprocess.Popen[str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert process is None or process.poll() is None, f"policy_node exited: {stop(process)}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def values_of(status: Any) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def test_chunks_answer_the_replayed_cameras_with_their_capture_stamps(
    make_rig: Callable[..., Rig], processes: list[subprocess.Popen[str]]
) -> None:
    rig = make_rig()
    node = policy_node()
    processes.append(node)
    wait_for(lambda: len(rig.chunks) >= 3, FIRST_CHUNK_S, "three chunks", node)
    wait_for(lambda: any(s.level == 0 for s in rig.statuses), 10.0, "an OK status", node)
    with rig.lock:
        chunks = list(rig.chunks)
        published = {stamp for stamps in rig.frame_stamps.values() for stamp in stamps}
        statuses = list(rig.statuses)
    stamps = []
    for msg in chunks:
        arrays = convert.joint_trajectory_to_numpy(msg)
        assert arrays.joint_names == JOINTS
        assert arrays.positions.shape == (30, len(JOINTS))
        assert np.isfinite(arrays.positions).all()
        assert arrays.time_from_start_s == pytest.approx(np.arange(30) / 30.0, abs=1e-9)
        # The oldest camera frame of the observation: mostly the third-person one (the wrist's
        # is 3 ms later), the wrist's when it was paired with the next third-person frame.
        assert arrays.stamp_ns in published
        stamps.append(arrays.stamp_ns)
    assert stamps == sorted(stamps)  # never back in time
    ok = [s for s in statuses if s.level == 0][-1]
    values = values_of(ok)
    assert ok.message == "running" and ok.hardware_id == "so100"
    for key in TRACE_KEYS:
        assert key in values, key
    assert int(values["inferences"]) >= 1 and values["stop_reason"] == "steps"
    assert float(values["total_ms"]) > 0 and values["iterations"] == "10"
    assert node.poll() is None


def test_the_scene_topic_turns_on_depth_tokens_stamped_like_the_chunks(
    make_rig: Callable[..., Rig], processes: list[subprocess.Popen[str]]
) -> None:
    rig = make_rig(scene=True)
    node = policy_node("scene_topic:=/think/scene")
    processes.append(node)
    wait_for(lambda: len(rig.tokens) >= 2, FIRST_CHUNK_S, "depth tokens", node)
    with rig.lock:
        tokens = list(rig.tokens)
    token_stamps = {convert.stamp_to_ns(msg.header.stamp) for msg in tokens}

    def chunk_stamps() -> set[int]:
        with rig.lock:
            return {convert.stamp_to_ns(msg.header.stamp) for msg in rig.chunks}

    # Two topics: a token may arrive just before its chunk.
    wait_for(lambda: token_stamps <= chunk_stamps(), 10.0, "a chunk for every token", node)
    for msg in tokens:
        assert (msg.encoding, msg.height, msg.width) == ("mono8", 10, 10)
        grid = convert.image_to_numpy(msg)
        assert grid.shape == (10, 10) and int(grid.max()) < 128

    def answered() -> bool:
        with rig.lock:
            return any(values_of(s)["inferences"] != "0" for s in rig.statuses)

    wait_for(answered, 10.0, "diagnostics after a chunk", node)
    with rig.lock:
        values = values_of([s for s in rig.statuses if values_of(s)["inferences"] != "0"][-1])
    assert values["changed_cells"] == "10"  # every scene flags one row
    assert float(values["depth_ms"]) > 0


def test_joint_states_of_another_embodiment_are_rejected_and_no_chunk_goes_out(
    make_rig: Callable[..., Rig], processes: list[subprocess.Popen[str]]
) -> None:
    wrong = tuple(f"joint{i}" for i in range(1, 7))
    rig = make_rig(joint_names=wrong)
    node = policy_node()
    processes.append(node)

    def rejected() -> bool:
        with rig.lock:
            return any(int(values_of(s)["joint_states_rejected"]) > 0 for s in rig.statuses)

    wait_for(rejected, FIRST_CHUNK_S, "diagnostics reporting the rejection", node)
    time.sleep(2.0)  # a few more diagnostics periods, all of them without a chunk
    with rig.lock:
        statuses = list(rig.statuses)
        assert rig.chunks == []
    reports = [s for s in statuses if int(values_of(s)["joint_states_rejected"]) > 0]
    assert any(s.level == 1 and "joint1" in s.message for s in reports)  # WARN naming them
    assert values_of(reports[-1])["inferences"] == "0"
    assert node.poll() is None  # still running
    output = stop(node)
    assert node.returncode == 0
    assert "shoulder_pan" in output and "Traceback" not in output


def test_a_misspelt_backend_exits_with_code_2_and_a_suggestion() -> None:
    node = policy_node("backend:=torhc")
    node.wait(timeout=60)
    output = stop(node)
    assert node.returncode == 2, output
    assert "unknown policy backend 'torhc'" in output and "torch" in output
    assert "Traceback" not in output
