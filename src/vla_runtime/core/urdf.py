"""Joint limits read from a URDF: the part of a robot description the runtime itself needs.

The driver's safety envelope clamps targets to the position limits and bounds each tick's step by
the velocity limits (DESIGN §4), so both come from the same URDF the simulator loads, not from a
second copy in config. Only `<joint>` elements that are direct children of `<robot>` count; the
`<joint>` references inside `<transmission>` blocks are not joints.

Movable joints are the ones with a position of their own: revolute, prismatic and continuous
joints that do not `<mimic>` another joint. A mimic joint (the second finger of a parallel
gripper) follows its leader and is never commanded, but its limits can still be asked for by name.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast, get_args

__all__ = ["JointKind", "JointLimit", "load_joint_limits", "movable_joint_names"]

JointKind = Literal["revolute", "prismatic", "continuous"]

_MOVABLE_KINDS: frozenset[str] = frozenset(get_args(JointKind))
# Every joint type the URDF specification defines; anything else is a malformed file.
_URDF_KINDS: frozenset[str] = _MOVABLE_KINDS | {"fixed", "floating", "planar"}


@dataclass(frozen=True)
class JointLimit:
    """Position, velocity and effort limits of one joint, as its URDF states them.

    Units follow the joint kind: radians, rad/s and N·m for revolute and continuous joints;
    metres, m/s and N for prismatic ones. A continuous joint turns without end, so its `lower`
    and `upper` are -inf and +inf.
    """

    name: str
    kind: JointKind
    lower: float
    upper: float
    max_velocity: float
    max_effort: float

    def __post_init__(self) -> None:
        if self.kind not in _MOVABLE_KINDS:
            raise ValueError(
                f"joint {self.name!r}: kind {self.kind!r} has no limits; use one of "
                f"{sorted(_MOVABLE_KINDS)}"
            )
        if self.kind == "continuous":
            if (self.lower, self.upper) != (-math.inf, math.inf):
                raise ValueError(
                    f"joint {self.name!r}: a continuous joint has no position limits; "
                    "set lower=-inf and upper=inf or make it revolute"
                )
        elif not (math.isfinite(self.lower) and math.isfinite(self.upper)):
            raise ValueError(f"joint {self.name!r}: lower and upper must be finite numbers")
        elif self.lower >= self.upper:
            raise ValueError(
                f"joint {self.name!r}: lower ({self.lower}) must be below upper ({self.upper})"
            )
        # Zero would freeze the joint and NaN would disable every comparison made against it.
        for field, value in (("velocity", self.max_velocity), ("effort", self.max_effort)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"joint {self.name!r}: {field} limit must be a positive finite number, "
                    f"got {value}"
                )


@dataclass(frozen=True)
class _Joint:
    """One `<joint>` element, checked only as far as every joint must be."""

    name: str
    kind: str
    mimic: str | None
    element: ET.Element


def movable_joint_names(path: str | Path) -> tuple[str, ...]:
    """Names of the joints the robot is commanded through, in the order the file lists them.

    Raises:
        ValueError: The file is not a well-formed URDF.
    """
    return _movable(_read_joints(Path(path)))


def load_joint_limits(
    path: str | Path, joint_names: Sequence[str] | None = None
) -> tuple[JointLimit, ...]:
    """Limits of `joint_names` (default: every movable joint, file order), in the order asked.

    Args:
        path: The URDF file.
        joint_names: The joints to read, e.g. an embodiment's joint vector. Mimic joints may be
            named explicitly; fixed, floating and planar joints have no limits and may not.

    Raises:
        ValueError: The file is not a well-formed URDF, a name is missing from it or repeated,
            or a joint's `<limit>` is absent, incomplete or out of range. The message names the
            file and every offending joint.
        TypeError: `joint_names` is a single string rather than a sequence of names.
    """
    if isinstance(joint_names, str):
        raise TypeError(f"joint_names must be a sequence of names, not the string {joint_names!r}")
    path = Path(path)
    joints = _read_joints(path)
    if joint_names is None:
        names = _movable(joints)
    else:
        names = tuple(joint_names)
        _check_requested(path, names, joints)

    limits: list[JointLimit] = []
    problems: list[str] = []
    for name in names:
        try:
            limits.append(_limit_of(joints[name]))
        except ValueError as error:
            problems.append(str(error))
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return tuple(limits)


def _check_requested(path: Path, names: tuple[str, ...], joints: dict[str, _Joint]) -> None:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{path}: joint names requested more than once: {', '.join(repeated)}")
    missing = [name for name in names if name not in joints]
    if missing:
        movable = ", ".join(_movable(joints)) or "none"
        raise ValueError(
            f"{path}: no joint named {', '.join(missing)}; the movable joints are: {movable}"
        )
    immovable = [
        f"{name} ({joints[name].kind})"
        for name in names
        if joints[name].kind not in _MOVABLE_KINDS
    ]
    if immovable:
        raise ValueError(f"{path}: joints without limits requested: {', '.join(immovable)}")


def _movable(joints: dict[str, _Joint]) -> tuple[str, ...]:
    return tuple(
        joint.name
        for joint in joints.values()
        if joint.kind in _MOVABLE_KINDS and joint.mimic is None
    )


def _read_joints(path: Path) -> dict[str, _Joint]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        raise ValueError(f"{path}: not well-formed XML ({error})") from None
    if root.tag != "robot":
        raise ValueError(f"{path}: the root element is <{root.tag}>, a URDF needs <robot>")

    joints: dict[str, _Joint] = {}
    for index, element in enumerate(root.findall("joint"), start=1):
        name = element.get("name")
        kind = element.get("type")
        if not name:
            raise ValueError(f"{path}: joint number {index} has no name")
        if kind not in _URDF_KINDS:
            raise ValueError(
                f"{path}: joint {name!r} has type {kind!r}; URDF types are "
                f"{', '.join(sorted(_URDF_KINDS))}"
            )
        if name in joints:
            raise ValueError(f"{path}: more than one joint is named {name!r}")
        mimic = element.find("mimic")
        leader = None if mimic is None else mimic.get("joint")
        if mimic is not None and not leader:
            raise ValueError(f"{path}: joint {name!r} has a <mimic> without a joint attribute")
        joints[name] = _Joint(name=name, kind=kind, mimic=leader, element=element)

    for joint in joints.values():
        if joint.mimic is not None and joint.mimic not in joints:
            raise ValueError(f"{path}: joint {joint.name!r} mimics unknown joint {joint.mimic!r}")
    return joints


def _limit_of(joint: _Joint) -> JointLimit:
    limit = joint.element.find("limit")
    if limit is None:
        raise ValueError(f"joint {joint.name!r} has no <limit>")
    velocity = _number(joint.name, limit, "velocity")
    effort = _number(joint.name, limit, "effort")
    if joint.kind == "continuous":
        # URDF ignores lower/upper on continuous joints; so does the runtime.
        lower, upper = -math.inf, math.inf
    else:
        lower = _number(joint.name, limit, "lower")
        upper = _number(joint.name, limit, "upper")
    return JointLimit(
        name=joint.name,
        kind=cast(JointKind, joint.kind),
        lower=lower,
        upper=upper,
        max_velocity=velocity,
        max_effort=effort,
    )


def _number(joint_name: str, limit: ET.Element, attribute: str) -> float:
    text = limit.get(attribute)
    # The URDF specification defaults a missing lower/upper to 0; for a safety limit an
    # explicit figure is required instead.
    if text is None:
        raise ValueError(f"joint {joint_name!r}: <limit> has no {attribute}")
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"joint {joint_name!r}: <limit {attribute}={text!r}> is not a number"
        ) from None
