"""The reference model: vision encoder, VLM with KV cache, and the action heads.

`ReferenceModel` only assembles the parts and exposes the pieces a runner calls (each of them is
also an ONNX export unit): `encode_images`, `prefill`, `extend`, and the heads' `prepare` and
step functions. The inference loops (depth schedule, Euler integration, adaptive stopping) live
in `vla_runtime.policy.engine`, shared by all backends.
"""

from __future__ import annotations

import torch
from torch import nn

from vla_runtime.policy.model.config import ModelConfig
from vla_runtime.policy.model.flow_head import FlowHead
from vla_runtime.policy.model.recurrent_head import RecurrentHead
from vla_runtime.policy.model.tokenizer import PromptTokenizer
from vla_runtime.policy.model.vision import VisionEncoder
from vla_runtime.policy.model.vlm import VLM


class ReferenceModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = PromptTokenizer(config.state_bins, config.depth_codes)
        if self.tokenizer.size > config.vlm.vocab_size:
            raise ValueError(
                f"vlm.vocab_size {config.vlm.vocab_size} < {self.tokenizer.size} prompt tokens"
            )
        self.vision = VisionEncoder(config.vision, config.vlm.width)
        self.vlm = VLM(config.vlm)
        self.flow_head: FlowHead | None = None
        self.recurrent_head: RecurrentHead | None = None
        if config.flow_head is not None:
            self.flow_head = FlowHead(
                config.flow_head,
                vlm_layers=config.vlm.layers,
                kv_dim=config.vlm.kv_dim,
                action_width=config.action_width,
            )
        if config.recurrent_head is not None:
            dim = config.vlm.kv_dim if config.recurrent_head.context == "kv" else config.vlm.width
            self.recurrent_head = RecurrentHead(
                config.recurrent_head,
                key_dim=dim,
                value_dim=dim,
                action_width=config.action_width,
            )

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) in [-1, 1] -> (N, tokens_per_image, width)."""
        return self.vision(pixels)

    def prefill(
        self, tokens: torch.Tensor, visual: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prompt tokens (1, S) with patch placeholders, visual tokens (N, P, W).

        Returns the last position's logits, the cache (L, 2, 1, kv_heads, S, head_dim) and the
        layers' hidden states (L, 1, S, W).
        """
        embeds = self.vlm.embed(tokens)
        is_patch = tokens == self.tokenizer.patch_id
        flat = visual.reshape(-1, visual.shape[-1])
        index = (torch.cumsum(is_patch.to(torch.int64), dim=1) - 1).clamp(min=0)
        index = index.clamp(max=flat.shape[0] - 1)
        embeds = torch.where(is_patch[..., None], flat[index].to(embeds.dtype), embeds)
        return self.vlm.prefill(embeds)

    def extend(
        self, tokens: torch.Tensor, past: torch.Tensor, past_len: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.vlm.extend(tokens, past, past_len)


def flatten_cache(kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, 2, B, kv_heads, T, head_dim) -> keys, values (L, B, T, kv_heads*head_dim)."""
    layers, _, batch, heads, tokens, dim = kv.shape
    flat = kv.permute(0, 1, 2, 4, 3, 5).reshape(layers, 2, batch, tokens, heads * dim)
    return flat[:, 0], flat[:, 1]


def parameter_counts(model: ReferenceModel) -> dict[str, int]:
    """Parameters per part (the VLM's tied embedding counted once)."""

    def count(module: nn.Module | None) -> int:
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    vision = model.vision
    counts = {
        "vision": count(vision) - count(vision.pool) - count(vision.connector),
        "connector": count(vision.pool) + count(vision.connector),
        "vlm": count(model.vlm),
        "flow_head": count(model.flow_head),
        "recurrent_head": count(model.recurrent_head),
    }
    counts["total"] = sum(counts.values())
    return counts
