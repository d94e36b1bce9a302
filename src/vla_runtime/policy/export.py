"""Export the reference model's units to ONNX (fp32) for the onnxruntime backend.

Each unit is one `ReferenceModel` method wrapped in a small module and exported with torch's
dynamo exporter (`torch.export` + onnxscript), with dynamic axes where the runtime varies them:
the number of images, the prompt length, the number of new tokens, the cache capacity and the
context length. The graphs compute exactly what `TorchRunner` calls, including the Euler update
of the flow head (`flow_step` returns x + dt * velocity, masked), so `OnnxRunner` only moves
numpy arrays. The directory layout and the input/output names are
`vla_runtime.policy.backends.onnx_backend`'s (`unit_signatures`, `ExportManifest`).

    vla-runtime policy export-onnx --model tiny --out exports/tiny
"""

from __future__ import annotations

import copy
import logging
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn
from torch.export import Dim

from vla_runtime.policy.backends.onnx_backend import (
    CONFIG_FILE,
    MANIFEST_FILE,
    ExportManifest,
    UnitSignature,
    unit_signatures,
)
from vla_runtime.policy.model.model import ReferenceModel, flatten_cache

EXTERNAL_DATA_BYTES = 1 << 30
"""Units with more weight bytes than this keep them in `<file>.data` (protobuf caps a file at
2 GiB; the full-size VLM is ~16 GB in fp32)."""

DynamicShape = dict[int, Any] | None


class OnnxExportError(RuntimeError):
    """A unit could not be exported or failed the ONNX checker (the message names the unit)."""


class _Vision(nn.Module):
    def __init__(self, model: ReferenceModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_images(pixels)


class _Prefill(nn.Module):
    def __init__(self, model: ReferenceModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, tokens: torch.Tensor, visual: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.prefill(tokens, visual)


class _Extend(nn.Module):
    def __init__(self, model: ReferenceModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, tokens: torch.Tensor, past: torch.Tensor, past_len: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.extend(tokens, past, past_len)


class _FlowPrepare(nn.Module):
    def __init__(self, model: ReferenceModel) -> None:
        super().__init__()
        assert model.flow_head is not None
        self.head = model.flow_head

    def forward(
        self, keys: torch.Tensor, values: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.head.prepare(keys, values, valid)


class _FlowStep(nn.Module):
    """One Euler step as `TorchRunner.flow_step`: (x + dt * velocity(x, t)) * action_mask."""

    def __init__(self, model: ReferenceModel) -> None:
        super().__init__()
        assert model.flow_head is not None
        self.head = model.flow_head

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        dt: torch.Tensor,
        ctx_k: torch.Tensor,
        ctx_v: torch.Tensor,
        mask: torch.Tensor,
        action_mask: torch.Tensor,
    ) -> torch.Tensor:
        return (x + dt * self.head.velocity(x, t, ctx_k, ctx_v, mask)) * action_mask


class _RecurrentPrepare(nn.Module):
    def __init__(self, model: ReferenceModel) -> None:
        super().__init__()
        assert model.recurrent_head is not None
        self.head = model.recurrent_head

    def forward(
        self,
        keys: torch.Tensor,
        values: torch.Tensor,
        task_index: torch.Tensor,
        vision_index: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        return self.head.prepare(keys, values, task_index, vision_index)


class _RecurrentIterate(nn.Module):
    def __init__(self, model: ReferenceModel) -> None:
        super().__init__()
        assert model.recurrent_head is not None
        self.head = model.recurrent_head

    def forward(
        self, state: torch.Tensor, *prepared: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head.iterate(state, *prepared)


@dataclass(frozen=True)
class _Unit:
    """What to export for one unit.

    Attributes:
        name: the unit (key of `unit_signatures`).
        module: the wrapper whose forward is the unit.
        args: sample inputs, positional.
        dynamic: `torch.export` dynamic shapes, structured like `args` as `forward` takes them.
        weights: the part of the model the unit holds (sizes its weight file).
    """

    name: str
    module: nn.Module
    args: tuple[torch.Tensor, ...]
    dynamic: tuple[object, ...]
    weights: nn.Module


def export_onnx(model: ReferenceModel, out_dir: Path, *, opset: int | None = None) -> list[Path]:
    """Write the model's units, `config.json` and `manifest.json` to `out_dir`.

    Args:
        model: the reference model (any dtype/device; exported as fp32 on the CPU, from a copy
            when it is not already there).
        out_dir: created if missing; files of an earlier export are overwritten.
        opset: ONNX opset; None = the exporter's default.

    Returns:
        The files written (graphs, external weights, config.json, manifest.json).

    Raises:
        OnnxExportError: a unit failed to export or to pass `onnx.checker`.
    """
    if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in model.parameters()):
        model = copy.deepcopy(model).to(device="cpu", dtype=torch.float32)
    model = model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    signatures = unit_signatures(model.config)
    written: list[Path] = []
    opsets: set[int] = set()
    started = time.monotonic()
    with torch.no_grad():
        units = _units(model)
    for unit in units:
        signature = signatures[unit.name]
        began = time.monotonic()
        files = _export_unit(unit, signature, out_dir, opset)
        path = files[0]
        opsets.add(_opset(path))
        written.extend(files)
        _progress(f"{path.name}: {time.monotonic() - began:.1f} s")
    config_path = out_dir / CONFIG_FILE
    model.config.to_json(config_path)
    head = model.recurrent_head
    manifest = ExportManifest(
        model=model.config.name,
        opset=max(opsets),
        torch_version=torch.__version__,
        onnx_version=onnx.__version__,
        initial_state_std=None if head is None else head.initial_state_std(),
        units=signatures,
        files=tuple(p.name for p in written),
    )
    manifest_path = out_dir / MANIFEST_FILE
    manifest.write(manifest_path)
    _progress(f"exported {model.config.name!r} to {out_dir} in {time.monotonic() - started:.1f} s")
    return [*written, config_path, manifest_path]


def _progress(line: str) -> None:
    print(f"export-onnx: {line}", file=sys.stderr, flush=True)


def _units(model: ReferenceModel) -> list[_Unit]:
    """The units with sample inputs taken from a real prompt (2 images, depth reasoning)."""
    cfg = model.config
    generator = torch.Generator().manual_seed(0)
    size = cfg.vision.image_size
    pixels = torch.rand(2, 3, size, size, generator=generator) * 2.0 - 1.0
    tokens = torch.from_numpy(
        model.tokenizer.prompt(
            images=2,
            tokens_per_image=cfg.vision.tokens_per_image,
            task="pick up the cube",
            setup="sample",
            control="joint positions",
            state_bins=[cfg.state_bins // 2] * 6,
            depth=True,
        )
    )[None]
    visual = model.encode_images(pixels)
    _, kv, hidden = model.prefill(tokens, visual)
    length = tokens.shape[1]
    # Sample sizes must differ from every other dimension and from 1: torch.export would
    # otherwise specialise the axis.
    capacity = length + cfg.depth_grid**2 + 4
    past = torch.zeros(*kv.shape[:4], capacity, kv.shape[5])
    past[..., :length, :] = kv
    new_tokens = torch.full((1, 3), model.tokenizer.depth_token(0), dtype=torch.int64)

    images, prompt = Dim("images", min=1), Dim("prompt", min=2)
    new, cache = Dim("new_tokens", min=1), Dim("capacity", min=2)
    context = Dim("context", min=2)
    extend_args = (new_tokens, past, torch.tensor(length))
    units = [
        _Unit("vision", _Vision(model), (pixels,), ({0: images},), model.vision),
        _Unit("prefill", _Prefill(model), (tokens, visual), ({1: prompt}, {0: images}), model.vlm),
        _Unit("extend", _Extend(model), extend_args, ({1: new}, {4: cache}, None), model.vlm),
    ]
    keys, values = flatten_cache(kv)
    valid = torch.ones(1, length, dtype=torch.bool)
    vision_mask = tokens == model.tokenizer.patch_id
    by_context: tuple[DynamicShape, ...] = ({2: context}, {2: context}, {1: context})
    if model.flow_head is not None:
        head = model.flow_head
        ctx_k, ctx_v, ctx_mask = head.prepare(keys, values, valid)
        x = torch.randn(1, cfg.max_horizon, cfg.action_width, generator=generator)
        action_mask = torch.ones(cfg.action_width)
        times, dt = torch.tensor([0.3]), torch.tensor(0.1)
        step_args = (x, times, dt, ctx_k, ctx_v, ctx_mask, action_mask)
        step_dynamic = (None, None, None, {2: context}, {2: context}, {3: context}, None)
        units += [
            _Unit("flow_prepare", _FlowPrepare(model), (keys, values, valid), by_context, head),
            _Unit("flow_step", _FlowStep(model), step_args, step_dynamic, head),
        ]
    if model.recurrent_head is not None:
        recurrent = model.recurrent_head
        sources = (hidden, hidden) if recurrent.config.context == "hidden" else (keys, values)
        task_index = torch.nonzero(~vision_mask[0]).flatten()
        vision_index = torch.nonzero(vision_mask[0]).flatten()
        prepare_args = (*sources, task_index, vision_index)
        prepared = recurrent.prepare(*prepare_args)
        head_cfg = recurrent.config
        state = torch.randn(1, head_cfg.queries, head_cfg.width, generator=generator)
        # prelude_out is fixed-size; per-head K/V (1, heads, n, dim) of each key set.
        task_tokens, vision_tokens = Dim("task_tokens", min=2), Dim("vision_tokens", min=2)
        prepared_dynamic: list[DynamicShape] = [None]
        prepared_dynamic += [
            {2: task_tokens},
            {2: task_tokens},
            {2: vision_tokens},
            {2: vision_tokens},
        ] * ((len(prepared) - 1) // 4)
        prepare_dynamic = (*by_context[:2], {0: task_tokens}, {0: vision_tokens})
        # forward(state, *prepared): the varargs' shapes nest as one tuple.
        iterate_dynamic = (None, tuple(prepared_dynamic))
        units += [
            _Unit(
                "recurrent_prepare",
                _RecurrentPrepare(model),
                prepare_args,
                prepare_dynamic,
                recurrent,
            ),
            _Unit(
                "recurrent_iterate",
                _RecurrentIterate(model),
                (state, *prepared),
                iterate_dynamic,
                recurrent,
            ),
        ]
    return units


def _export_unit(
    unit: _Unit, signature: UnitSignature, out_dir: Path, opset: int | None
) -> list[Path]:
    path = out_dir / signature.file
    data_path = path.with_name(path.name + ".data")
    data_path.unlink(missing_ok=True)
    weight_bytes = sum(p.numel() * p.element_size() for p in unit.weights.parameters())
    # Noise of the exporter: optional torchvision ops, shared axis names, deprecations inside
    # torch itself.
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*axis name.*")
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(
                unit.module.eval(),
                unit.args,
                str(path),
                input_names=list(signature.inputs),
                output_names=list(signature.outputs),
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=unit.dynamic,
                external_data=weight_bytes > EXTERNAL_DATA_BYTES,
                verbose=False,
            )
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # torch.export, onnxscript and onnx raise many unrelated types
        raise OnnxExportError(f"exporting {unit.name} to {path} failed: {exc}") from exc
    finally:
        registration.setLevel(level)
    return [path, data_path] if data_path.is_file() else [path]


def _opset(path: Path) -> int:
    proto = onnx.load(str(path), load_external_data=False)
    return next(int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx"))
