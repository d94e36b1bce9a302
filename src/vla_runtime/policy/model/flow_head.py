"""MolmoAct2's flow-matching action expert, conditioned on the VLM's per-layer KV cache.

One block per VLM layer [molmoact2.md §1.2]: AdaLN-modulated (9 chunks from the flow-time
embedding) bidirectional self-attention over the chunk with RoPE and QK-norm, cross-attention to
the projected K/V of *its* VLM layer, and a SwiGLU MLP. One pair of context projections
(kv_dim -> width, then RMSNorm) is shared by all layers and applied once per query in
`prepare`; `velocity` is one Euler step's network evaluation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vla_runtime.policy.model.config import FlowHeadConfig
from vla_runtime.policy.model.layers import (
    RMSNorm,
    SwiGLU,
    apply_rope,
    merge_heads,
    rope_tables,
    split_heads,
    timestep_embedding,
)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class ExpertBlock(nn.Module):
    def __init__(self, config: FlowHeadConfig) -> None:
        super().__init__()
        width = config.width
        self.heads = config.heads
        head_dim = width // config.heads
        self.norm1 = RMSNorm(width)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_norm = RMSNorm(head_dim)
        self.k_norm = RMSNorm(head_dim)
        self.attn_out = nn.Linear(width, width)
        self.norm2 = RMSNorm(width)
        self.cross_q = nn.Linear(width, width, bias=False)
        self.cross_out = nn.Linear(width, width)
        self.norm3 = RMSNorm(width)
        self.mlp = SwiGLU(width, config.mlp_hidden)
        self.modulation = nn.Linear(width, 9 * width)

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        ctx_k: torch.Tensor,
        ctx_v: torch.Tensor,
        ctx_mask: torch.Tensor,
    ) -> torch.Tensor:
        mod = self.modulation(F.silu(cond)).chunk(9, dim=-1)
        h = _modulate(self.norm1(x), mod[0], mod[1])
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(h).chunk(3, dim=-1))
        q = apply_rope(self.q_norm(q), cos, sin)
        k = apply_rope(self.k_norm(k), cos, sin)
        x = x + mod[2][:, None] * self.attn_out(
            merge_heads(F.scaled_dot_product_attention(q, k, v))
        )
        h = _modulate(self.norm2(x), mod[3], mod[4])
        q = split_heads(self.cross_q(h), self.heads)
        k = split_heads(ctx_k, self.heads)
        v = split_heads(ctx_v, self.heads)
        cross = F.scaled_dot_product_attention(q, k, v, attn_mask=ctx_mask)
        x = x + mod[5][:, None] * self.cross_out(merge_heads(cross))
        h = _modulate(self.norm3(x), mod[6], mod[7])
        return x + mod[8][:, None] * self.mlp(h)


class FlowHead(nn.Module):
    def __init__(
        self, config: FlowHeadConfig, *, vlm_layers: int, kv_dim: int, action_width: int
    ) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.context_k_proj = nn.Linear(kv_dim, width, bias=False)
        self.context_v_proj = nn.Linear(kv_dim, width, bias=False)
        self.context_k_norm = RMSNorm(width)
        self.context_v_norm = RMSNorm(width)
        self.action_in = nn.Linear(action_width, width)
        self.time_mlp = nn.Sequential(
            nn.Linear(config.time_embed_dim, width), nn.SiLU(), nn.Linear(width, width)
        )
        self.blocks = nn.ModuleList(ExpertBlock(config) for _ in range(vlm_layers))
        self.final_norm = RMSNorm(width)
        self.final_modulation = nn.Linear(width, 2 * width)
        self.action_out = nn.Linear(width, action_width)

    def prepare(
        self, keys: torch.Tensor, values: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project every layer's cached K/V once per query.

        Args:
            keys, values: (layers, B, T, kv_dim) flattened cache.
            valid: (B, T) bool, context positions the expert may attend to.

        Returns:
            ctx_k, ctx_v (layers, B, T, width) and the attention mask (B, 1, 1, T).
        """
        ctx_k = self.context_k_norm(self.context_k_proj(keys))
        ctx_v = self.context_v_norm(self.context_v_proj(values))
        return ctx_k, ctx_v, valid[:, None, None, :]

    def velocity(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        ctx_k: torch.Tensor,
        ctx_v: torch.Tensor,
        ctx_mask: torch.Tensor,
    ) -> torch.Tensor:
        """The flow's velocity at noisy chunk x (B, H, A) and times t (B,)."""
        head_dim = self.config.width // self.config.heads
        positions = torch.arange(x.shape[1], device=x.device)
        cos, sin = rope_tables(positions, head_dim, 10000.0, x.dtype)
        cond = self.time_mlp(timestep_embedding(t, self.config.time_embed_dim).to(x.dtype))
        h = self.action_in(x)
        for index, block in enumerate(self.blocks):
            h = block(h, cond, cos, sin, ctx_k[index], ctx_v[index], ctx_mask)
        shift, scale = self.final_modulation(F.silu(cond)).chunk(2, dim=-1)
        return self.action_out(_modulate(self.final_norm(h), shift, scale))
