"""On-policy data: roll a trained policy out in the world and label what it sees with the expert.

DAgger (Ross, Gordon and Bagnell, 2011). Behaviour cloning trains on the states the expert
visits; the cloned policy drifts to states the expert never showed it (here: hovering a few
centimetres off the cube) and has no label there. This module runs the policy closed loop,
exactly as `evaluate.run_episode` does (query, execute `replan_rows` rows, query again), and
records at every `record_rows` rows what a demonstration records: the camera images at the
model's input size, the measured joints, the scripted expert's chunk *from that state* (the
label) and the primary camera's depth cells. The executed chunk is the policy's; with
probability `beta` per query it is the expert's instead (DAgger's mixture).

The output is a `DemoData` directory like `train demos` writes; `train fit` takes several.
Every episode is kept, touched or not: the failures are the point.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from vla_runtime.policy.interface import Observation
from vla_runtime.policy.preprocess import resize_bilinear
from vla_runtime.policy.registry import PolicySpec, create_policy
from vla_runtime.policy.transforms import load_transform_config
from vla_runtime.sim.scenes import TARGET_OBJECT
from vla_runtime.sim.world import WorldConfig, build_world
from vla_runtime.train.demos import (
    FIELDS,
    CubeRegion,
    DemoData,
    DepthCamera,
    ScriptedExpert,
    depth_cells,
    execute_rows,
    reset_episode,
)

CUBE_MOVED_M = 0.005
"""The expert re-solves its waypoints when the red cube was pushed further than this."""


@dataclass(frozen=True)
class DaggerConfig:
    """What to roll out and record.

    Attributes:
        model: model directory (or shipped model name) whose policy is rolled out.
        head: 'recurrent' (adaptive stopping, as deployed) or 'flow'.
        episodes: episodes (seeds `seed`, `seed + 1`, ...); keep them apart from the
            demonstration seeds (0...) and the evaluation seeds (100 000...).
        beta: probability per query that the expert's chunk is executed instead.
        time_limit_s: simulated time per episode (as the evaluation).
        replan_rows: chunk rows executed per query (as the evaluation).
        record_rows: rows between two recorded samples (as the demonstrations).
        threads: torch threads of the policy.
    """

    model: str
    head: str = "recurrent"
    episodes: int = 100
    seed: int = 200_000
    beta: float = 0.0
    time_limit_s: float = 6.0
    replan_rows: int = 10
    record_rows: int = 5
    width: int = 640
    height: int = 480
    threads: int = 1
    region: CubeRegion = field(default_factory=CubeRegion)

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], not {self.beta}")
        if self.episodes < 1 or self.record_rows < 1 or self.replan_rows % self.record_rows:
            raise ValueError("episodes >= 1, and replan_rows a multiple of record_rows")


def _image_size(policy: object) -> int:
    """The model's input side (what its `to_pixels` squashes the frames to)."""
    runner = getattr(policy, "runner", None)
    if runner is None:
        raise ValueError("on-policy recording needs a model policy (a model directory)")
    return int(runner.config.vision.image_size)


@dataclass
class RolloutResult:
    seed: int
    success: bool
    duration_s: float
    samples: int
    expert_queries: int


def record_on_policy(
    config: DaggerConfig,
    *,
    progress: Callable[[RolloutResult], None] | None = None,
) -> tuple[DemoData, list[RolloutResult]]:
    """Roll the policy out for `config.episodes` episodes; every visited state labelled."""
    transform = load_transform_config("so100")
    policy = create_policy(
        PolicySpec(model=config.model, head=config.head, depth=True, threads=config.threads)
    )
    world = build_world(WorldConfig("so100", width=config.width, height=config.height))
    depth_camera = DepthCamera(world, transform.cameras[0])
    expert = ScriptedExpert(world, transform.chunk_rows, transform.chunk_rate_hz)
    size = _image_size(policy)
    rate = transform.chunk_rate_hz
    columns: dict[str, list[npt.NDArray[np.generic]]] = {name: [] for name in FIELDS}
    results = []

    def observe(
        episode: int, cube: npt.NDArray[np.float64]
    ) -> tuple[dict[str, npt.NDArray[np.uint8]], npt.NDArray[np.float64]]:
        """Record the current state with the expert's label; the frames and joints seen."""
        frames = {camera: world.render(camera) for camera in transform.cameras}
        joints = world.joint_positions()
        moved = np.array(world.task_state().objects[TARGET_OBJECT].position)
        if np.linalg.norm(moved - cube) > CUBE_MOVED_M:
            expert.retarget(moved)
            cube[:] = moved
        columns["images"].append(
            np.stack([resize_bilinear(frames[c], size, size) for c in transform.cameras])
        )
        columns["joint_positions"].append(joints.astype(np.float32))
        columns["actions"].append(expert.chunk(joints).astype(np.float32))
        columns["depth_cells"].append(depth_cells(depth_camera.render()).astype(np.float16))
        columns["episode"].append(np.int32(episode))
        return frames, joints

    try:
        for index in range(config.episodes):
            seed = config.seed + index
            cube = reset_episode(world, seed, config.region)
            expert.start(cube)
            policy.reset()
            rng = np.random.default_rng(30_000_001 + seed)
            before = len(columns["episode"])
            success, expert_queries = False, 0
            while world.time_s < config.time_limit_s and not success:
                frames, joints = observe(index, cube)
                if rng.random() < config.beta:
                    chunk = expert.chunk(joints)
                    expert_queries += 1
                else:
                    output = policy.infer(
                        Observation(
                            frames, joints, world.joint_names, stamp_ns=round(world.time_s * 1e9)
                        )
                    )
                    chunk = output.actions
                for start in range(0, config.replan_rows, config.record_rows):
                    if start > 0:
                        observe(index, cube)
                    success = execute_rows(world, chunk[start:], config.record_rows, rate)
                    if success or world.time_s >= config.time_limit_s:
                        break
            result = RolloutResult(
                seed, success, world.time_s, len(columns["episode"]) - before, expert_queries
            )
            results.append(result)
            if progress is not None:
                progress(result)
    finally:
        depth_camera.close()
        world.close()
    return DemoData.from_columns(columns), results
