"""Decoder-only VLM: RoPE, grouped-query attention, QK-norm, SwiGLU, and an explicit KV cache.

The cache is a tensor `kv` of shape (layers, 2, batch, kv_heads, tokens, head_dim) holding the
rotated keys and the values of every layer — exactly what the action heads condition on. A
prefill returns the cache of the prompt; `extend` attends over a fixed-size cache buffer whose
first `past_len` entries are valid and returns the cache entries of the new tokens, so the
caller owns the buffer and nothing is re-allocated per token.
"""

from __future__ import annotations

import torch
from torch import nn

from vla_runtime.policy.model.config import VLMConfig
from vla_runtime.policy.model.layers import (
    RMSNorm,
    SwiGLU,
    apply_rope,
    merge_heads,
    rope_tables,
    split_heads,
)


class DecoderLayer(nn.Module):
    def __init__(self, config: VLMConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.kv_heads = config.kv_heads
        self.input_norm = RMSNorm(config.width)
        self.q_proj = nn.Linear(config.width, config.heads * config.head_dim, bias=False)
        self.k_proj = nn.Linear(config.width, config.kv_dim, bias=False)
        self.v_proj = nn.Linear(config.width, config.kv_dim, bias=False)
        self.o_proj = nn.Linear(config.heads * config.head_dim, config.width, bias=False)
        self.q_norm: nn.Module = RMSNorm(config.head_dim) if config.qk_norm else nn.Identity()
        self.k_norm: nn.Module = RMSNorm(config.head_dim) if config.qk_norm else nn.Identity()
        self.post_norm = RMSNorm(config.width)
        self.mlp = SwiGLU(config.width, config.mlp_hidden)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        past_k: torch.Tensor | None = None,
        past_v: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.input_norm(x)
        q = apply_rope(self.q_norm(split_heads(self.q_proj(h), self.heads)), cos, sin)
        k = apply_rope(self.k_norm(split_heads(self.k_proj(h), self.kv_heads)), cos, sin)
        v = split_heads(self.v_proj(h), self.kv_heads)
        keys = k if past_k is None else torch.cat((past_k, k), dim=2)
        values = v if past_v is None else torch.cat((past_v, v), dim=2)
        group = self.heads // self.kv_heads
        if group > 1:
            keys = keys.repeat_interleave(group, dim=1)
            values = values.repeat_interleave(group, dim=1)
        out = torch.nn.functional.scaled_dot_product_attention(
            q, keys, values, attn_mask=mask, is_causal=mask is None
        )
        x = x + self.o_proj(merge_heads(out))
        return x + self.mlp(self.post_norm(x)), k, v


class VLM(nn.Module):
    """Token embeddings (tied with the LM head), decoder layers, final norm."""

    def __init__(self, config: VLMConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.width)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.layers))
        self.norm = RMSNorm(config.width)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(hidden) @ self.embed.weight.T

    def run(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor | None,
        past: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the layers on embeddings x (B, S, W); mask None = causal over x alone.

        Returns:
            logits of the last position (B, vocab), the new tokens' cache entries
            (layers, 2, B, kv_heads, S, head_dim), and every layer's output (layers, B, S, W).
        """
        cfg = self.config
        cos, sin = rope_tables(positions, cfg.head_dim, cfg.rope_theta, x.dtype)
        new_kv = []
        hidden = []
        for index, layer in enumerate(self.layers):
            past_k = None if past is None else past[index, 0]
            past_v = None if past is None else past[index, 1]
            x, k, v = layer(x, cos, sin, mask, past_k, past_v)
            new_kv.append(torch.stack((k, v)))
            hidden.append(x)
        return self.logits(x[:, -1]), torch.stack(new_kv), torch.stack(hidden)

    def prefill(self, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        seq = embeds.shape[1]
        positions = torch.arange(seq, device=embeds.device)
        return self.run(embeds, positions, None)

    def extend(
        self, tokens: torch.Tensor, past: torch.Tensor, past_len: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Feed tokens (B, n) after the first `past_len` entries of the buffer `past`."""
        n = tokens.shape[1]
        capacity = past.shape[4]
        device = tokens.device
        positions = past_len + torch.arange(n, device=device)
        past_ok = (torch.arange(capacity, device=device) < past_len)[None, :].expand(n, capacity)
        causal = torch.ones(n, n, dtype=torch.bool, device=device).tril()
        mask = torch.cat((past_ok, causal), dim=1)
        return self.run(self.embed(tokens), positions, mask, past)
