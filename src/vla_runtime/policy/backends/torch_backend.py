"""The reference model on torch (CPU here; CUDA with bf16 where a GPU is present)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from vla_runtime.policy.engine import ModelPolicy
from vla_runtime.policy.model.config import PRESETS, ModelConfig, preset
from vla_runtime.policy.model.model import ReferenceModel, flatten_cache
from vla_runtime.policy.model.weights import WeightsError, init_model, load_model
from vla_runtime.policy.registry import PolicySpec
from vla_runtime.policy.transforms import EmbodimentTransform

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TorchRunner:
    """`ModelRunner` over a `ReferenceModel`; holds the current query's KV cache buffer."""

    def __init__(
        self, model: ReferenceModel, device: str = "cpu", dtype: torch.dtype = torch.float32
    ) -> None:
        self.model = model.to(device=device, dtype=dtype).eval()
        self.config: ModelConfig = model.config
        self.device = torch.device(device)
        self.dtype = dtype
        self._mask = torch.ones(self.config.action_width, device=self.device, dtype=dtype)
        self._kv = torch.empty(0)
        self._hidden = torch.empty(0)
        self._tokens: list[int] = []
        head = self.config.recurrent_head
        self._keep_hidden = head is not None and head.context == "hidden"

    @property
    def length(self) -> int:
        return len(self._tokens)

    def set_action_mask(self, mask: npt.NDArray[np.bool_]) -> None:
        self._mask = torch.as_tensor(mask, device=self.device).to(self.dtype)

    def to_device(self, array: npt.NDArray[np.float32]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device, self.dtype)

    def to_numpy(self, value: Any) -> npt.NDArray[np.float32]:
        return value.detach().float().cpu().numpy()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def encode_images(self, pixels: npt.NDArray[np.float32]) -> torch.Tensor:
        return self.model.encode_images(self.to_device(pixels))

    @torch.inference_mode()
    def prefill(self, tokens: npt.NDArray[np.int64], visual: Any) -> npt.NDArray[np.float32]:
        ids = torch.from_numpy(tokens)[None].to(self.device)
        logits, kv, hidden = self.model.prefill(ids, visual)
        cfg = self.config
        size = tokens.size
        capacity = size + cfg.depth_grid**2 + 4
        layers, _, batch, heads, _, dim = kv.shape
        self._kv = torch.zeros(
            layers, 2, batch, heads, capacity, dim, device=self.device, dtype=self.dtype
        )
        self._kv[..., :size, :] = kv
        if self._keep_hidden:
            self._hidden = torch.zeros(
                layers, batch, capacity, cfg.vlm.width, device=self.device, dtype=self.dtype
            )
            self._hidden[:, :, :size] = hidden
        self._tokens = tokens.tolist()
        return self.to_numpy(logits[0])

    @torch.inference_mode()
    def extend(self, tokens: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        start, n = self.length, tokens.size
        if start + n > self._kv.shape[4]:
            raise RuntimeError(f"KV cache full: {start} + {n} > {self._kv.shape[4]} tokens")
        ids = torch.from_numpy(tokens)[None].to(self.device)
        past_len = torch.tensor(start, device=self.device)
        logits, new_kv, hidden = self.model.extend(ids, self._kv, past_len)
        self._kv[..., start : start + n, :] = new_kv
        if self._keep_hidden:
            self._hidden[:, :, start : start + n] = hidden
        self._tokens.extend(tokens.tolist())
        return self.to_numpy(logits[0])

    def context(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-layer keys, values (L, 1, T, dim), valid and vision masks (1, T)."""
        n = self.length
        keys, values = flatten_cache(self._kv[..., :n, :])
        valid = torch.ones(1, n, dtype=torch.bool, device=self.device)
        ids = torch.tensor(self._tokens, device=self.device)[None]
        vision = ids == self.model.tokenizer.patch_id
        return keys, values, valid, vision

    def _recurrent_sources(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Context (cached K/V, or hidden states) and the non-vision / vision positions."""
        keys, values, _, vision = self.context()
        task_index = torch.nonzero(~vision[0]).flatten()
        vision_index = torch.nonzero(vision[0]).flatten()
        if self._keep_hidden:
            hidden = self._hidden[:, :, : self.length]
            return hidden, hidden, task_index, vision_index
        return keys, values, task_index, vision_index

    @torch.inference_mode()
    def flow_prepare(self) -> tuple[torch.Tensor, ...]:
        head = self.model.flow_head
        assert head is not None
        keys, values, valid, _ = self.context()
        return head.prepare(keys, values, valid)

    @torch.inference_mode()
    def flow_step(self, prepared: Any, x: Any, t: float, dt: float) -> torch.Tensor:
        head = self.model.flow_head
        assert head is not None
        times = torch.full((x.shape[0],), t, device=self.device, dtype=self.dtype)
        return (x + dt * head.velocity(x, times, *prepared)) * self._mask

    @torch.inference_mode()
    def recurrent_prepare(self) -> tuple[torch.Tensor, ...]:
        head = self.model.recurrent_head
        assert head is not None
        return head.prepare(*self._recurrent_sources())

    @torch.inference_mode()
    def recurrent_iterate(
        self, prepared: Any, state: Any
    ) -> tuple[torch.Tensor, npt.NDArray[np.float32]]:
        head = self.model.recurrent_head
        assert head is not None
        state, chunk = head.iterate(state, *prepared)
        return state, self.to_numpy(chunk[0])


class PerIterationContextRunner(TorchRunner):
    """Re-projects the fixed context in every iteration, as upstream RD-VLA does (benchmark)."""

    @torch.inference_mode()
    def recurrent_prepare(self) -> tuple[torch.Tensor, ...]:
        head = self.model.recurrent_head
        assert head is not None
        sources = self._recurrent_sources()
        prelude_out = head.prelude_output(*sources)
        return (prelude_out, *sources)

    @torch.inference_mode()
    def recurrent_iterate(
        self, prepared: Any, state: Any
    ) -> tuple[torch.Tensor, npt.NDArray[np.float32]]:
        head = self.model.recurrent_head
        assert head is not None
        state, chunk = head.iterate_uncached(state, *prepared)
        return state, self.to_numpy(chunk[0])


def build_model(spec: PolicySpec) -> ReferenceModel:
    """Random weights of a named config (`tiny`), else the weights in directory `spec.model`."""
    if spec.model in PRESETS:
        return init_model(
            preset(spec.model), seed=spec.seed, device=spec.device, dtype=DTYPES[spec.dtype]
        )
    if not Path(spec.model).is_dir():
        raise WeightsError(
            f"model {spec.model!r} is neither a model directory nor a named config "
            f"({', '.join(sorted(PRESETS))})"
        )
    return load_model(Path(spec.model))


class TorchPolicy(ModelPolicy):
    """The reference model in torch."""

    def __init__(self, spec: PolicySpec, transform: EmbodimentTransform) -> None:
        if spec.threads > 0:
            torch.set_num_threads(spec.threads)
        if spec.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {spec.dtype!r}")
        model = build_model(spec)
        runner_type = PerIterationContextRunner if spec.per_iteration_context else TorchRunner
        runner = runner_type(model, spec.device, DTYPES[spec.dtype])
        std = model.recurrent_head.initial_state_std() if model.recurrent_head else 0.0
        super().__init__(runner, transform, spec.options(), initial_state_std=std)
