"""The reference model's ONNX export on onnxruntime: numpy in, numpy out, no torch model.

An export directory (written by `vla_runtime.policy.export.export_onnx`, i.e.
`vla-runtime policy export-onnx --model ... --out DIR`) holds one fp32 graph per export unit
of `ReferenceModel`, `config.json` (the `ModelConfig`) and `manifest.json` (this module's
`ExportManifest`: files, opset, versions, the units' input/output names). This module owns that
format; the exporter writes what `ExportManifest` and `unit_signatures` describe.

`OnnxRunner` mirrors `TorchRunner` step for step (same KV buffer capacity, same vision mask,
same hidden-state buffer for context='hidden' heads), so `ModelPolicy` drives both identically.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import (
    Fail,
    InvalidArgument,
    InvalidGraph,
    InvalidProtobuf,
    NoSuchFile,
    RuntimeException,
)

from vla_runtime.policy.engine import ModelPolicy
from vla_runtime.policy.model.config import ModelConfig, ModelConfigError
from vla_runtime.policy.model.tokenizer import PromptTokenizer
from vla_runtime.policy.registry import PolicyConfigError, PolicySpec
from vla_runtime.policy.transforms import EmbodimentTransform

EXPORT_FORMAT = 1
"""Version of the export directory layout; bumped when units or their signatures change."""
CONFIG_FILE = "config.json"
MANIFEST_FILE = "manifest.json"
EXPORT_COMMAND = "vla-runtime policy export-onnx --model MODEL --out DIR"

VLM_UNITS = ("vision", "prefill", "extend")
HEAD_UNITS: dict[str, tuple[str, str]] = {
    "flow": ("flow_prepare", "flow_step"),
    "recurrent": ("recurrent_prepare", "recurrent_iterate"),
}

# onnxruntime's errors derive from Exception only; these are the ones a run or a load raises.
_RUN_ERRORS = (Fail, InvalidArgument, RuntimeException)
_LOAD_ERRORS = (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, NoSuchFile, RuntimeException)

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class UnitSignature:
    """One exported graph: its file and the names of its inputs and outputs, in order."""

    file: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class ExportManifest:
    """`manifest.json` of an export directory.

    Attributes:
        model: the model config's name.
        opset: ONNX opset of the graphs (default domain).
        torch_version, onnx_version: the versions that exported it.
        initial_state_std: the recurrent head's initial-state std, None without that head.
        units: unit name -> signature; only the units of the model's heads.
        files: every file of the export besides config.json and manifest.json (graphs and
            external weight files).
        dtype: the graphs' float type.
        format: EXPORT_FORMAT of the exporter.
    """

    model: str
    opset: int
    torch_version: str
    onnx_version: str
    initial_state_std: float | None
    units: Mapping[str, UnitSignature]
    files: tuple[str, ...]
    dtype: str = "float32"
    format: int = EXPORT_FORMAT

    def to_dict(self) -> dict[str, object]:
        return {
            "format": self.format,
            "model": self.model,
            "dtype": self.dtype,
            "opset": self.opset,
            "torch_version": self.torch_version,
            "onnx_version": self.onnx_version,
            "initial_state_std": self.initial_state_std,
            "files": list(self.files),
            "units": {
                name: {
                    "file": unit.file,
                    "inputs": list(unit.inputs),
                    "outputs": list(unit.outputs),
                }
                for name, unit in self.units.items()
            },
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> ExportManifest:
        try:
            data = json.loads(path.read_text())
            units = {
                str(name): UnitSignature(
                    file=str(unit["file"]),
                    inputs=tuple(str(n) for n in unit["inputs"]),
                    outputs=tuple(str(n) for n in unit["outputs"]),
                )
                for name, unit in data["units"].items()
            }
            std = data["initial_state_std"]
            return cls(
                model=str(data["model"]),
                opset=int(data["opset"]),
                torch_version=str(data["torch_version"]),
                onnx_version=str(data["onnx_version"]),
                initial_state_std=None if std is None else float(std),
                units=units,
                files=tuple(str(f) for f in data["files"]),
                dtype=str(data["dtype"]),
                format=int(data["format"]),
            )
        except (
            OSError,
            json.JSONDecodeError,
            KeyError,
            TypeError,
            ValueError,
            AttributeError,
        ) as exc:
            raise PolicyConfigError(
                f"cannot read the ONNX export manifest {path}: {exc!r}; re-export with "
                f"`{EXPORT_COMMAND}`"
            ) from exc


def recurrent_prepared_names(config: ModelConfig) -> tuple[str, ...]:
    """Names of `RecurrentHead.prepare`'s flat tuple: prelude output, per-layer K/V."""
    head = config.recurrent_head
    if head is None:
        return ()
    names = ["prelude_out"]
    parts = (("core", len(head.core_layers)), ("coda", len(head.coda_layers)))
    for part, count in parts:
        for index in range(count):
            names += [
                f"{part}{index}_{kind}" for kind in ("task_k", "task_v", "vision_k", "vision_v")
            ]
    return tuple(names)


def unit_signatures(config: ModelConfig) -> dict[str, UnitSignature]:
    """The units an export of `config` holds, with their input and output names.

    Shapes (L layers, T context tokens, C cache capacity, n new tokens, N images):
      vision: pixels (N, 3, S, S) -> visual (N, P, W)
      prefill: tokens (1, T) int64, visual -> logits (1, V), kv (L, 2, 1, kvh, T, hd),
        hidden (L, 1, T, W)
      extend: tokens (1, n) int64, past (L, 2, 1, kvh, C, hd), past_len () int64 -> logits,
        new_kv (L, 2, 1, kvh, n, hd), hidden (L, 1, n, W)
      flow_prepare: keys, values (L, 1, T, kv_dim), valid (1, T) bool -> ctx_k, ctx_v, mask
      flow_step: x (1, H, A), t (1,), dt (), ctx_k, ctx_v, mask, action_mask (A,) -> x_next
        = (x + dt * velocity) * action_mask
      recurrent_prepare: keys, values (L, 1, T, dim), task_index, vision_index (n,) -> prepared
      recurrent_iterate: state (1, Q, width), *prepared -> next_state, chunk (1, Q, A)
    """
    units = {
        "vision": UnitSignature("vision.onnx", ("pixels",), ("visual",)),
        "prefill": UnitSignature("prefill.onnx", ("tokens", "visual"), ("logits", "kv", "hidden")),
        "extend": UnitSignature(
            "extend.onnx", ("tokens", "past", "past_len"), ("logits", "new_kv", "hidden")
        ),
    }
    if config.flow_head is not None:
        units["flow_prepare"] = UnitSignature(
            "flow_prepare.onnx", ("keys", "values", "valid"), ("ctx_k", "ctx_v", "mask")
        )
        units["flow_step"] = UnitSignature(
            "flow_step.onnx",
            ("x", "t", "dt", "ctx_k", "ctx_v", "mask", "action_mask"),
            ("x_next",),
        )
    if config.recurrent_head is not None:
        prepared = recurrent_prepared_names(config)
        units["recurrent_prepare"] = UnitSignature(
            "recurrent_prepare.onnx", ("keys", "values", "task_index", "vision_index"), prepared
        )
        units["recurrent_iterate"] = UnitSignature(
            "recurrent_iterate.onnx", ("state", *prepared), ("next_state", "chunk")
        )
    return units


def execution_providers(device: str) -> list[str | tuple[str, dict[str, str]]]:
    """onnxruntime providers for 'cpu' or 'cuda[:N]' (CUDA with CPU fallback)."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if match is None:
        raise PolicyConfigError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise PolicyConfigError(
            f"device {device!r}: this onnxruntime has no CUDAExecutionProvider (it has: "
            f"{', '.join(available)}); install onnxruntime-gpu or use --device cpu"
        )
    return [
        ("CUDAExecutionProvider", {"device_id": match.group(1) or "0"}),
        "CPUExecutionProvider",
    ]


def session_options(threads: int = 0) -> ort.SessionOptions:
    """Sequential execution, all graph optimisations, `threads` intra-op threads (0 = ORT's)."""
    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
    # One graph per call, each small next to its threads' work: no inter-op parallelism.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Each unit is its own session with its own pool; a pool whose threads spin after its run
    # steals the cores from the next unit's pool (tiny on 2 threads: 61 ms with spinning,
    # 25 ms without). The units run back to back, so nothing is lost by sleeping.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def read_export(directory: Path) -> tuple[ModelConfig, ExportManifest]:
    """The config and manifest of an export directory; errors name what is missing."""
    hint = f"create it with `{EXPORT_COMMAND}`"
    if not directory.is_dir():
        raise PolicyConfigError(f"ONNX export directory {str(directory)!r} not found; {hint}")
    for name in (CONFIG_FILE, MANIFEST_FILE):
        if not (directory / name).is_file():
            raise PolicyConfigError(
                f"{directory / name} not found; {directory} is not a complete ONNX export ({hint})"
            )
    manifest = ExportManifest.read(directory / MANIFEST_FILE)
    if manifest.format != EXPORT_FORMAT:
        raise PolicyConfigError(
            f"{directory} is export format {manifest.format}, this runtime reads "
            f"{EXPORT_FORMAT}; re-export with `{EXPORT_COMMAND}`"
        )
    try:
        config = ModelConfig.from_json(directory / CONFIG_FILE)
    except ModelConfigError as exc:
        raise PolicyConfigError(f"{directory / CONFIG_FILE}: {exc}") from exc
    return config, manifest


class OnnxRunner:
    """`ModelRunner` over an export directory; holds the current query's numpy KV buffer."""

    def __init__(
        self,
        directory: Path,
        *,
        device: str = "cpu",
        threads: int = 0,
        heads: Sequence[str] | None = None,
    ) -> None:
        """Open the sessions of the VLM units and of `heads` (None = every head exported).

        Raises:
            PolicyConfigError: missing or unreadable files, an unknown device, no CUDA
                provider; the message names the file or setting and what to do.
        """
        config, manifest = read_export(directory)
        self.config: ModelConfig = config
        self.manifest = manifest
        self.directory = directory
        self.device = device
        providers = execution_providers(device)
        options = session_options(threads)
        # A head the model lacks is skipped here; ModelPolicy names the heads it has.
        requested = config.heads if heads is None else tuple(heads)
        wanted = [head for head in requested if head in config.heads]
        self._signatures = unit_signatures(config)
        names = [*VLM_UNITS, *(unit for head in wanted for unit in HEAD_UNITS[head])]
        self._sessions: dict[str, ort.InferenceSession] = {
            name: self._open(self._signatures[name], options, providers) for name in names
        }
        self._patch_id = PromptTokenizer(config.state_bins, config.depth_codes).patch_id
        self._mask = np.ones(config.action_width, np.float32)
        self._kv: npt.NDArray[np.float32] = np.empty(0, np.float32)
        self._hidden: npt.NDArray[np.float32] = np.empty(0, np.float32)
        self._tokens: list[int] = []
        head = config.recurrent_head
        self._keep_hidden = head is not None and head.context == "hidden"

    def _open(
        self,
        signature: UnitSignature,
        options: ort.SessionOptions,
        providers: list[str | tuple[str, dict[str, str]]],
    ) -> ort.InferenceSession:
        path = self.directory / signature.file
        if not path.is_file():
            raise PolicyConfigError(
                f"{path} not found; the ONNX export in {self.directory} is incomplete (re-export "
                f"with `{EXPORT_COMMAND}`)"
            )
        try:
            session = ort.InferenceSession(str(path), options, providers=providers)
        except _LOAD_ERRORS as exc:
            raise PolicyConfigError(f"cannot load {path}: {exc}") from exc
        inputs = tuple(node.name for node in session.get_inputs())
        outputs = tuple(node.name for node in session.get_outputs())
        if (inputs, outputs) != (signature.inputs, signature.outputs):
            raise PolicyConfigError(
                f"{path} has inputs {list(inputs)} and outputs {list(outputs)}; this runtime "
                f"expects {list(signature.inputs)} -> {list(signature.outputs)} (re-export with "
                f"`{EXPORT_COMMAND}`)"
            )
        return session

    @property
    def length(self) -> int:
        return len(self._tokens)

    @property
    def providers(self) -> list[str]:
        """Providers the sessions actually run on (the VLM's session's list)."""
        return list(self._sessions["prefill"].get_providers())

    def _run(self, unit: str, feeds: Mapping[str, Array]) -> list[Array]:
        session = self._sessions.get(unit)
        if session is None:
            raise RuntimeError(f"{unit}.onnx is not loaded: this runner was opened without it")
        try:
            outputs: list[Array] = session.run(None, dict(feeds))
        except _RUN_ERRORS as exc:
            raise RuntimeError(f"{unit}.onnx: {exc}") from exc
        return outputs

    def set_action_mask(self, mask: npt.NDArray[np.bool_]) -> None:
        self._mask = np.asarray(mask, np.float32)

    def to_device(self, array: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.ascontiguousarray(array, np.float32)

    def to_numpy(self, value: Any) -> npt.NDArray[np.float32]:
        return np.asarray(value, np.float32)

    def synchronize(self) -> None:
        """Nothing to wait for: `InferenceSession.run` returns host arrays."""

    def encode_images(self, pixels: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return self._run("vision", {"pixels": self.to_device(pixels)})[0]

    def prefill(self, tokens: npt.NDArray[np.int64], visual: Any) -> npt.NDArray[np.float32]:
        ids = np.ascontiguousarray(tokens, np.int64)[None]
        logits, kv, hidden = self._run("prefill", {"tokens": ids, "visual": visual})
        size = tokens.size
        # Room for the depth grid and the 4 markers around it, as TorchRunner.
        capacity = size + self.config.depth_grid**2 + 4
        layers, _, batch, heads, _, dim = kv.shape
        self._kv = np.zeros((layers, 2, batch, heads, capacity, dim), np.float32)
        self._kv[..., :size, :] = kv
        if self._keep_hidden:
            self._hidden = np.zeros((layers, batch, capacity, self.config.vlm.width), np.float32)
            self._hidden[:, :, :size] = hidden
        self._tokens = tokens.tolist()
        return np.asarray(logits[0], np.float32)

    def extend(self, tokens: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        start, n = self.length, tokens.size
        if start + n > self._kv.shape[4]:
            raise RuntimeError(f"KV cache full: {start} + {n} > {self._kv.shape[4]} tokens")
        feeds: dict[str, Array] = {
            "tokens": np.ascontiguousarray(tokens, np.int64)[None],
            "past": self._kv,
            "past_len": np.asarray(start, np.int64),
        }
        logits, new_kv, hidden = self._run("extend", feeds)
        self._kv[..., start : start + n, :] = new_kv
        if self._keep_hidden:
            self._hidden[:, :, start : start + n] = hidden
        self._tokens.extend(tokens.tolist())
        return np.asarray(logits[0], np.float32)

    def context(self) -> tuple[Array, Array, Array, Array]:
        """Per-layer keys, values (L, 1, T, dim), valid and vision masks (1, T)."""
        n = self.length
        layers, _, batch, heads, _, dim = self._kv.shape
        flat = (
            self._kv[..., :n, :]
            .transpose(0, 1, 2, 4, 3, 5)
            .reshape(layers, 2, batch, n, heads * dim)
        )
        valid = np.ones((1, n), np.bool_)
        vision = (np.asarray(self._tokens, np.int64) == self._patch_id)[None]
        keys, values = np.ascontiguousarray(flat[:, 0]), np.ascontiguousarray(flat[:, 1])
        return keys, values, valid, vision

    def _recurrent_sources(self) -> tuple[Array, Array, Array, Array]:
        """Context (cached K/V, or hidden states) and the non-vision / vision positions."""
        keys, values, _, vision = self.context()
        task_index = np.flatnonzero(~vision[0]).astype(np.int64)
        vision_index = np.flatnonzero(vision[0]).astype(np.int64)
        if self._keep_hidden:
            hidden = np.ascontiguousarray(self._hidden[:, :, : self.length])
            return hidden, hidden, task_index, vision_index
        return keys, values, task_index, vision_index

    def flow_prepare(self) -> tuple[Array, ...]:
        keys, values, valid, _ = self.context()
        return tuple(self._run("flow_prepare", {"keys": keys, "values": values, "valid": valid}))

    def flow_step(self, prepared: Any, x: Any, t: float, dt: float) -> npt.NDArray[np.float32]:
        ctx_k, ctx_v, mask = prepared
        feeds: dict[str, Array] = {
            "x": x,
            "t": np.full((x.shape[0],), t, np.float32),
            "dt": np.asarray(dt, np.float32),
            "ctx_k": ctx_k,
            "ctx_v": ctx_v,
            "mask": mask,
            "action_mask": self._mask,
        }
        return self._run("flow_step", feeds)[0]

    def recurrent_prepare(self) -> tuple[Array, ...]:
        keys, values, task_index, vision_index = self._recurrent_sources()
        feeds = {
            "keys": keys,
            "values": values,
            "task_index": task_index,
            "vision_index": vision_index,
        }
        return tuple(self._run("recurrent_prepare", feeds))

    def recurrent_iterate(
        self, prepared: Any, state: Any
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        names = self._signatures["recurrent_iterate"].inputs
        feeds = dict(zip(names, (state, *prepared), strict=True))
        state, chunk = self._run("recurrent_iterate", feeds)
        return state, np.asarray(chunk[0], np.float32)


class OnnxPolicy(ModelPolicy):
    """The reference model's ONNX export on onnxruntime (fp32; CPU, or CUDA with CPU fallback)."""

    def __init__(self, spec: PolicySpec, transform: EmbodimentTransform) -> None:
        if spec.dtype != "float32":
            raise PolicyConfigError(
                f"the ONNX export is float32; dtype {spec.dtype!r} is a torch-backend option"
            )
        if spec.per_iteration_context:
            raise PolicyConfigError(
                "per_iteration_context is a torch-backend benchmark option; the ONNX export "
                "projects the context once per query"
            )
        options = spec.options()  # validates head, steps and stopping rule before loading
        runner = OnnxRunner(
            Path(spec.model), device=spec.device, threads=spec.threads, heads=(options.head,)
        )
        std = runner.manifest.initial_state_std
        super().__init__(runner, transform, options, initial_state_std=std or 0.0)
