"""Scripted demonstrations of "touch the red cube" in the SO100 world.

An episode: the three cubes are placed at random, non-overlapping spots within the arm's reach
(`CubeRegion`); the expert moves the TCP to a pre-touch point 7 cm above the red cube, then down
onto it. Every `record_rows` chunk rows one sample is recorded:

- the embodiment's camera images, squashed to the model's input size (what `to_pixels` sees);
- the measured joint state;
- the expert's action chunk from that state: `chunk_rows` absolute joint targets at the
  embodiment's `chunk_rate_hz` (exactly what the policy is asked to output);
- the primary camera's depth (MuJoCo's depth buffer [m]) as 10x10 cells of 32x32 pixels of its
  320x320 resize, each average-pooled to `DEPTH_POOL`x`DEPTH_POOL`: the input of the depth-token
  codebook (`fit_codebook` / `quantize`, k-means over these cell vectors).

The expert is a feedback policy of the measured state (not a time-indexed replay): its chunk
always starts at the current joints and walks through the IK waypoints at a bounded joint
speed. The executed targets are perturbed by a random offset per segment (DART, Laskey et al.
2017) so the data covers recoveries from the small errors a cloned policy makes, while the
labels stay the clean expert's.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vla_runtime.policy.preprocess import resize_bilinear
from vla_runtime.policy.transforms import TransformConfig, load_transform_config
from vla_runtime.sim.scenes import TARGET_OBJECT, scene_layout
from vla_runtime.sim.world import World, WorldConfig, build_world

os.environ.setdefault("MUJOCO_GL", "egl")
import mujoco  # after the GL backend is chosen, as sim/world.py does

FloatArray = npt.NDArray[np.float64]

DEPTH_GRID = 10
"""Depth cells per side (MolmoThink: 10x10 over the first camera)."""
DEPTH_SIZE_PX = 320
"""Side of the resized depth frame; cells are DEPTH_SIZE_PX / DEPTH_GRID = 32 px."""
DEPTH_POOL = 8
"""Each 32x32 cell is average-pooled to 8x8 = 64 values for the codebook."""
DEPTH_FAR_M = 3.0
"""Depth beyond this (the floor far away, the background) is clipped."""
LEGACY_FILE = "demos.npz"
"""Recordings made before the per-field layout; still loaded (fully, into memory)."""


@dataclass(frozen=True)
class CubeRegion:
    """Where cube centres are sampled: a box on the table [m], with a minimum separation.

    The SO100 reaches along -y; with the TCP pointing 25 degrees off vertical the IK solves
    this box with margin to every joint limit.
    """

    x_m: tuple[float, float] = (-0.12, 0.12)
    y_m: tuple[float, float] = (-0.34, -0.17)
    min_separation_m: float = 0.07


@dataclass(frozen=True)
class DemoConfig:
    """What to record.

    Attributes:
        embodiment: only 'so100' has a scripted expert.
        episodes: episodes to attempt (a failed expert episode is dropped and counted).
        seed: episode i uses seed `seed + i` for its cube layout and perturbations.
        width, height: render size [px]; 640x480 as `vla-runtime sim` publishes, so the
            policy sees the same squashed pixels in training and on the ROS graph.
        image_size: side the images are stored at (the model's vision.image_size).
        record_rows: chunk rows between two recorded samples.
        replan_rows: chunk rows executed before the expert re-plans.
        max_duration_s: an expert episode that has not touched the cube by then is dropped.
        perturbation_rad: std of the DART offset on the arm joints' executed targets.
        region: cube placement.
    """

    embodiment: str = "so100"
    episodes: int = 160
    seed: int = 0
    width: int = 640
    height: int = 480
    image_size: int = 378
    record_rows: int = 5
    replan_rows: int = 10
    max_duration_s: float = 4.0
    perturbation_rad: float = 0.04
    region: CubeRegion = field(default_factory=CubeRegion)

    def __post_init__(self) -> None:
        if self.embodiment != "so100":
            raise ValueError(f"the scripted expert knows only so100, not {self.embodiment!r}")
        if self.episodes < 1 or self.record_rows < 1 or self.replan_rows < 1:
            raise ValueError("episodes, record_rows and replan_rows must be >= 1")


FIELDS = ("images", "joint_positions", "actions", "depth_cells", "episode")
"""One `<field>.npy` per field in a demos directory (`DemoData.save`)."""


class RowConcat:
    """Rows of several (N_i, ...) arrays as one (sum N_i, ...) array, for fancy row indexing.

    Lets training index the images of several (memory-mapped) recordings without copying them
    into one array: two training runs on the same recordings share the page cache.
    """

    def __init__(self, parts: list[npt.NDArray[np.uint8]]) -> None:
        self.parts = parts
        self._ends = np.cumsum([len(p) for p in parts])
        self._starts = self._ends - [len(p) for p in parts]
        self.shape = (int(self._ends[-1]), *parts[0].shape[1:])
        self.dtype = parts[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
        index = np.asarray(index, np.int64)
        part = np.searchsorted(self._ends, index, side="right")
        out = np.empty((len(index), *self.shape[1:]), self.dtype)
        for k, (p, i) in enumerate(zip(part, index, strict=True)):
            out[k] = self.parts[p][i - self._starts[p]]
        return out


@dataclass
class DemoData:
    """Recorded samples, stacked. N samples, C cameras, J joints, R chunk rows.

    Attributes:
        images: (N, C, S, S, 3) uint8, cameras in the embodiment's policy order (memory-mapped
            after `load`; a `RowConcat` after `concatenate`).
        joint_positions: (N, J) float32 measured state.
        actions: (N, R, J) float32 absolute joint targets.
        depth_cells: (N, 100, DEPTH_POOL**2) float16 pooled depth [m] per cell.
        episode: (N,) int32 episode index of each sample.
    """

    images: npt.NDArray[np.uint8] | RowConcat
    joint_positions: npt.NDArray[np.float32]
    actions: npt.NDArray[np.float32]
    depth_cells: npt.NDArray[np.float16]
    episode: npt.NDArray[np.int32]

    def __len__(self) -> int:
        return int(self.joint_positions.shape[0])

    def save(self, directory: Path) -> Path:
        """Write `<field>.npy` files into `directory` (returned)."""
        directory.mkdir(parents=True, exist_ok=True)
        for name in FIELDS:
            value = getattr(self, name)
            if isinstance(value, RowConcat):
                value = value[np.arange(len(value))]
            np.save(directory / f"{name}.npy", value)
        return directory

    @classmethod
    def from_columns(cls, columns: dict[str, list[npt.NDArray[np.generic]]]) -> DemoData:
        """Stack per-sample lists (one per name in FIELDS) into a recording."""
        return cls(
            images=np.stack(columns["images"]).astype(np.uint8),
            joint_positions=np.stack(columns["joint_positions"]).astype(np.float32),
            actions=np.stack(columns["actions"]).astype(np.float32),
            depth_cells=np.stack(columns["depth_cells"]).astype(np.float16),
            episode=np.asarray(columns["episode"], np.int32),
        )

    @classmethod
    def concatenate(cls, parts: list[DemoData]) -> DemoData:
        """One dataset of several; episode indices are renumbered so they stay distinct.

        The images are not copied (`RowConcat` over every part's images); the small arrays are.
        """
        if not parts:
            raise ValueError("nothing to concatenate")
        if len(parts) == 1:
            return parts[0]
        episodes, offset = [], 0
        for part in parts:
            episodes.append(part.episode.astype(np.int64) + offset)
            offset = int(episodes[-1].max()) + 1 if len(part) else offset
        images: list[npt.NDArray[np.uint8]] = []
        for part in parts:
            images += part.images.parts if isinstance(part.images, RowConcat) else [part.images]
        return cls(
            images=RowConcat(images),
            joint_positions=np.concatenate([p.joint_positions for p in parts]),
            actions=np.concatenate([p.actions for p in parts]),
            depth_cells=np.concatenate([p.depth_cells for p in parts]),
            episode=np.concatenate(episodes).astype(np.int32),
        )

    @classmethod
    def load(cls, directory: Path) -> DemoData:
        """The recording in `directory`; images memory-mapped (read on demand)."""
        legacy = directory / LEGACY_FILE
        if not (directory / "images.npy").is_file() and legacy.is_file():
            with np.load(legacy) as data:
                return cls(**{name: data[name] for name in FIELDS})
        missing = [n for n in FIELDS if not (directory / f"{n}.npy").is_file()]
        if missing:
            raise FileNotFoundError(
                f"{directory} holds no recording ({', '.join(f'{n}.npy' for n in missing)} "
                "missing); record demonstrations first (vla-runtime train demos)"
            )
        arrays = {n: np.load(directory / f"{n}.npy", mmap_mode="r" if n == "images" else None)
                  for n in FIELDS}  # fmt: skip
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"{directory}: fields of different lengths {sorted(lengths)}")
        return cls(**arrays)


# scene -------------------------------------------------------------------------------------


def sample_cubes(rng: np.random.Generator, region: CubeRegion) -> dict[str, FloatArray]:
    """Random, separated centres for every cube of the so100 scene (the red one first)."""
    names = [o.name for o in scene_layout("so100").objects]
    half = {o.name: o.half_size for o in scene_layout("so100").objects}
    placed: dict[str, FloatArray] = {}
    for name in names:
        for _ in range(1000):
            xy = rng.uniform((region.x_m[0], region.y_m[0]), (region.x_m[1], region.y_m[1]))
            if all(np.linalg.norm(xy - p[:2]) >= region.min_separation_m for p in placed.values()):
                break
        placed[name] = np.array([xy[0], xy[1], half[name]])
    return placed


def reset_episode(world: World, seed: int, region: CubeRegion) -> FloatArray:
    """Start pose, cubes placed for `seed`, settled; returns the red cube's centre [m]."""
    world.reset()
    rng = np.random.default_rng(seed)
    for name, position in sample_cubes(rng, region).items():
        world.place_object(name, position.tolist())
    world.step(25)  # 50 ms: cubes settle on the table
    return np.array(world.task_state().objects[TARGET_OBJECT].position)


# expert ------------------------------------------------------------------------------------


class ScriptedExpert:
    """IK waypoints above and onto the red cube, walked at a bounded joint speed.

    IK (damped least squares on a private MjData of the world's model) solves the TCP position
    with the first four joints, plus a soft task that tilts the tool 25 degrees off straight
    down; wrist roll and gripper hold their start values.
    """

    ARM_JOINTS = 4
    PRE_TOUCH_HEIGHT_M = 0.07
    # Aim 1 cm below the cube's top face: the fingers press on the cube (contact = touch) and
    # an offset of up to ~2 cm still ends within the world's 1 cm touch distance.
    TOUCH_DEPTH_M = 0.01
    TOOL_DOWN = -0.9  # z component of the tool axis (TCP - gripper body, unit)
    SPEED_RAD_S = 1.2  # largest joint speed of the reference path
    NEAR_XY_M = 0.02  # TCP this close (horizontally) to the pre-touch point: descend

    def __init__(self, world: World, chunk_rows: int, chunk_rate_hz: float) -> None:
        self.world = world
        self.chunk_rows = chunk_rows
        self.row_s = 1.0 / chunk_rate_hz
        model = world.model
        self._data = mujoco.MjData(model)
        self._qpos = np.array([model.joint(n).qposadr[0] for n in world.joint_names])
        self._dofs = np.array([model.joint(n).dofadr[0] for n in world.joint_names])
        ids = [model.joint(n).id for n in world.joint_names]
        self._low = model.jnt_range[ids, 0]
        self._high = model.jnt_range[ids, 1]
        self._tcp = model.body("gripper_tcp").id
        self._mount = model.body("gripper_body").id
        self._rest = world.joint_positions()
        self._waypoints: tuple[FloatArray, FloatArray] | None = None
        self._cube = np.zeros(3)

    def start(self, cube: FloatArray) -> None:
        """Solve the waypoints for the red cube at `cube` (its centre) for a new episode."""
        self._rest = self.world.joint_positions()
        self.retarget(cube)

    def retarget(self, cube: FloatArray) -> None:
        """Re-solve the waypoints for the red cube now at `cube`, keeping the start pose."""
        self._cube = np.asarray(cube, np.float64).copy()
        half = scene_layout("so100").objects[0].half_size
        above = np.array([0.0, 0.0, half + self.PRE_TOUCH_HEIGHT_M])
        pre = self.solve(self._cube + above, self._rest)
        touch = self.solve(self._cube + np.array([0.0, 0.0, half - self.TOUCH_DEPTH_M]), pre)
        self._waypoints = (pre, touch)

    def tcp(self, joints: FloatArray) -> FloatArray:
        """TCP position [m] of the arm at `joints` (cubes and base as in the world now)."""
        self._forward(joints)
        return np.array(self._data.xpos[self._tcp])

    def solve(self, target: FloatArray, seed: FloatArray, iterations: int = 300) -> FloatArray:
        """Joints that put the TCP at `target`, starting from `seed`."""
        q = np.asarray(seed, np.float64).copy()
        columns = self._dofs[: self.ARM_JOINTS]
        model, data = self.world.model, self._data
        jacp = np.zeros((3, model.nv))
        jacr = np.zeros((3, model.nv))
        weight = 0.3  # the tool tilt gives way to the position where both cannot hold
        for _ in range(iterations):
            self._forward(q)
            error = target - data.xpos[self._tcp]
            tool = data.xpos[self._tcp] - data.xpos[self._mount]
            tool /= np.linalg.norm(tool)
            mujoco.mj_jacBody(model, data, jacp, jacr, self._tcp)
            # d(tool) = omega x tool; its z row
            cross = np.array(
                [[0, -tool[2], tool[1]], [tool[2], 0, -tool[0]], [-tool[1], tool[0], 0]]
            )
            tilt_row = (-cross @ jacr[:, columns])[2]
            jacobian = np.vstack([jacp[:, columns], weight * tilt_row])
            residual = np.append(error, weight * (self.TOOL_DOWN - tool[2]))
            step = jacobian.T @ np.linalg.solve(jacobian @ jacobian.T + 1e-4 * np.eye(4), residual)
            q[: self.ARM_JOINTS] += np.clip(step, -0.2, 0.2)
            q = np.clip(q, self._low, self._high)
            if np.linalg.norm(error) < 1e-4 and abs(self.TOOL_DOWN - tool[2]) < 1e-3:
                break
        solution: FloatArray = q
        return solution

    def chunk(self, joints: FloatArray) -> FloatArray:
        """(chunk_rows, joints) absolute targets from the measured `joints` on."""
        if self._waypoints is None:
            raise RuntimeError("call start(cube) first")
        pre, touch = self._waypoints
        tcp = self.tcp(joints)
        near = np.linalg.norm(tcp[:2] - self._cube[:2]) < self.NEAR_XY_M
        waypoints = [touch] if near else [pre, touch]
        position = np.asarray(joints, np.float64).copy()
        position[self.ARM_JOINTS :] = self._rest[self.ARM_JOINTS :]
        rows = np.empty((self.chunk_rows, position.size))
        step = self.SPEED_RAD_S * self.row_s
        for row in range(self.chunk_rows):
            budget = step
            while budget > 1e-12:
                delta = waypoints[0] - position
                distance = float(np.max(np.abs(delta)))
                if distance > budget:
                    position = position + delta * (budget / distance)
                    break
                position = waypoints[0].copy()
                budget -= distance
                if len(waypoints) == 1:
                    break
                waypoints.pop(0)
            rows[row] = position
        return rows

    def _forward(self, joints: FloatArray) -> None:
        data = self._data
        data.qpos[:] = self.world.data.qpos
        data.qpos[self._qpos] = joints
        mujoco.mj_kinematics(self.world.model, data)
        mujoco.mj_comPos(self.world.model, data)


# execution ---------------------------------------------------------------------------------


def execute_rows(
    world: World,
    chunk: FloatArray,
    rows: int,
    rate_hz: float,
    offset: FloatArray | None = None,
) -> bool:
    """Track `rows` rows of `chunk`, linearly interpolated at the physics rate.

    Row i is the target for i / rate_hz after the call starts (row 0 = now). Returns True as
    soon as the task succeeds (checked once per row).
    """
    timestep = world.config.timestep_s
    steps_per_row = 1.0 / (rate_hz * timestep)
    shift = np.zeros(chunk.shape[1]) if offset is None else offset
    step = 0
    last = chunk.shape[0] - 1
    for row in range(rows):
        end = round((row + 1) * steps_per_row)
        while step < end:
            step += 1
            position = min(step / steps_per_row, float(last))
            low = math.floor(position)
            high = min(low + 1, last)
            fraction = position - low
            world.set_joint_targets((1 - fraction) * chunk[low] + fraction * chunk[high] + shift)
            world.step(1)
        if world.task_state().success:
            return True
    return False


class DepthCamera:
    """MuJoCo depth of one camera [m], on its own renderer (the world's renders RGB)."""

    def __init__(self, world: World, camera: str) -> None:
        self.world = world
        self.camera = camera
        self._renderer = mujoco.Renderer(world.model, world.config.height, world.config.width)
        self._renderer.enable_depth_rendering()

    def render(self) -> npt.NDArray[np.float32]:
        self._renderer.update_scene(self.world.data, camera=self.camera)
        depth: npt.NDArray[np.float32] = self._renderer.render().astype(np.float32)
        return depth

    def close(self) -> None:
        self._renderer.close()


def depth_cells(depth: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(H, W) depth [m] -> (100, DEPTH_POOL**2) pooled cells of its 320x320 resize."""
    import cv2

    clipped = np.clip(depth, 0.0, DEPTH_FAR_M).astype(np.float32)
    resized = cv2.resize(clipped, (DEPTH_SIZE_PX, DEPTH_SIZE_PX), interpolation=cv2.INTER_AREA)
    cell = DEPTH_SIZE_PX // DEPTH_GRID
    pool = cell // DEPTH_POOL
    grid = resized.reshape(DEPTH_GRID, DEPTH_POOL, pool, DEPTH_GRID, DEPTH_POOL, pool)
    pooled = grid.mean(axis=(2, 5))  # (10, 8, 10, 8)
    cells = pooled.transpose(0, 2, 1, 3).reshape(DEPTH_GRID * DEPTH_GRID, DEPTH_POOL**2)
    return np.ascontiguousarray(cells)


# recording ---------------------------------------------------------------------------------


@dataclass
class EpisodeResult:
    seed: int
    success: bool
    duration_s: float
    samples: int


def record(
    config: DemoConfig,
    *,
    progress: Callable[[EpisodeResult], None] | None = None,
) -> tuple[DemoData, list[EpisodeResult]]:
    """Run the expert for `config.episodes` episodes; keep the successful ones."""
    transform = load_transform_config(config.embodiment)
    world = build_world(WorldConfig(config.embodiment, width=config.width, height=config.height))
    depth_camera = DepthCamera(world, transform.cameras[0])
    expert = ScriptedExpert(world, transform.chunk_rows, transform.chunk_rate_hz)
    columns: dict[str, list[npt.NDArray[np.generic]]] = {name: [] for name in FIELDS}
    results = []
    try:
        for index in range(config.episodes):
            seed = config.seed + index
            samples = list(_episode(world, expert, depth_camera, transform, config, seed))
            success = bool(samples) and samples[-1] is None
            kept = [s for s in samples if s is not None]
            result = EpisodeResult(seed, success, world.time_s, len(kept))
            results.append(result)
            if success:
                for images, joints, actions, cells in kept:
                    columns["images"].append(images)
                    columns["joint_positions"].append(joints)
                    columns["actions"].append(actions)
                    columns["depth_cells"].append(cells)
                    columns["episode"].append(np.int32(index))
            if progress is not None:
                progress(result)
    finally:
        depth_camera.close()
        world.close()
    if not columns["images"]:
        raise RuntimeError("the expert succeeded in no episode; nothing recorded")
    return DemoData.from_columns(columns), results


Sample = tuple[npt.NDArray[np.uint8], FloatArray, FloatArray, npt.NDArray[np.float32]]


def observe_images(world: World, cameras: tuple[str, ...], size: int) -> npt.NDArray[np.uint8]:
    """(cameras, size, size, 3) uint8: every camera rendered and squashed like `to_pixels`."""
    return np.stack([resize_bilinear(world.render(c), size, size) for c in cameras])


def _episode(
    world: World,
    expert: ScriptedExpert,
    depth_camera: DepthCamera,
    transform: TransformConfig,
    config: DemoConfig,
    seed: int,
) -> Iterator[Sample | None]:
    """The samples of one expert episode, then None if it touched the cube in time."""
    cube = reset_episode(world, seed, config.region)
    expert.start(cube)
    rng = np.random.default_rng(10_000_019 + seed)
    rate = transform.chunk_rate_hz
    arm = ScriptedExpert.ARM_JOINTS
    chunk = expert.chunk(world.joint_positions())
    offset = np.zeros(chunk.shape[1])
    rows_done = 0
    while world.time_s < config.max_duration_s:
        joints = world.joint_positions()
        if rows_done % config.replan_rows == 0:
            chunk = expert.chunk(joints)
            rows_done_in_chunk = 0
            offset = np.zeros(chunk.shape[1])
            if rng.random() < 0.5:
                offset[:arm] = rng.normal(0.0, config.perturbation_rad, arm)
        if rows_done % config.record_rows == 0:
            images = observe_images(world, transform.cameras, config.image_size)
            cells = depth_cells(depth_camera.render())
            yield images, joints, expert.chunk(joints), cells
        segment = chunk[rows_done_in_chunk:]
        if execute_rows(world, segment, config.record_rows, rate, offset):
            yield None
            return
        rows_done += config.record_rows
        rows_done_in_chunk += config.record_rows
