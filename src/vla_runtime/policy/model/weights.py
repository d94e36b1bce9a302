"""Weights on disk: `config.json` (ModelConfig) + `model.safetensors`.

Loading checks every tensor name and shape against the config before touching the model and
fails with a message that lists what is missing, unexpected or mis-shaped.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vla_runtime.policy.model.config import ModelConfig, ModelConfigError
from vla_runtime.policy.model.model import ReferenceModel

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class WeightsError(ValueError):
    """Weights that do not match their config (the message lists the differences)."""


def init_model(
    config: ModelConfig,
    seed: int = 0,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> ReferenceModel:
    """A model with random weights (deterministic for a seed on one device).

    The parameters are created directly on `device` in `dtype`, so a 5 B-parameter model in
    bf16 on a GPU never passes through 20 GB of fp32 host memory.
    """
    generator_state = torch.random.get_rng_state()
    default_dtype = torch.get_default_dtype()
    torch.manual_seed(seed)
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return ReferenceModel(config).eval()
    finally:
        torch.set_default_dtype(default_dtype)
        torch.random.set_rng_state(generator_state)


def save_model(model: ReferenceModel, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    model.config.to_json(directory / CONFIG_FILE)
    tensors = {name: t.detach().contiguous().cpu() for name, t in model.state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})


def load_model(directory: Path) -> ReferenceModel:
    """Build the model of `directory/config.json` and load its safetensors weights."""
    config_path = directory / CONFIG_FILE
    weights_path = directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise WeightsError(
                f"{path} not found; a model directory holds {CONFIG_FILE} and {WEIGHTS_FILE} "
                "(create one with `vla-runtime policy init --config tiny --out DIR`)"
            )
    try:
        config = ModelConfig.from_json(config_path)
        state = load_file(str(weights_path))
    except (ModelConfigError, SafetensorError, OSError) as exc:
        raise WeightsError(f"cannot load {directory}: {exc}") from exc
    model = ReferenceModel(config)
    check_state(model, state, source=str(weights_path))
    model.load_state_dict(state, strict=True)
    return model.eval()


def check_state(model: ReferenceModel, state: dict[str, torch.Tensor], *, source: str) -> None:
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{name}: file {tuple(state[name].shape)}, config {shape}"
        for name, shape in expected.items()
        if name in state and tuple(state[name].shape) != shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {', '.join(missing[:5])}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {', '.join(unexpected[:5])}")
    if mismatched:
        problems.append(f"wrong shape {len(mismatched)}: {'; '.join(mismatched[:5])}")
    if problems:
        raise WeightsError(
            f"{source} does not match its config ({model.config.name}): " + " | ".join(problems)
        )
