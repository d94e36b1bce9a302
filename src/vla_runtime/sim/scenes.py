"""What each embodiment's simulated scene holds besides its URDF: placement, cameras, objects.

One `SceneLayout` per embodiment key (the registry `SCENES`), so robot differences stay data:
where the table's objects lie within reach, where the fixed cameras stand, which body carries
each wrist camera and which bodies count as the end effector for the task predicate. Camera
names are the embodiment's `policy.cameras` (config/embodiments/<name>.yaml). Positions are in
the world frame, which is the robot's root link frame (z up, table top at z = 0), in metres.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

Vector3 = tuple[float, float, float]


@dataclass(frozen=True)
class FixedCamera:
    """A camera standing in the world, looking from `position` at `target`."""

    name: str
    position: Vector3
    target: Vector3
    # World direction that appears up in the image; must not be parallel to the view ray.
    up: Vector3 = (0.0, 0.0, 1.0)
    fovy_deg: float = 60.0


@dataclass(frozen=True)
class WristCamera:
    """A camera fixed to `mount_body`, looking at the tool centre point `tcp_body` (its child).

    `offset` is the camera's position in the mount body's frame; `up` is a direction in the
    same frame that appears up in the image.
    """

    name: str
    mount_body: str
    tcp_body: str
    offset: Vector3
    up: Vector3
    fovy_deg: float = 75.0


@dataclass(frozen=True)
class SceneObject:
    """A free cube on the table (`half_size` m, RGBA colour); `position` is its centre."""

    name: str
    position: Vector3
    rgba: tuple[float, float, float, float]
    half_size: float = 0.015


@dataclass(frozen=True)
class SceneLayout:
    """Everything the world adds to an embodiment's URDF (see module docstring)."""

    fixed_cameras: tuple[FixedCamera, ...]
    wrist_cameras: tuple[WristCamera, ...]
    objects: tuple[SceneObject, ...]
    # Bodies (with their subtrees) that may touch the target: the grippers.
    end_effector_bodies: tuple[str, ...]
    # Tool centre points whose distance to the target counts for the task predicate.
    tcp_bodies: tuple[str, ...]
    # Start pose per joint name [rad or m]; joints left out start at 0.
    initial_positions: dict[str, float] = field(default_factory=dict)
    table_half_size: Vector3 = (0.6, 0.6, 0.02)
    table_centre_xy: tuple[float, float] = (0.0, 0.0)

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.fixed_cameras) + tuple(
            c.name for c in self.wrist_cameras
        )


RED = (0.85, 0.1, 0.1, 1.0)
GREEN = (0.1, 0.7, 0.2, 1.0)
BLUE = (0.15, 0.3, 0.85, 1.0)
TARGET_OBJECT = "red_cube"

SCENES: dict[str, SceneLayout] = {
    # The SO arm reaches along -y of its base; its zero pose holds the TCP at (0.02, -0.38, 0.26).
    "so100": SceneLayout(
        fixed_cameras=(FixedCamera("third_person", (0.42, -0.55, 0.42), (0.0, -0.22, 0.05)),),
        wrist_cameras=(
            WristCamera("wrist", "gripper_body", "gripper_tcp", (0.0, 0.06, 0.0), (0, 0, 1)),
        ),
        objects=(
            SceneObject(TARGET_OBJECT, (0.06, -0.24, 0.015), RED),
            SceneObject("green_cube", (-0.07, -0.22, 0.015), GREEN),
            SceneObject("blue_cube", (0.0, -0.32, 0.015), BLUE),
        ),
        end_effector_bodies=("gripper_body",),
        tcp_bodies=("gripper_tcp",),
        table_half_size=(0.4, 0.4, 0.02),
        table_centre_xy=(0.0, -0.2),
    ),
    # Two YAM arms 0.61 m apart on y, both reaching along +x.
    "yam_bimanual": SceneLayout(
        fixed_cameras=(
            FixedCamera("top", (0.75, 0.0, 0.85), (0.3, 0.0, 0.0), up=(1.0, 0.0, 0.0)),
        ),
        wrist_cameras=(
            WristCamera("wrist_left", "left_link6", "left_tcp", (0.06, 0.0, -0.03), (1, 0, 0)),
            WristCamera("wrist_right", "right_link6", "right_tcp", (0.06, 0.0, -0.03), (1, 0, 0)),
        ),
        objects=(
            SceneObject(TARGET_OBJECT, (0.35, 0.1, 0.02), RED, 0.02),
            SceneObject("green_cube", (0.4, -0.1, 0.02), GREEN, 0.02),
            SceneObject("blue_cube", (0.3, 0.0, 0.02), BLUE, 0.02),
        ),
        end_effector_bodies=("left_link6", "right_link6"),
        tcp_bodies=("left_tcp", "right_tcp"),
        table_half_size=(0.5, 0.7, 0.02),
        table_centre_xy=(0.25, 0.0),
    ),
    # FR3 in its ready pose (TCP at (0.31, 0, 0.49), pointing down); table in front along +x.
    "franka": SceneLayout(
        fixed_cameras=(FixedCamera("exterior", (1.25, 0.8, 0.8), (0.35, 0.0, 0.25)),),
        wrist_cameras=(
            WristCamera("wrist", "fr3_hand", "fr3_hand_tcp", (-0.1, 0.0, 0.0), (0, 0, 1)),
        ),
        objects=(
            SceneObject(TARGET_OBJECT, (0.45, -0.12, 0.025), RED, 0.025),
            SceneObject("green_cube", (0.5, 0.12, 0.025), GREEN, 0.025),
            SceneObject("blue_cube", (0.6, 0.0, 0.025), BLUE, 0.025),
        ),
        end_effector_bodies=("fr3_hand",),
        tcp_bodies=("fr3_hand_tcp",),
        # franka_rust JOINT_DEFAULT; the zero pose lies outside fr3_joint4's and 6's ranges.
        initial_positions={
            "fr3_joint2": -0.7853981633974483,
            "fr3_joint4": -2.356194490192345,
            "fr3_joint6": 1.5707963267948966,
            "fr3_joint7": 0.7853981633974483,
        },
        table_half_size=(0.6, 0.7, 0.02),
        table_centre_xy=(0.35, 0.0),
    ),
}


def scene_layout(embodiment: str) -> SceneLayout:
    """The layout registered for `embodiment`.

    Raises:
        KeyError: unknown embodiment, naming the known ones and the closest match.
    """
    try:
        return SCENES[embodiment]
    except KeyError:
        close = difflib.get_close_matches(embodiment, SCENES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise KeyError(
            f"no simulated scene for embodiment {embodiment!r} (known: {', '.join(SCENES)}){hint}"
        ) from None
