"""The packaged URDFs (structure, limits, published kinematics) and the joint-limit parser."""

from __future__ import annotations

import dataclasses
import math
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from vla_runtime.core.urdf import JointLimit, load_joint_limits, movable_joint_names

URDF_DIR = Path(__file__).resolve().parents[2] / "urdf"

YAM_ARM = [f"joint{i}" for i in range(1, 7)] + ["gripper"]
EXPECTED_JOINTS = {
    "so100": [
        "shoulder_pan",
        "shoulder_lift",
        "elbow_flex",
        "wrist_flex",
        "wrist_roll",
        "gripper",
    ],
    "yam_bimanual": [f"left_{j}" for j in YAM_ARM] + [f"right_{j}" for j in YAM_ARM],
    "franka": [f"fr3_joint{i}" for i in range(1, 8)] + ["fr3_finger_joint1"],
}
EMBODIMENTS = sorted(EXPECTED_JOINTS)


def urdf_path(embodiment: str) -> Path:
    return URDF_DIR / embodiment / f"{embodiment}.urdf"


def write_urdf(tmp_path: Path, body: str, name: str = "robot.urdf") -> Path:
    path = tmp_path / name
    path.write_text(
        f'<?xml version="1.0"?>\n<robot name="test">\n{textwrap.dedent(body)}\n</robot>\n',
        encoding="utf-8",
    )
    return path


def link_of(joint: ET.Element, role: str) -> str:
    """The link a joint's <parent> or <child> names."""
    element = joint.find(role)
    assert element is not None, f"joint {joint.get('name')} has no <{role}>"
    return element.get("link", "")


def revolute(name: str, limit: str = 'lower="-1" upper="1" velocity="2" effort="3"') -> str:
    return f"""
    <joint name="{name}" type="revolute">
      <parent link="a"/><child link="b_{name}"/><axis xyz="0 0 1"/>
      <limit {limit}/>
    </joint>"""


# --- the packaged URDFs ---------------------------------------------------------------------


@pytest.mark.parametrize("embodiment", EMBODIMENTS)
def test_movable_joints_are_the_embodiment_joint_vector(embodiment: str) -> None:
    assert list(movable_joint_names(urdf_path(embodiment))) == EXPECTED_JOINTS[embodiment]


@pytest.mark.parametrize("embodiment", EMBODIMENTS)
def test_every_movable_joint_has_usable_limits(embodiment: str) -> None:
    limits = load_joint_limits(urdf_path(embodiment))
    assert [limit.name for limit in limits] == EXPECTED_JOINTS[embodiment]
    for limit in limits:
        assert limit.kind in ("revolute", "prismatic")
        assert math.isfinite(limit.lower) and math.isfinite(limit.upper)
        assert limit.lower < limit.upper
        assert limit.max_velocity > 0 and limit.max_effort > 0


@pytest.mark.parametrize("embodiment", EMBODIMENTS)
def test_urdf_is_a_tree_of_inertial_links_with_primitive_geometry(embodiment: str) -> None:
    root = ET.parse(urdf_path(embodiment)).getroot()  # raises on malformed XML
    assert root.tag == "robot" and root.get("name") == embodiment
    assert root.find(".//mesh") is None, "primitive geometry only"

    links = {link.get("name"): link for link in root.findall("link")}
    for name, link in links.items():
        inertial = link.find("inertial")
        assert inertial is not None, f"link {name} has no <inertial>"
        mass = inertial.find("mass")
        inertia = inertial.find("inertia")
        assert mass is not None and float(mass.get("value", "0")) > 0, name
        assert inertia is not None, name
        values = {key: float(value) for key, value in inertia.attrib.items()}
        tensor = np.array(
            [
                [values["ixx"], values["ixy"], values["ixz"]],
                [values["ixy"], values["iyy"], values["iyz"]],
                [values["ixz"], values["iyz"], values["izz"]],
            ]
        )
        moments = np.linalg.eigvalsh(tensor)
        assert moments.min() > 0, f"{name}: inertia not positive definite"
        # Principal moments of a real body satisfy the triangle inequality (MuJoCo checks it).
        assert moments[0] + moments[1] >= moments[2] * (1 - 1e-9), name
        for shape in link.iter("geometry"):
            assert len(shape) == 1 and shape[0].tag in ("box", "cylinder", "sphere"), name

    joints = root.findall("joint")
    children = [link_of(joint, "child") for joint in joints]
    parents = {link_of(joint, "parent") for joint in joints}
    assert len(children) == len(set(children)), "a link with two parents"
    assert set(children) | parents <= set(links), "a joint names an unknown link"
    assert len(set(links) - set(children)) == 1, "exactly one root link"
    for joint in joints:
        if joint.get("type") != "fixed":
            assert joint.find("limit") is not None, f"joint {joint.get('name')} has no <limit>"


def test_mimic_and_fixed_joints_are_not_movable() -> None:
    franka = urdf_path("franka")
    assert "fr3_finger_joint2" not in movable_joint_names(franka)
    assert "fr3_joint8" not in movable_joint_names(franka)
    # A mimic joint's limits can still be read by name; a fixed joint has none.
    (finger,) = load_joint_limits(franka, ["fr3_finger_joint2"])
    assert (finger.kind, finger.lower, finger.upper) == ("prismatic", 0.0, 0.04)
    with pytest.raises(ValueError, match=r"fr3_joint8 \(fixed\)"):
        load_joint_limits(franka, ["fr3_joint1", "fr3_joint8"])
    yam = movable_joint_names(urdf_path("yam_bimanual"))
    assert not [name for name in yam if name.endswith("_mirror")]


def test_franka_limits_are_the_published_figures() -> None:
    limits = {limit.name: limit for limit in load_joint_limits(urdf_path("franka"))}
    assert (limits["fr3_joint4"].lower, limits["fr3_joint4"].upper) == (-3.0421, -0.1518)
    assert (limits["fr3_joint6"].lower, limits["fr3_joint6"].upper) == (0.5445, 4.5169)
    velocities = [limits[f"fr3_joint{i}"].max_velocity for i in range(1, 8)]
    assert velocities == [2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26]
    efforts = [limits[f"fr3_joint{i}"].max_effort for i in range(1, 8)]
    assert efforts == [87.0] * 4 + [12.0] * 3


def test_yam_arms_are_identical_apart_from_their_mount() -> None:
    limits = load_joint_limits(urdf_path("yam_bimanual"))
    left = [(lim.kind, lim.lower, lim.upper, lim.max_velocity) for lim in limits[:7]]
    right = [(lim.kind, lim.lower, lim.upper, lim.max_velocity) for lim in limits[7:]]
    assert left == right
    assert limits[6].kind == "prismatic" and limits[13].kind == "prismatic"


# Forward kinematics over the URDF's own origins, to check them against the home poses the
# sources publish (not against numbers copied from the URDF).


def _rotation(rpy: list[float]) -> np.ndarray:
    roll, pitch, yaw = rpy
    cr, sr, cp, sp, cy, sy = (f(a) for a in (roll, pitch, yaw) for f in (math.cos, math.sin))
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def home_pose(path: Path, link: str) -> np.ndarray:
    """Pose of `link` in the root frame with every joint at zero."""
    by_child = {
        link_of(joint, "child"): joint for joint in ET.parse(path).getroot().findall("joint")
    }
    pose = np.eye(4)
    while link in by_child:
        joint = by_child[link]
        origin = joint.find("origin")
        step = np.eye(4)
        if origin is not None:
            step[:3, :3] = _rotation([float(v) for v in origin.get("rpy", "0 0 0").split()])
            step[:3, 3] = [float(v) for v in origin.get("xyz", "0 0 0").split()]
        pose = step @ pose
        link = link_of(joint, "parent")
    return pose


def test_franka_flange_home_pose_matches_the_dh_table() -> None:
    # Franka's DH table (a, d) puts the flange at x = a7, z = d1 + d3 + d5 - d_flange at q = 0,
    # pointing down.
    pose = home_pose(urdf_path("franka"), "fr3_link8")
    assert pose[:3, 3] == pytest.approx([0.088, 0.0, 0.333 + 0.316 + 0.384 - 0.107], abs=1e-9)
    assert pose[:3, :3] == pytest.approx(np.diag([1.0, -1.0, -1.0]), abs=1e-9)


def test_yam_flange_home_pose_matches_i2rt() -> None:
    # i2rt's yam README gives the joint-6 mount at home at (0.11059726269, 0, 0.173501812023)
    # in the arm's base frame, approach axis (its -z) along +x.
    for side, offset in (("left", 0.305), ("right", -0.305)):
        pose = home_pose(urdf_path("yam_bimanual"), f"{side}_link6")
        assert pose[:3, 3] == pytest.approx([0.11059726269, offset, 0.173501812023], abs=1e-5)
        assert pose[:3, 2] == pytest.approx([-1.0, 0.0, 0.0], abs=1e-5)


def test_readme_gives_provenance_for_every_joint() -> None:
    readme = (URDF_DIR / "README.md").read_text(encoding="utf-8")
    for joints in EXPECTED_JOINTS.values():
        for name in joints:
            unprefixed = name.removeprefix("left_").removeprefix("right_")
            assert f"`{unprefixed}`" in readme, name


# --- the parser, on small inline files ------------------------------------------------------


def test_limits_come_back_in_the_order_asked(tmp_path: Path) -> None:
    path = write_urdf(tmp_path, revolute("a") + revolute("b") + revolute("c"))
    assert movable_joint_names(path) == ("a", "b", "c")
    assert [limit.name for limit in load_joint_limits(path, ["c", "a"])] == ["c", "a"]
    assert [limit.name for limit in load_joint_limits(str(path))] == ["a", "b", "c"]
    assert load_joint_limits(path, ["b"]) == (
        JointLimit("b", "revolute", -1.0, 1.0, max_velocity=2.0, max_effort=3.0),
    )


def test_missing_names_are_all_reported_with_the_file(tmp_path: Path) -> None:
    path = write_urdf(tmp_path, revolute("a"))
    with pytest.raises(ValueError) as caught:
        load_joint_limits(path, ["a", "elbow", "wrist"])
    message = str(caught.value)
    assert (
        str(path) in message and "elbow, wrist" in message and "movable joints are: a" in message
    )


def test_repeated_names_are_rejected(tmp_path: Path) -> None:
    path = write_urdf(tmp_path, revolute("a"))
    with pytest.raises(ValueError, match="more than once: a"):
        load_joint_limits(path, ["a", "a"])


def test_a_single_string_is_not_a_list_of_names(tmp_path: Path) -> None:
    path = write_urdf(tmp_path, revolute("a"))
    with pytest.raises(TypeError, match="sequence of names"):
        load_joint_limits(path, "a")


@pytest.mark.parametrize(
    ("limit", "complaint"),
    [
        (None, "'a' has no <limit>"),
        ('upper="1" velocity="2" effort="3"', "<limit> has no lower"),
        ('lower="-1" upper="1" effort="3"', "<limit> has no velocity"),
        ('lower="-1" upper="1" velocity="fast" effort="3"', "velocity='fast'> is not a number"),
        ('lower="1" upper="1" velocity="2" effort="3"', r"lower \(1.0\) must be below upper"),
        ('lower="-1" upper="1" velocity="0" effort="3"', "velocity limit must be a positive"),
        ('lower="-1" upper="1" velocity="nan" effort="3"', "velocity limit must be a positive"),
        ('lower="-1" upper="1" velocity="2" effort="-3"', "effort limit must be a positive"),
        ('lower="-inf" upper="1" velocity="2" effort="3"', "must be finite"),
    ],
)
def test_bad_limits_name_the_file_and_the_joint(
    tmp_path: Path, limit: str | None, complaint: str
) -> None:
    body = (
        '<joint name="a" type="prismatic"><parent link="p"/><child link="c"/></joint>'
        if limit is None
        else revolute("a", limit)
    )
    path = write_urdf(tmp_path, body + revolute("ok"))
    with pytest.raises(ValueError, match=complaint) as caught:
        load_joint_limits(path)
    assert str(path) in str(caught.value)


def test_every_bad_joint_is_reported_at_once(tmp_path: Path) -> None:
    path = write_urdf(
        tmp_path, revolute("a", 'lower="0" upper="1" velocity="0" effort="1"') + revolute("b", "")
    )
    with pytest.raises(ValueError, match=r"joint 'a'.*; joint 'b'"):
        load_joint_limits(path)


def test_continuous_joints_have_no_position_limits(tmp_path: Path) -> None:
    body = """
    <joint name="wheel" type="continuous">
      <parent link="a"/><child link="b"/><limit lower="-1" upper="1" velocity="5" effort="2"/>
    </joint>"""
    (wheel,) = load_joint_limits(write_urdf(tmp_path, body))
    assert (wheel.kind, wheel.lower, wheel.upper) == ("continuous", -math.inf, math.inf)
    assert wheel.max_velocity == 5.0


def test_fixed_floating_mimic_and_transmission_joints(tmp_path: Path) -> None:
    body = (
        revolute("finger")
        + revolute("finger_mirror").replace("</joint>", '<mimic joint="finger"/></joint>')
        + """
    <joint name="flange" type="fixed"><parent link="a"/><child link="f"/></joint>
    <joint name="free" type="floating"><parent link="a"/><child link="g"/></joint>
    <transmission name="t"><joint name="finger"><hardwareInterface>x</hardwareInterface></joint>
    </transmission>"""
    )
    path = write_urdf(tmp_path, body)
    assert movable_joint_names(path) == ("finger",)
    assert [limit.name for limit in load_joint_limits(path, ["finger_mirror"])] == [
        "finger_mirror"
    ]
    with pytest.raises(ValueError, match=r"flange \(fixed\), free \(floating\)"):
        load_joint_limits(path, ["flange", "free"])


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("<robot><joint", "not well-formed XML"),
        ('<sdf version="1.9"/>', "root element is <sdf>"),
        ('<robot><joint type="revolute"/></robot>', "joint number 1 has no name"),
        ('<robot><joint name="a" type="hinge"/></robot>', "type 'hinge'"),
        (
            '<robot><joint name="a" type="fixed"/><joint name="a" type="fixed"/></robot>',
            "more than one joint is named 'a'",
        ),
        (
            '<robot><joint name="a" type="revolute"><mimic joint="z"/></joint></robot>',
            "mimics unknown joint 'z'",
        ),
    ],
)
def test_malformed_files_are_value_errors_naming_the_file(
    tmp_path: Path, text: str, complaint: str
) -> None:
    path = tmp_path / "broken.urdf"
    path.write_text(text, encoding="utf-8")
    for read in (movable_joint_names, load_joint_limits):
        with pytest.raises(ValueError, match=complaint) as caught:
            read(path)
        assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"kind": "fixed"}, "has no limits"),
        ({"kind": "continuous"}, "continuous joint has no position limits"),
        ({"lower": 2.0}, "must be below upper"),
        ({"max_effort": 0.0}, "effort limit"),
    ],
)
def test_joint_limit_validates_itself(kwargs: dict[str, object], complaint: str) -> None:
    valid = JointLimit("j", "revolute", -1.0, 1.0, max_velocity=1.0, max_effort=1.0)
    with pytest.raises(ValueError, match=complaint):
        dataclasses.replace(valid, **kwargs)
