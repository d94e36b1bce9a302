"""`policy_node`: a VLA policy answering synchronised observations with action chunks.

    policy_node --ros-args -p embodiment:=so100 -p model:=tiny -p head:=recurrent

Subscribes to the policy's cameras (`camera_topics`, default /cameras/<cam>/image_raw in the
model's camera order, sensor-data QoS, rgb8 or bgr8), /robot/joint_states and, with
`scene_topic` set, MolmoThink's scene (10x10 8UC2: cached code, changed flag; stamped with
the primary camera frame it was computed on). An observation uses the scene of its primary
frame; when none comes within `scene_wait_s` (think node absent or late) every depth cell is
decoded. Publishes /policy/action_chunk (header.stamp = the observation's capture stamp, row i
at i / chunk rate), /policy/depth_tokens (10x10 mono8, the full grid, stamped with the primary
frame, like the scene) when depth reasoning ran, and /diagnostics at
1 Hz (status 'policy': the last inference's stage times, iterations, residual, counters).
Inference runs on a worker thread (policy/worker.py), back-to-back on fresh data (DESIGN §4).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from vla_runtime import ros
from vla_runtime.nodes._diagnostics import diagnostic_array
from vla_runtime.nodes._runner import EXIT_CONFIG_ERROR, run_node
from vla_runtime.policy.interface import Observation, PolicyError, PolicyOutput
from vla_runtime.policy.registry import PolicySpec, create_policy
from vla_runtime.policy.worker import PolicyWorker, WorkerOptions
from vla_runtime.ros import convert
from vla_runtime.ros.interfaces import get_message

Image = get_message("sensor_msgs/msg/Image")
JointState = get_message("sensor_msgs/msg/JointState")
JointTrajectory = get_message("trajectory_msgs/msg/JointTrajectory")
DiagnosticArray = get_message("diagnostic_msgs/msg/DiagnosticArray")

# name -> (default, description); the policy's identity is read once at start-up (read-only).
PARAMETERS: dict[str, tuple[Any, str]] = {
    "embodiment": ("so100", "config/embodiments/<name>.yaml (its policy: subtree) or a path"),
    "backend": ("torch", "policy backend: torch | onnx"),
    "model": ("tiny", "model directory, or a named config with random weights (torch)"),
    "head": ("flow", "action head: flow | recurrent"),
    "flow_steps": (10, "Euler steps of the flow head"),
    "threshold": (1.0e-3, "recurrent head: stop when the chunk changes less than this"),
    "min_iterations": (2, "recurrent head: iterations before the threshold applies"),
    "max_iterations": (32, "recurrent head: iteration cap"),
    "seed": (0, "random weights (named configs) and the noise stream"),
    "device": ("cpu", "cpu | cuda[:N]"),
    "dtype": ("float32", "float32 | bfloat16 | float16"),
    "threads": (0, "intra-op CPU threads (0 = library default)"),
    "prompt": ("", "task instruction; empty = the embodiment's default prompt"),
    "scene_topic": ("", "MolmoThink scene topic (e.g. /think/scene); empty = no depth reasoning"),
    "scene_wait_s": (0.03, "a frame waits this long for its scene, then decodes all cells [s]"),
    "sync_tolerance_s": (0.05, "an observation's stamps lie within this of its newest frame [s]"),
    "max_rate_hz": (0.0, "inference rate cap [Hz]; 0 = back-to-back"),
    "time_budget_s": (0.0, "wall time one inference may use [s]; 0 = none"),
}


class PolicyNodeConfigError(ValueError):
    """Parameters that cannot build a policy (message says what to change)."""


class PolicyNode(ros.Node):
    def __init__(self) -> None:
        super().__init__("policy")
        for name, (default, description) in PARAMETERS.items():
            descriptor = ros.ParameterDescriptor(description=description, read_only=True)
            self.declare_parameter(name, default, descriptor)
        value = {name: self.get_parameter(name).value for name in PARAMETERS}
        scene_topic = str(value["scene_topic"])
        spec = PolicySpec(
            **{key: value[key] for key in PARAMETERS if key in PolicySpec.__dataclass_fields__},
            depth=bool(scene_topic),
        )
        try:
            options = WorkerOptions(
                sync_tolerance_s=value["sync_tolerance_s"],
                max_rate_hz=value["max_rate_hz"],
                time_budget_s=value["time_budget_s"],
                prompt=value["prompt"],
                scene=bool(scene_topic),
                scene_wait_s=value["scene_wait_s"],
            )
            policy = create_policy(spec)
        except (ValueError, PolicyError, OSError, ImportError) as exc:  # names what to change
            raise PolicyNodeConfigError(str(exc)) from exc
        cameras = policy.camera_names
        self.declare_parameter(
            "camera_topics",
            [f"/cameras/{camera}/image_raw" for camera in cameras],
            ros.ParameterDescriptor(
                description=f"image topics in the policy's camera order {list(cameras)}",
                read_only=True,
            ),
        )
        camera_topics = [str(t) for t in self.get_parameter("camera_topics").value]
        if len(camera_topics) != len(cameras):
            raise PolicyNodeConfigError(
                f"camera_topics has {len(camera_topics)} topics {camera_topics}; the policy "
                f"needs one per camera, in the order {list(cameras)}"
            )
        self.embodiment = str(value["embodiment"])
        self.worker = PolicyWorker(policy, self._on_output, self._on_error, options)
        self._announce = True

        self._chunks = self.create_publisher(JointTrajectory, "/policy/action_chunk", 10)
        self._depth_tokens = self.create_publisher(Image, "/policy/depth_tokens", 10)
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        sensor = ros.qos_profile_sensor_data
        for camera, topic in zip(cameras, camera_topics, strict=True):
            self.create_subscription(Image, topic, self._image_callback(camera), sensor)
        self.create_subscription(JointState, "/robot/joint_states", self._on_joint_state, sensor)
        if scene_topic:
            self.create_subscription(Image, scene_topic, self._on_scene, sensor)
        self.create_timer(1.0, self._publish_diagnostics)
        self.worker.start()
        depth = f", depth tokens from {scene_topic}" if scene_topic else ""
        self.get_logger().info(
            f"{spec.backend} {spec.model} ({spec.head} head) for {self.embodiment}: cameras "
            f"{dict(zip(cameras, camera_topics, strict=True))}{depth}"
        )

    # -- inputs (executor thread) ---------------------------------------------------------

    def _image_callback(self, camera: str) -> Any:
        def on_image(msg: Any) -> None:
            stamp_ns = convert.stamp_to_ns(msg.header.stamp)
            try:
                pixels = convert.image_to_numpy(msg)
            except ValueError as exc:
                self._warn(self.worker.reject_input(f"camera {camera!r}: {exc}"))
                return
            self._warn(self.worker.add_image(camera, stamp_ns, pixels, msg.encoding))

        return on_image

    def _on_joint_state(self, msg: Any) -> None:
        try:
            state = convert.joint_state_to_numpy(msg)
        except ValueError as exc:
            self._warn(self.worker.reject_input(f"joint state: {exc}"))
            return
        self._warn(self.worker.add_joint_state(state.stamp_ns, state.names, state.position_rad))

    def _on_scene(self, msg: Any) -> None:
        try:
            if msg.encoding != "8UC2":
                raise ValueError(f"scene encoding must be 8UC2, got {msg.encoding!r}")
            grid = convert.image_to_numpy(msg)
        except ValueError as exc:
            self._warn(self.worker.reject_input(f"scene: {exc}"))
            return
        self._warn(self.worker.add_scene(convert.stamp_to_ns(msg.header.stamp), grid))

    def _warn(self, problem: str | None) -> None:
        if problem:
            self.get_logger().warning(problem, throttle_duration_sec=2.0)

    # -- outputs (worker thread) ----------------------------------------------------------

    def _on_output(self, output: PolicyOutput) -> None:
        rows = output.actions.shape[0]
        self._chunks.publish(
            convert.numpy_to_joint_trajectory(
                output.joint_names,
                output.actions,
                np.arange(rows) / output.chunk_rate_hz,
                stamp_ns=output.stamp_ns,
            )
        )
        if output.depth_codes is not None:
            self._depth_tokens.publish(
                convert.numpy_to_image(
                    output.depth_codes, "mono8", stamp_ns=output.depth_stamp_ns or output.stamp_ns
                )
            )
        if self._announce:
            self._announce = False
            self.get_logger().info(
                f"first chunk: {rows} rows at {output.chunk_rate_hz:g} Hz, "
                f"{output.trace.total_ms:.0f} ms"
            )

    def _on_error(self, message: str, _observation: Observation) -> None:
        self.get_logger().error(f"no chunk: {message}", throttle_duration_sec=2.0)

    def _publish_diagnostics(self) -> None:
        level, message, values = self.worker.diagnostics()
        self._diagnostics.publish(
            diagnostic_array(self, "policy", self.embodiment, level, message, values)
        )

    def destroy_node(self) -> None:
        self.worker.stop()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    try:
        return run_node("policy_node", PolicyNode, args)
    except PolicyNodeConfigError as exc:  # run_node has already shut the middleware down
        print(f"policy_node: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR


if __name__ == "__main__":
    sys.exit(main())
