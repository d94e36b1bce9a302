"""Per-embodiment policy transforms: the shipped `policy:` configs, normalisation, state tokens,
action decoding and the messages a mismatch produces."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from vla_runtime.core.urdf import load_joint_limits
from vla_runtime.drivers.embodiment import EmbodimentConfig
from vla_runtime.policy.interface import PolicyError
from vla_runtime.policy.transforms import (
    EmbodimentTransform,
    TransformConfig,
    TransformConfigError,
    load_transform_config,
)
from vla_runtime.resources import resolve
from vla_runtime.ros.zenoh.arguments import load_params_file

EMBODIMENTS = ("so100", "yam_bimanual", "franka")
# MolmoAct2's per-embodiment chunks [molmoact2.md §1.2]: (rate Hz, rows, action dims).
CHUNKS = {"so100": (30.0, 30, 6), "yam_bimanual": (30.0, 30, 14), "franka": (15.0, 15, 8)}


def parameters(name: str) -> dict[str, Any]:
    return load_params_file(str(resolve("config", f"embodiments/{name}.yaml")), "/policy")


def unit_config(**changes: Any) -> TransformConfig:
    """Three joints with q01 -1 and q99 +1: model space equals normalised space."""
    fields: dict[str, Any] = {
        "embodiment": "test_arm",
        "norm_tag": "test_tag",
        "joint_names": ("a", "b", "c"),
        "cameras": ("front", "wrist"),
        "chunk_rate_hz": 10.0,
        "chunk_rows": 4,
        "prompt": "do the thing",
        "setup": "a test arm",
        "control_mode": "absolute joint pose",
        "state_q01": (-1.0, -1.0, -1.0),
        "state_q99": (1.0, 1.0, 1.0),
        "action_q01": (-1.0, -1.0, -1.0),
        "action_q99": (1.0, 1.0, 1.0),
    }
    fields.update(changes)
    return TransformConfig(**fields)


def image() -> np.ndarray:
    return np.zeros((48, 64, 3), np.uint8)


# -- shipped configs ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EMBODIMENTS)
def test_each_shipped_config_loads_and_matches_the_driver_config(name: str) -> None:
    config = load_transform_config(name)
    driver = EmbodimentConfig.from_parameters(parameters(name))  # still accepted by the driver
    transform = EmbodimentTransform(config)
    rate_hz, rows, dims = CHUNKS[name]
    assert config.embodiment == name
    assert config.joint_names == driver.joint_names
    assert len(config.joint_names) == dims
    assert (config.chunk_rate_hz, config.chunk_rows) == (rate_hz, rows)
    assert config.control_mode == "absolute joint pose"
    assert transform.action_mask().sum() == dims
    path = resolve("config", f"embodiments/{name}.yaml")
    assert load_transform_config(str(path)) == config


def test_shipped_camera_order_and_prompt_strings() -> None:
    so100, yam, franka = (load_transform_config(name) for name in EMBODIMENTS)
    assert so100.cameras == ("third_person", "wrist")
    assert yam.cameras == ("top", "wrist_left", "wrist_right")
    assert franka.cameras == ("exterior", "wrist")
    assert (so100.norm_tag, yam.norm_tag, franka.norm_tag) == (
        "so100_so101_molmoact2",
        "yam_dual_molmoact2",
        "franka_droid",
    )
    assert so100.setup == "single so100/so101 robotic arm in molmoact2"


@pytest.mark.parametrize("name", EMBODIMENTS)
def test_decoded_extremes_stay_inside_the_urdf_limits(name: str) -> None:
    config = load_transform_config(name)
    transform = EmbodimentTransform(config)
    urdf = resolve("urdf", str(parameters(name)["urdf"]))
    limits = load_joint_limits(urdf, config.joint_names)
    lower = np.array([limit.lower for limit in limits])
    upper = np.array([limit.upper for limit in limits])
    # Normalised joints span -1..1; the unnormalised grippers' apertures span 0..1.
    checked = {-1.0: np.array(config.normalize), 0.0: slice(None), 1.0: slice(None)}
    for value, joints in checked.items():
        chunk = transform.decode_actions(np.full((config.chunk_rows, 32), value, np.float32))
        assert chunk.shape == (config.chunk_rows, len(config.joint_names))
        inside = (chunk >= lower - 1e-9) & (chunk <= upper + 1e-9)
        assert np.all(inside[:, joints]), value


def test_yam_gripper_aperture_is_passed_through_unnormalised() -> None:
    transform = EmbodimentTransform(load_transform_config("yam_bimanual"))
    stroke_m = 0.04695
    joints = np.zeros(14)
    joints[[1, 2, 8, 9]] = 1.0  # inside the joint2/joint3 ranges
    joints[6], joints[13] = stroke_m / 2, stroke_m  # left half open, right fully open
    state = transform.normalize_state(joints)
    assert state[6] == pytest.approx(0.5, abs=1e-6)
    assert state[13] == pytest.approx(1.0, abs=1e-6)
    joints[13] = 1.5 * stroke_m  # beyond the stroke: clipped like every state value
    assert transform.normalize_state(joints)[13] == 1.0
    model = np.zeros((30, 32), np.float32)
    model[:, 6], model[:, 13] = 0.0, 0.25  # closed, a quarter open
    chunk = transform.decode_actions(model)
    assert chunk[0, 6] == pytest.approx(0.0)
    assert chunk[0, 13] == pytest.approx(0.25 * stroke_m)


def test_franka_gripper_uses_droids_closed_is_one_convention() -> None:
    transform = EmbodimentTransform(load_transform_config("franka"))
    model = np.zeros((15, 32), np.float32)
    model[0, 7], model[1, 7] = 0.0, 1.0
    chunk = transform.decode_actions(model)
    assert chunk[0, 7] == pytest.approx(0.04)  # 0 = open: one finger at 4 cm
    assert chunk[1, 7] == pytest.approx(0.0)  # 1 = closed


# -- normalisation and tokens ---------------------------------------------------------------------


@pytest.mark.parametrize("name", EMBODIMENTS)
def test_encode_then_decode_round_trips(name: str) -> None:
    config = load_transform_config(name)
    transform = EmbodimentTransform(config)
    low = np.array(config.action_q01)
    high = np.array(config.action_q99)
    rng = np.random.default_rng(0)
    fraction = rng.uniform(0.0, 1.0, (config.chunk_rows, len(config.joint_names)))
    model = low + fraction * (high - low)
    robot = (model - np.array(config.joint_offsets)) / (
        np.array(config.joint_signs) * np.array(config.joint_scales)
    )
    encoded = transform.encode_actions(robot)
    assert encoded.shape == (config.chunk_rows, 32) and encoded.dtype == np.float32
    assert np.all(encoded[:, len(config.joint_names) :] == 0.0)
    assert np.all(np.abs(encoded) <= 1.0 + 1e-6)
    np.testing.assert_allclose(transform.decode_actions(encoded), robot, atol=1e-5)


def test_extra_rows_and_padding_columns_are_ignored() -> None:
    transform = EmbodimentTransform(unit_config())
    model = np.full((30, 32), np.nan, np.float32)  # padding may hold anything
    model[:4, :3] = 0.5
    chunk = transform.decode_actions(model)
    assert chunk.shape == (4, 3) and chunk.dtype == np.float64
    np.testing.assert_allclose(chunk, 0.5)


def test_action_mask_marks_the_embodiment_dims() -> None:
    mask = EmbodimentTransform(unit_config(), action_width=8).action_mask()
    assert mask.tolist() == [True, True, True, False, False, False, False, False]


def test_state_bins_of_minus_one_zero_and_plus_one() -> None:
    transform = EmbodimentTransform(unit_config())
    tokens = transform.state_tokens([-1.0, 0.0, 1.0])
    assert tokens.dtype == np.int64
    assert tokens.tolist() == [0, 128, 255]
    assert EmbodimentTransform(unit_config(), state_bins=5).state_tokens([-1, 0, 1]).tolist() == [
        0,
        2,
        4,
    ]


def test_state_outside_the_statistics_saturates_at_the_end_bins() -> None:
    config = unit_config(state_q01=(0.0, 0.0, 0.0), state_q99=(2.0, 2.0, 2.0))
    transform = EmbodimentTransform(config)
    state = transform.normalize_state([-5.0, 1.0, 7.0])
    assert state.dtype == np.float32
    assert state.tolist() == [-1.0, 0.0, 1.0]
    assert transform.state_tokens([-5.0, 1.0, 7.0]).tolist() == [0, 128, 255]


def test_sign_scale_and_offset_convention() -> None:
    # model = sign * scale * robot + offset
    config = unit_config(
        joint_signs=(-1.0, 1.0, 1.0), joint_scales=(2.0, 1.0, 1.0), joint_offsets=(0.5, 0, 0)
    )
    transform = EmbodimentTransform(config)
    assert transform.normalize_state([0.1, 0.0, 0.0])[0] == pytest.approx(0.3)
    model = np.zeros((4, 32))
    model[:, 0] = 0.3
    assert transform.decode_actions(model)[0, 0] == pytest.approx(0.1)


def test_optional_conventions_default_to_identity() -> None:
    config = unit_config()
    assert config.joint_signs == (1.0, 1.0, 1.0)
    assert config.joint_scales == (1.0, 1.0, 1.0)
    assert config.joint_offsets == (0.0, 0.0, 0.0)
    assert config.normalize == (True, True, True)
    flat = parameters("so100")
    for key in ("policy.joint_signs", "policy.joint_scales", "policy.joint_offsets"):
        del flat[key]
    del flat["policy.normalize"]
    assert TransformConfig.from_parameters(flat) == load_transform_config("so100")


def test_images_come_back_in_model_order_and_prompt_falls_back() -> None:
    transform = EmbodimentTransform(unit_config())
    front, wrist, extra = image(), image(), image()
    ordered = transform.ordered_images({"wrist": wrist, "extra": extra, "front": front})
    assert ordered[0] is front and ordered[1] is wrist and len(ordered) == 2
    assert transform.prompt_fields(None) == ("do the thing", "a test arm", "absolute joint pose")
    assert transform.prompt_fields("stack it")[0] == "stack it"


# -- mismatches -----------------------------------------------------------------------------------


def test_a_missing_camera_is_named_with_what_to_change() -> None:
    transform = EmbodimentTransform(load_transform_config("so100"))
    with pytest.raises(PolicyError, match=r"missing camera\(s\) \['wrist'\]") as error:
        transform.check_observation(
            {"third_person": image(), "top": image()}, transform.config.joint_names, np.zeros(6)
        )
    assert "policy.cameras in config/embodiments/so100.yaml" in str(error.value)
    assert "remap" in str(error.value)


def test_joint_count_and_order_mismatches_are_named() -> None:
    transform = EmbodimentTransform(unit_config())
    images = {"front": image(), "wrist": image()}
    with pytest.raises(PolicyError, match=r"observation has 2 joints .* expects 3"):
        transform.check_observation(images, ("a", "b"), np.zeros(2))
    with pytest.raises(PolicyError, match=r"another order"):
        transform.check_observation(images, ("c", "b", "a"), np.zeros(3))
    with pytest.raises(PolicyError, match=r"non-finite joint positions for \['b'\]"):
        transform.check_observation(images, ("a", "b", "c"), np.array([0.0, np.nan, 0.0]))
    transform.check_observation(images, ("a", "b", "c"), np.zeros(3))  # fits


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((48, 64), np.uint8),
        np.zeros((48, 64, 3), np.float32),
        np.zeros((0, 64, 3), np.uint8),
    ],
)
def test_an_image_that_is_not_hxwx3_uint8_is_rejected(bad: np.ndarray) -> None:
    transform = EmbodimentTransform(unit_config())
    with pytest.raises(PolicyError, match=r"camera 'wrist': expected an HxWx3 uint8"):
        transform.check_observation({"front": image(), "wrist": bad}, ("a", "b", "c"), np.zeros(3))


def test_decode_rejects_a_wrong_shape_or_non_finite_values() -> None:
    transform = EmbodimentTransform(unit_config())
    with pytest.raises(PolicyError, match=r"shape \(3, 32\), expected \(>= 4, 32\)"):
        transform.decode_actions(np.zeros((3, 32)))
    with pytest.raises(PolicyError, match=r"expected"):
        transform.decode_actions(np.zeros((4, 16)))
    model = np.zeros((4, 32))
    model[2, 1] = np.inf
    with pytest.raises(PolicyError, match=r"row 2, joint b"):
        transform.decode_actions(model)


def test_a_missing_statistics_key_names_the_key_and_the_file() -> None:
    flat = parameters("so100")
    del flat["policy.state_q99"]
    with pytest.raises(
        TransformConfigError, match=r"'policy.state_q99'.*config/embodiments/so100"
    ):
        TransformConfig.from_parameters(flat)


def test_an_unknown_policy_key_suggests_the_closest_name() -> None:
    flat = parameters("so100")
    flat["policy.joint_sign"] = flat.pop("policy.joint_signs")
    with pytest.raises(TransformConfigError, match=r"Did you mean 'policy.joint_signs'"):
        TransformConfig.from_parameters(flat)


def test_a_non_numeric_statistic_names_the_key() -> None:
    flat = parameters("so100")
    flat["policy.action_q01"] = ["low"] * 6
    with pytest.raises(TransformConfigError, match=r"policy.action_q01 in config/embodiments"):
        TransformConfig.from_parameters(flat)


def test_q99_not_above_q01_names_the_joint() -> None:
    with pytest.raises(TransformConfigError, match=r"action_q99 must exceed .* joint b"):
        unit_config(action_q01=(-1.0, 0.5, -1.0), action_q99=(1.0, 0.5, 1.0))
    # a joint that is not normalised needs no spread
    unit_config(
        action_q01=(-1.0, 0.5, -1.0), action_q99=(1.0, 0.5, 1.0), normalize=(True, False, True)
    )


def test_per_joint_values_signs_and_scales_are_validated() -> None:
    with pytest.raises(TransformConfigError, match=r"policy.state_q01 .* 2 values for 3 joints"):
        unit_config(state_q01=(-1.0, -1.0))
    with pytest.raises(TransformConfigError, match=r"joint_signs must be 1.0 or -1.0"):
        unit_config(joint_signs=(1.0, 0.5, 1.0))
    with pytest.raises(TransformConfigError, match=r"joint_scales > 0"):
        unit_config(joint_scales=(1.0, 1.0, 0.0))
    with pytest.raises(TransformConfigError, match=r"policy.joint_offsets .* non-finite"):
        unit_config(joint_offsets=(0.0, np.nan, 0.0))
    with pytest.raises(TransformConfigError, match=r"policy.cameras"):
        unit_config(cameras=("front", "front"))
    with pytest.raises(TransformConfigError, match=r"policy.chunk_rows .* >= 1"):
        unit_config(chunk_rows=0)


def test_too_long_a_chunk_or_too_many_joints_for_the_model() -> None:
    with pytest.raises(TransformConfigError, match=r"policy.chunk_rows 31 .*max_rows"):
        EmbodimentTransform(replace(unit_config(), chunk_rows=31))
    yam = load_transform_config("yam_bimanual")
    with pytest.raises(TransformConfigError, match=r"14 joints but the model's action_width is 8"):
        EmbodimentTransform(yam, action_width=8)


def test_a_misspelt_embodiment_suggests_the_closest_name() -> None:
    with pytest.raises(TransformConfigError, match=r"Did you mean 'so100'") as error:
        load_transform_config("so10")
    message = str(error.value)
    assert "known: franka, so100, yam_bimanual" in message  # so100_leader is no embodiment


def test_a_missing_parameter_file_is_reported() -> None:
    with pytest.raises(TransformConfigError, match=r"no parameter file"):
        load_transform_config("/nonexistent/robot.yaml")


def test_a_file_without_a_policy_subtree_names_the_first_missing_key(tmp_path: Any) -> None:
    path = tmp_path / "bare.yaml"
    path.write_text("/**:\n  ros__parameters:\n    embodiment: bare\n    joint_names: [a]\n")
    with pytest.raises(TransformConfigError, match=r"'policy.norm_tag'.*config/embodiments/bare"):
        load_transform_config(str(path))
