"""The shipped policy_node parameter files name real parameters and build a policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from vla_runtime.nodes.policy_node import PARAMETERS
from vla_runtime.policy.registry import PolicySpec, create_policy, shipped_model
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


def test_shipped_models_resolve_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # not the checkout: `models/tiny_so100` is not relative here
    model = Path(shipped_model("models/tiny_so100"))
    assert model.is_absolute() and (model / "model.safetensors").is_file()
    assert shipped_model("tiny") == "tiny"  # named configs stay names
    assert shipped_model("models/none") == "models/none"  # the loader says it is missing
    (tmp_path / "models" / "mine").mkdir(parents=True)
    assert shipped_model("models/mine") == "models/mine"  # the working directory's own first
