"""The shipped policy_node parameter files name real parameters and build a policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from vla_runtime.nodes.policy_node import PARAMETERS
from vla_runtime.policy.registry import PolicySpec, create_policy
from vla_runtime.ros.zenoh.arguments import load_params_file

CONFIGS = sorted((Path(__file__).parents[2] / "config" / "policies").glob("*.yaml"))


def test_there_are_policy_configs() -> None:
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_policy_config_builds(path: Path) -> None:
    parameters = load_params_file(str(path), "/policy")
    unknown = set(parameters) - set(PARAMETERS)
    assert not unknown, f"{path.name}: not policy_node parameters: {sorted(unknown)}"
    fields = PolicySpec.__dataclass_fields__
    spec = PolicySpec(
        **{key: value for key, value in parameters.items() if key in fields},
        depth=bool(parameters.get("scene_topic")),
    )
    policy = create_policy(spec)
    assert policy.joint_names and policy.camera_names
    assert policy.uses_depth == bool(parameters.get("scene_topic"))
