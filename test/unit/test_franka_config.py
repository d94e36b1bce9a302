"""Franka driver and stand-in configuration, and the stand-in's middleware-free arm model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from vla_runtime.drivers.base import DriverError
from vla_runtime.drivers.emulators.franka_ros2 import (
    FR3_MAX_VELOCITY_RAD_S,
    FR3_POSITION_MAX_RAD,
    FrankaArmModel,
    FrankaRos2EmulatorConfig,
)
from vla_runtime.drivers.franka import FrankaConfig, FrankaDriver, build
from vla_runtime.drivers.registry import driver_builder

ARM = tuple(f"fr3_joint{i}" for i in range(1, 8))
JOINTS = (*ARM, "fr3_finger_joint1")
MS = 1_000_000


def test_defaults_describe_an_fr3_with_a_hand_on_a_forward_position_controller() -> None:
    config = FrankaConfig()
    assert config.joint_names == JOINTS
    assert config.arm_joint_names == ARM
    assert config.gripper_joint == "fr3_finger_joint1"
    assert config.command_topic == "/joint_position_controller/commands"
    assert config.controller_name == "joint_position_controller"
    assert config.state_timeout_s == 0.1


def test_trajectory_interface_uses_the_trajectory_controller() -> None:
    config = FrankaConfig(command_interface="trajectory")
    assert config.command_topic == "/fr3_arm_controller/joint_trajectory"
    assert config.controller_name == "fr3_arm_controller"


def test_an_arm_without_a_hand_has_seven_joints_and_no_gripper_topics() -> None:
    config = FrankaConfig(joint_names=ARM, gripper_joint_states_topic="not checked")
    assert config.gripper_joint is None


def test_build_is_registered_and_does_no_io() -> None:
    assert driver_builder("franka") is build
    driver = build(JOINTS, {"state_timeout_s": 1, "command_interface": "trajectory"})
    assert isinstance(driver, FrankaDriver)
    assert driver.joint_names == JOINTS
    assert driver.config.state_timeout_s == 1.0  # YAML ints are accepted for float fields
    with pytest.raises(DriverError, match="not connected"):
        driver.read()


def test_unknown_parameter_suggests_the_closest_name() -> None:
    with pytest.raises(ValueError, match="Did you mean 'state_timeout_s'"):
        build(JOINTS, {"state_timeout": 0.1})


@pytest.mark.parametrize(
    ("parameters", "needle"),
    [
        ({"state_timeout_s": "fast"}, "must be a float"),
        ({"connect_timeout_s": True}, "must be a float"),
        ({"joint_states_topic": 3}, "must be a str"),
    ],
)
def test_mistyped_parameters_are_named(parameters: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        build(JOINTS, parameters)


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"joint_names": ARM[:6]}, "7 arm joint names"),
        ({"joint_names": (*JOINTS, "extra")}, "7 arm joint names"),
        ({"joint_names": (*ARM[:6], ARM[0])}, "distinct"),
        ({"command_interface": "effort"}, "forward_position, trajectory"),
        ({"joint_states_topic": "franka joint states"}, "joint_states_topic"),
        ({"position_command_topic": ""}, "position_command_topic"),
        ({"gripper_command_topic": "/bad//topic"}, "gripper_command_topic"),
        ({"error_topic": "/err or"}, "error_topic"),
        ({"connect_timeout_s": 0.0}, "connect_timeout_s must be > 0"),
        ({"state_timeout_s": -0.1}, "state_timeout_s must be > 0"),
        ({"trajectory_point_time_s": 0.0}, "trajectory_point_time_s must be > 0"),
        ({"gripper_deadband_m": -0.001}, "gripper_deadband_m"),
        ({"node_name": "1franka"}, "node_name"),
    ],
)
def test_invalid_config_says_what_to_change(changes: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        FrankaConfig(**changes)


def test_error_topic_can_be_disabled() -> None:
    assert FrankaConfig(error_topic="").error_topic == ""


# --------------------------------------------------------------------------------------------
# The stand-in


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"publish_rate_hz": 0.0}, "publish_rate_hz"),
        ({"publish_rate_hz": 2000.0}, "publish_rate_hz"),
        ({"time_constant_s": 0.0}, "time_constant_s"),
        ({"missed_command_limit": 0}, "missed_command_limit"),
        ({"arm_joint_names": ARM[:6]}, "arm_joint_names"),
        ({"gripper_joint_names": ("fr3_finger_joint1",)}, "gripper_joint_names"),
        ({"initial_positions": (0.0,) * 7}, "inside the FR3 limits"),
        ({"initial_finger_position_m": 0.05}, "initial_finger_position_m"),
    ],
)
def test_invalid_emulator_config_says_what_to_change(changes: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        FrankaRos2EmulatorConfig(**changes)


def model(**changes: Any) -> FrankaArmModel:
    return FrankaArmModel(FrankaRos2EmulatorConfig(**changes))


def test_joints_follow_first_order_dynamics_within_the_velocity_limits() -> None:
    arm = model(time_constant_s=0.05)
    start = arm.positions.copy()
    target = start[:7] + 0.001  # small step: first order, far below the velocity limit
    arm.command_arm(target, 0, streaming=False)
    arm.step(0.05)  # one time constant: 63 % of the way
    np.testing.assert_allclose(arm.positions[:7] - start[:7], 0.001 * (1 - np.exp(-1)))
    big = start[:7] + 1.0
    arm.command_arm(big, 0, streaming=False)
    before = arm.positions.copy()
    arm.step(0.01)
    assert np.all(
        np.abs(arm.positions[:7] - before[:7]) <= np.array(FR3_MAX_VELOCITY_RAD_S) * 0.01 + 1e-12
    )
    for _ in range(300):
        arm.step(0.01)
    expected = np.minimum(big, FR3_POSITION_MAX_RAD)  # joint 4 stops at its upper limit
    np.testing.assert_allclose(arm.positions[:7], expected, atol=1e-9)


def test_twenty_missed_cycles_stop_the_arm_until_recovery() -> None:
    arm = model()
    far = arm.positions[:7] + 0.5
    assert arm.command_arm(far, 0, streaming=True)
    arm.step(0.01)
    assert not arm.check_command_stream(19 * MS)
    assert arm.check_command_stream(20 * MS)
    assert arm.error.startswith("communication_constraints_violation")
    held = arm.positions.copy()
    assert not arm.command_arm(far, 21 * MS, streaming=True)  # ignored while in error
    arm.command_finger(0.01)  # the hand is its own device
    arm.step(0.1)
    np.testing.assert_allclose(arm.positions[:7], held[:7])
    assert arm.positions[7] < held[7]
    assert arm.recover().startswith("communication_constraints_violation")
    assert arm.error == "" and arm.recover() == ""
    assert not arm.check_command_stream(1000 * MS)  # disarmed until commands stream again
    assert arm.command_arm(far, 1000 * MS, streaming=True)


def test_trajectory_commands_do_not_arm_the_missed_command_rule() -> None:
    arm = model()
    arm.command_arm(arm.positions[:7], 0, streaming=False)
    assert not arm.check_command_stream(10_000 * MS)
    assert arm.error == ""
