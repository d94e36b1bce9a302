"""A MuJoCo world per embodiment: our URDF, a table, cubes, named cameras, position servos.

    world = build_world(WorldConfig("so100"))
    world.set_joint_targets(np.array([0.3, 0, 0, 0, 0, 0]))
    world.advance(time.monotonic_ns())          # real time: steps what wall time asks for
    rgb = world.render("wrist")                 # (height, width, 3) uint8
    world.task_state().success                  # "touch the red cube"

The model is compiled from `urdf/<name>/<name>.urdf` with `mujoco.MjSpec`, then the scene of
`sim/scenes.py` is added in code: a table, free cubes, lights, the fixed and wrist cameras, and one
position actuator per joint in `joint_names` order. Rendering is offscreen; without a GPU, MuJoCo
renders through EGL on Mesa's software rasteriser (llvmpipe), or OSMesa with MUJOCO_GL=osmesa.
"""

from __future__ import annotations

import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import yaml

from vla_runtime.resources import resolve
from vla_runtime.sim.pacing import RealTimePacer
from vla_runtime.sim.scenes import (
    TARGET_OBJECT,
    FixedCamera,
    SceneLayout,
    WristCamera,
    scene_layout,
)

# MuJoCo picks its GL backend when it is first imported; a machine without a display needs an
# offscreen one. EGL (Mesa's libEGL_mesa) works headless with or without a GPU; the user's
# MUJOCO_GL still wins.
os.environ.setdefault("MUJOCO_GL", "egl")
import mujoco

FloatArray = npt.NDArray[np.float64]
ImageArray = npt.NDArray[np.uint8]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorldConfig:
    """How to build and run one embodiment's world.

    Args:
        embodiment: key of config/embodiments/<name>.yaml, urdf/<name>/ and `SCENES`.
        width, height: render size of every camera [pixels].
        timestep_s: physics step (2 ms: stable with the servo gains below at 500 Hz).
        max_catch_up_s: most simulated time one `advance()` steps; beyond it the world has
            fallen behind real time, counts it, warns, and drops the backlog.
        touch_distance_m: a TCP this close to the red cube's surface touches it.
    """

    embodiment: str
    width: int = 640
    height: int = 480
    timestep_s: float = 0.002
    max_catch_up_s: float = 0.1
    touch_distance_m: float = 0.01

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"render size must be positive, got {self.width}x{self.height}")
        if not 0.0 < self.timestep_s <= 0.01:
            raise ValueError(f"timestep_s must be in (0, 0.01], got {self.timestep_s}")
        if self.max_catch_up_s < self.timestep_s:
            raise ValueError("max_catch_up_s must be at least one timestep_s")


@dataclass(frozen=True)
class ObjectPose:
    """A free object's pose: position [m] and quaternion (w, x, y, z) in the world frame."""

    position: tuple[float, float, float]
    quaternion: tuple[float, float, float, float]


@dataclass(frozen=True)
class TaskState:
    """Task "touch the red cube": object poses, the nearest TCP distance, and success."""

    objects: dict[str, ObjectPose]
    target_distance_m: float
    success: bool


def embodiment_parameters(embodiment: str) -> tuple[tuple[str, ...], tuple[str, ...], Path]:
    """(joint_names, policy cameras, URDF path) from config/embodiments/<embodiment>.yaml."""
    path = resolve("config", f"embodiments/{embodiment}.yaml")
    if not path.is_file():
        raise FileNotFoundError(f"no embodiment config {path}")
    with path.open(encoding="utf-8") as stream:
        parameters = yaml.safe_load(stream)["/**"]["ros__parameters"]
    urdf = resolve("urdf", str(parameters["urdf"]))
    cameras = tuple(parameters.get("policy", {}).get("cameras", ()))
    return tuple(parameters["joint_names"]), cameras, urdf


def build_world(config: WorldConfig) -> World:
    """Compile the embodiment's URDF plus its scene into a ready-to-step `World`.

    Raises:
        KeyError: unknown embodiment (no scene layout).
        ValueError: the layout's cameras differ from the embodiment's `policy.cameras`.
    """
    layout = scene_layout(config.embodiment)
    joint_names, cameras, urdf = embodiment_parameters(config.embodiment)
    if set(cameras) != set(layout.camera_names):
        raise ValueError(
            f"{config.embodiment}: scene cameras {layout.camera_names} differ from the "
            f"embodiment's policy.cameras {cameras}; fix sim/scenes.py"
        )
    spec = mujoco.MjSpec.from_file(str(urdf))
    _add_mimic_equalities(spec, urdf)
    _add_scene(spec, layout, joint_names, config)
    model = spec.compile()
    return World(model, config, layout, joint_names, cameras)


class World:
    """A compiled MuJoCo model and its state, stepped in real time (see `build_world`)."""

    def __init__(
        self,
        model: mujoco.MjModel,
        config: WorldConfig,
        layout: SceneLayout,
        joint_names: Sequence[str],
        camera_names: Sequence[str],
    ) -> None:
        self.model = model
        self.data = mujoco.MjData(model)
        self.config = config
        self.joint_names = tuple(joint_names)
        self.camera_names = tuple(camera_names)
        self._qpos = np.array([model.joint(n).qposadr[0] for n in joint_names], dtype=np.int64)
        self._qvel = np.array([model.joint(n).dofadr[0] for n in joint_names], dtype=np.int64)
        self._actuators = np.array([model.actuator(n).id for n in joint_names], dtype=np.int64)
        self._target = model.body(TARGET_OBJECT).id
        self._target_geom = int(model.geom(f"{TARGET_OBJECT}_geom").id)
        self._objects = {o.name: model.joint(f"{o.name}_joint").qposadr[0] for o in layout.objects}
        self._tcps = np.array([model.body(n).id for n in layout.tcp_bodies], dtype=np.int64)
        self._gripper_bodies = _subtree_bodies(
            model, [model.body(n).id for n in layout.end_effector_bodies]
        )
        self._pacer = RealTimePacer(config.timestep_s, config.max_catch_up_s)
        self._renderer: mujoco.Renderer | None = None
        self.reset(layout)

    # state -------------------------------------------------------------------------------

    def reset(self, layout: SceneLayout | None = None) -> None:
        """Back to the start pose, targets holding it, cubes on the table."""
        mujoco.mj_resetData(self.model, self.data)
        start = (layout or scene_layout(self.config.embodiment)).initial_positions
        self.set_joint_positions(np.array([start.get(n, 0.0) for n in self.joint_names]))

    @property
    def time_s(self) -> float:
        """Simulated time since the start [s]."""
        return float(self.data.time)

    def joint_positions(self) -> FloatArray:
        """(joints,) positions in `joint_names` order [rad or m]."""
        return np.array(self.data.qpos[self._qpos], dtype=np.float64)

    def joint_velocities(self) -> FloatArray:
        return np.array(self.data.qvel[self._qvel], dtype=np.float64)

    def joint_targets(self) -> FloatArray:
        return np.array(self.data.ctrl[self._actuators], dtype=np.float64)

    def set_joint_targets(self, positions: npt.ArrayLike) -> None:
        """Command the position servos, clamped to each joint's range (like a real servo)."""
        targets = self._joint_vector(positions)
        ranges = self.model.actuator_ctrlrange[self._actuators]
        self.data.ctrl[self._actuators] = np.clip(targets, ranges[:, 0], ranges[:, 1])

    def set_joint_positions(self, positions: npt.ArrayLike) -> None:
        """Teleport the joints (and their targets) without simulating the motion."""
        values = self._joint_vector(positions)
        self.data.qpos[self._qpos] = values
        self.data.qvel[self._qvel] = 0.0
        self.data.ctrl[self._actuators] = values
        mujoco.mj_forward(self.model, self.data)

    def place_object(self, name: str, position: Sequence[float]) -> None:
        """Put a cube at `position` [m] (world frame), at rest."""
        address = self._objects[name]
        self.data.qpos[address : address + 3] = position
        self.data.qpos[address + 3 : address + 7] = (1.0, 0.0, 0.0, 0.0)
        mujoco.mj_forward(self.model, self.data)

    def tcp_positions(self) -> FloatArray:
        """(tcps, 3) tool centre point positions in the world frame [m]."""
        return np.array(self.data.xpos[self._tcps], dtype=np.float64)

    # time --------------------------------------------------------------------------------

    def step(self, count: int = 1) -> None:
        """Advance the physics by `count` timesteps, however long that takes."""
        if count > 0:
            mujoco.mj_step(self.model, self.data, nstep=count)

    def advance(self, now_ns: int) -> int:
        """Step as far as real time `now_ns` (monotonic clock) asks; return the steps taken.

        The first call anchors simulated time to `now_ns`. When more than `max_catch_up_s` is
        due, the world steps that much, counts the event in `behind_real_time_count`, logs a
        warning and drops the rest: simulated time then runs behind wall time by
        `lag_s`, never silently slower.
        """
        steps = self._pacer.steps_due(now_ns)
        self.step(steps)
        return steps

    @property
    def behind_real_time_count(self) -> int:
        return self._pacer.behind_count

    @property
    def lag_s(self) -> float:
        """Simulated time dropped to keep up with real time [s]."""
        return self._pacer.dropped_s

    # rendering ---------------------------------------------------------------------------

    def render(self, camera: str) -> ImageArray:
        """One camera's view at the configured size: (height, width, 3) RGB uint8."""
        if camera not in self.camera_names:
            raise KeyError(f"no camera {camera!r}; cameras: {', '.join(self.camera_names)}")
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.config.height, self.config.width)
        self._renderer.update_scene(self.data, camera=camera)
        image: ImageArray = self._renderer.render()
        return image

    def camera_intrinsics(self, camera: str) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) [px] of `camera` at the render size: pinhole from the MuJoCo
        camera's vertical field of view, square pixels, principal point at the centre."""
        if camera not in self.camera_names:
            raise KeyError(f"no camera {camera!r}; cameras: {', '.join(self.camera_names)}")
        fovy = math.radians(float(self.model.cam_fovy[self.model.camera(camera).id]))
        width, height = self.config.width, self.config.height
        fy = height / (2.0 * math.tan(fovy / 2.0))
        return fy, fy, width / 2.0, height / 2.0

    def close(self) -> None:
        """Release the GL context. Safe to repeat."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # task --------------------------------------------------------------------------------

    def task_state(self) -> TaskState:
        """Object poses and whether a gripper touches the red cube."""
        objects = {
            name: ObjectPose(
                tuple(float(v) for v in self.data.qpos[a : a + 3]),  # type: ignore[arg-type]
                tuple(float(v) for v in self.data.qpos[a + 3 : a + 7]),  # type: ignore[arg-type]
            )
            for name, a in self._objects.items()
        }
        distance = self._target_distance()
        success = distance <= self.config.touch_distance_m or self._gripper_touches_target()
        return TaskState(objects, distance, bool(success))

    def _target_distance(self) -> float:
        """Distance from the nearest TCP to the red cube's box [m] (0 inside it)."""
        centre = self.data.xpos[self._target]
        rotation = self.data.xmat[self._target].reshape(3, 3)
        half = self.model.geom_size[self._target_geom]
        local = (self.tcp_positions() - centre) @ rotation  # world → cube frame
        outside = np.maximum(np.abs(local) - half, 0.0)
        return float(np.min(np.linalg.norm(outside, axis=1)))

    def _gripper_touches_target(self) -> bool:
        for contact in self.data.contact[: self.data.ncon]:
            pair = {int(contact.geom1), int(contact.geom2)}
            if self._target_geom in pair:
                other = (pair - {self._target_geom}).pop() if len(pair) == 2 else -1
                if other >= 0 and int(self.model.geom_bodyid[other]) in self._gripper_bodies:
                    return True
        return False

    def _joint_vector(self, positions: npt.ArrayLike) -> FloatArray:
        values = np.asarray(positions, dtype=np.float64)
        if values.shape != (len(self.joint_names),) or not np.all(np.isfinite(values)):
            raise ValueError(
                f"need {len(self.joint_names)} finite joint values ({', '.join(self.joint_names)})"
                f", got {values!r}"
            )
        return values


# model building ----------------------------------------------------------------------------


def _add_scene(
    spec: mujoco.MjSpec, layout: SceneLayout, joint_names: Sequence[str], config: WorldConfig
) -> None:
    spec.option.timestep = config.timestep_s
    # implicitfast integrates the servos' damping implicitly: stiff position servos on light
    # links stay stable at a 2 ms step.
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.visual.global_.offwidth = max(config.width, 640)
    spec.visual.global_.offheight = max(config.height, 480)
    spec.visual.quality.shadowsize = 1024  # software GL: small shadow maps are much cheaper
    world = spec.worldbody
    robot_bodies = [b for b in spec.bodies if b.name != "world"]
    for body in robot_bodies:
        # Servos holding the arm against gravity would need an integral term; real arms are
        # position-controlled with enough stiffness that the sag is negligible.
        body.gravcomp = 1.0
        # MuJoCo skips parent-child contacts, except when the parent is welded to the world
        # (the URDF root): the first link would rub on the base. Exclude those pairs too.
        parent = body.parent
        if parent is not None and parent.name != "world":
            spec.add_exclude(bodyname1=parent.name, bodyname2=body.name)
    _add_actuators(spec, joint_names)

    sx, sy, sz = layout.table_half_size
    cx, cy = layout.table_centre_xy
    world.add_geom(
        name="table",
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[sx, sy, sz],
        pos=[cx, cy, -sz],
        rgba=[0.55, 0.42, 0.3, 1.0],
    )
    world.add_geom(
        name="floor",
        type=mujoco.mjtGeom.mjGEOM_PLANE,
        size=[3.0, 3.0, 0.1],
        pos=[0.0, 0.0, -0.75],
        rgba=[0.35, 0.38, 0.42, 1.0],
    )
    world.add_light(name="key", pos=[0.5, -0.5, 2.0], dir=[-0.2, 0.2, -1.0], castshadow=True)
    world.add_light(name="fill", pos=[-1.0, 1.0, 2.0], dir=[0.4, -0.4, -1.0], castshadow=False)
    for item in layout.objects:
        body = world.add_body(name=item.name, pos=list(item.position))
        body.add_freejoint(name=f"{item.name}_joint")
        body.add_geom(
            name=f"{item.name}_geom",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[item.half_size] * 3,
            rgba=list(item.rgba),
            mass=0.05,
            friction=[1.0, 0.01, 0.001],
        )
    for camera in layout.fixed_cameras:
        _add_fixed_camera(world, camera)
    for wrist in layout.wrist_cameras:
        _add_wrist_camera(spec, wrist)


def _add_mimic_equalities(spec: mujoco.MjSpec, urdf: Path) -> None:
    """Couple each URDF `<mimic>` joint to its leader, unless the importer already did.

    MuJoCo's URDF importer ignores `<mimic>` before 3.3 (urdf/README.md); newer ones add the
    same joint equality.
    """
    if any(e.type == mujoco.mjtEq.mjEQ_JOINT for e in spec.equalities):
        return
    for joint in ET.parse(urdf).getroot().iter("joint"):
        mimic = joint.find("mimic")
        if mimic is None:
            continue
        multiplier = float(mimic.get("multiplier", "1"))
        offset = float(mimic.get("offset", "0"))
        equality = spec.add_equality(name=f"{joint.get('name')}_mimic")
        equality.type = mujoco.mjtEq.mjEQ_JOINT
        equality.name1 = str(joint.get("name"))
        equality.name2 = str(mimic.get("joint"))
        # mirror = offset + multiplier * leader (polycoef of MuJoCo's joint equality)
        equality.data[:5] = [offset, multiplier, 0.0, 0.0, 0.0]


def _add_actuators(spec: mujoco.MjSpec, joint_names: Sequence[str]) -> None:
    joints = {j.name: j for j in spec.joints}
    for name in joint_names:
        joint = joints[name]
        effort = float(joint.actfrcrange[1]) or 10.0
        prismatic = joint.type == mujoco.mjtJoint.mjJNT_SLIDE
        # Stiffness: full effort at 0.1 rad (revolute) or 5 mm (prismatic) of error. Armature
        # stands in for the reflected rotor inertia of the geared motors (an STS3215's 1:345
        # gear makes it dominate the SO arm's light links) and keeps the servo loop stable.
        joint.armature = effort / 300.0
        actuator = spec.add_actuator(name=name, target=name)
        actuator.trntype = mujoco.mjtTrn.mjTRN_JOINT
        actuator.set_to_position(kp=effort * (200.0 if prismatic else 10.0), dampratio=1.0)
        actuator.ctrllimited = True
        # Limit the servo's torque at the actuator, not the joint: with the URDF's joint-level
        # clamp, implicitfast still integrates the servo's damping unclamped, and the arm
        # crawls at a fraction of a rad/s toward large targets.
        joint.actfrclimited = False
        actuator.forcelimited = True
        actuator.forcerange = [-effort, effort]
        actuator.ctrlrange = list(joint.range)


def _look_at_quaternion(
    position: Sequence[float], target: Sequence[float], up: Sequence[float]
) -> list[float]:
    """Quaternion of a camera frame at `position` looking at `target` (MuJoCo looks along -z)."""
    forward = np.asarray(target, np.float64) - np.asarray(position, np.float64)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.asarray(up, np.float64))
    if np.linalg.norm(right) < 1e-6:
        raise ValueError(f"camera up {up} is parallel to its view direction")
    right /= np.linalg.norm(right)
    true_up = np.cross(right, forward)
    matrix = np.column_stack([right, true_up, -forward])
    quaternion = np.zeros(4)
    mujoco.mju_mat2Quat(quaternion, matrix.reshape(-1))
    return [float(v) for v in quaternion]


def _add_fixed_camera(world: mujoco.MjsBody, camera: FixedCamera) -> None:
    world.add_camera(
        name=camera.name,
        pos=list(camera.position),
        quat=_look_at_quaternion(camera.position, camera.target, camera.up),
        fovy=camera.fovy_deg,
    )


def _add_wrist_camera(spec: mujoco.MjSpec, camera: WristCamera) -> None:
    mount = spec.body(camera.mount_body)
    tcp = spec.body(camera.tcp_body)
    if mount is None or tcp is None:
        raise ValueError(
            f"wrist camera {camera.name}: no body {camera.mount_body}/{camera.tcp_body}"
        )
    # The TCP is a fixed child of the mount: its `pos` is the look-at point in the mount frame,
    # pushed 5 cm further so the view centres beyond the fingertips.
    tip = np.asarray(tcp.pos, np.float64)
    ray = tip - np.asarray(camera.offset)
    target = tip + 0.05 * ray / np.linalg.norm(ray)
    mount.add_camera(
        name=camera.name,
        pos=list(camera.offset),
        quat=_look_at_quaternion(camera.offset, target, camera.up),
        fovy=camera.fovy_deg,
    )


def _subtree_bodies(model: mujoco.MjModel, roots: Sequence[int]) -> frozenset[int]:
    members = set(roots)
    for body in range(model.nbody):  # parents come before children in MuJoCo's body order
        if int(model.body_parentid[body]) in members and body != 0:
            members.add(body)
    return frozenset(members)
