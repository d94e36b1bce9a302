"""Which policy backends exist, and how to build one from a `PolicySpec`.

An explicit table of import paths: a backend's heavy imports (torch, onnxruntime) happen only
when it is chosen, so an ONNX deployment never imports torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vla_runtime.drivers.parameters import did_you_mean
from vla_runtime.policy.engine import PolicyOptions
from vla_runtime.policy.interface import Policy
from vla_runtime.policy.stopping import StopRule
from vla_runtime.policy.transforms import EmbodimentTransform, load_transform_config
from vla_runtime.resources import resolve

BACKENDS: dict[str, str] = {
    "torch": "vla_runtime.policy.backends.torch_backend:TorchPolicy",
    "onnx": "vla_runtime.policy.backends.onnx_backend:OnnxPolicy",
}


class PolicyConfigError(ValueError):
    """A policy spec that names something that does not exist."""


@dataclass(frozen=True)
class PolicySpec:
    """Everything needed to build a policy.

    Attributes:
        backend: key of BACKENDS.
        model: a model directory (torch: config.json + model.safetensors; onnx: the export
            directory) or, for torch, a named config with random weights ('tiny').
        embodiment: embodiment name (config/embodiments/<name>.yaml) or a yaml path.
        head: 'flow' or 'recurrent'.
        flow_steps: Euler steps of the flow head.
        threshold, min_iterations, max_iterations: the recurrent head's stopping rule.
        depth: MolmoThink depth reasoning.
        seed: random weights (named configs) and the noise stream.
        device: 'cpu' or 'cuda[:N]'.  dtype: 'float32' | 'bfloat16' | 'float16' (torch).
        threads: intra-op threads (0 = library default).
        per_iteration_context: re-project the context every iteration (benchmark only).
    """

    backend: str = "torch"
    model: str = "tiny"
    embodiment: str = "so100"
    head: str = "flow"
    flow_steps: int = 10
    threshold: float = 1.0e-3
    min_iterations: int = 2
    max_iterations: int = 32
    depth: bool = False
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 0
    per_iteration_context: bool = False

    def options(self) -> PolicyOptions:
        return PolicyOptions(
            head=self.head,
            flow_steps=self.flow_steps,
            stop=StopRule(self.threshold, self.min_iterations, self.max_iterations),
            depth=self.depth,
            seed=self.seed,
        )


class PolicyFactory(Protocol):
    def __call__(self, spec: PolicySpec, transform: EmbodimentTransform) -> Policy: ...


def backend_class(name: str) -> PolicyFactory:
    if name not in BACKENDS:
        raise PolicyConfigError(
            f"unknown policy backend {name!r}{did_you_mean(name, BACKENDS)}; "
            f"known: {', '.join(sorted(BACKENDS))}"
        )
    module_name, _, attribute = BACKENDS[name].partition(":")
    factory: PolicyFactory = getattr(importlib.import_module(module_name), attribute)
    return factory


def shipped_model(model: str) -> str:
    """`models/<name>` (a model shipped with the package) as an absolute path wherever the
    package is installed, when it is not a directory relative to the working directory."""
    path = Path(model)
    if path.is_absolute() or path.is_dir() or path.parts[:1] != ("models",) or len(path.parts) < 2:
        return model
    with contextlib.suppress(FileNotFoundError):
        shipped = resolve("models", str(Path(*path.parts[1:])))
        if shipped.is_dir():
            return str(shipped)
    return model


def create_policy(spec: PolicySpec) -> Policy:
    """Build the policy `spec` describes; errors say what to change."""
    spec = dataclasses.replace(spec, model=shipped_model(spec.model))
    factory = backend_class(spec.backend)
    spec.options()  # validates head / steps / stopping rule before loading weights
    transform = EmbodimentTransform(load_transform_config(spec.embodiment))
    return factory(spec, transform)
