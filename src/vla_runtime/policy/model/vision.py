"""Vision encoder: a SigLIP-style ViT, features of two layers, 2x2 attention pooling, connector.

A 378x378 image is cut into 27x27 patches of 14 px; the features of the tapped layers are
concatenated, pooled over 2x2 neighbourhoods (the 27x27 grid is zero-padded to 28x28) by a small
attention pool whose query is the neighbourhood mean, and projected to the VLM width by a SwiGLU
connector: 14x14 = 196 tokens per image [molmoact2.md §1.1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vla_runtime.policy.model.config import VisionConfig
from vla_runtime.policy.model.layers import SwiGLU, merge_heads, split_heads


class ViTBlock(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.norm1 = nn.LayerNorm(config.width, eps=1e-6)
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.proj = nn.Linear(config.width, config.width)
        self.norm2 = nn.LayerNorm(config.width, eps=1e-6)
        self.fc1 = nn.Linear(config.width, config.mlp_hidden)
        self.fc2 = nn.Linear(config.mlp_hidden, config.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        q, k, v = (split_heads(t, self.heads) for t in (q, k, v))
        x = x + self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v)))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x)), approximate="tanh"))


class AttentionPool(nn.Module):
    """Pools each group of `pool*pool` patch features into one token (query = group mean)."""

    def __init__(self, in_dim: int, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(in_dim, width)
        self.k = nn.Linear(in_dim, width)
        self.v = nn.Linear(in_dim, width)
        self.o = nn.Linear(width, width)

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        # groups: (N, G, P, C) with G pooled tokens of P patches each
        n, g, p, c = groups.shape
        flat = groups.reshape(n * g, p, c)
        q = split_heads(self.q(flat.mean(dim=1, keepdim=True)), self.heads)
        k = split_heads(self.k(flat), self.heads)
        v = split_heads(self.v(flat), self.heads)
        pooled = merge_heads(F.scaled_dot_product_attention(q, k, v))
        return self.o(pooled).reshape(n, g, -1)


class VisionEncoder(nn.Module):
    """(N, 3, S, S) pixels in [-1, 1] -> (N, tokens_per_image, vlm_width) visual tokens."""

    def __init__(self, config: VisionConfig, out_width: int) -> None:
        super().__init__()
        self.config = config
        patch_dim = 3 * config.patch_size**2
        self.patch_embed = nn.Linear(patch_dim, config.width)
        self.position = nn.Parameter(torch.zeros(config.grid**2, config.width))
        self.blocks = nn.ModuleList(ViTBlock(config) for _ in range(config.built_layers))
        self.taps = tuple(i % config.layers for i in config.feature_layers)
        feature_dim = config.width * len(self.taps)
        self.pool = AttentionPool(feature_dim, config.width, config.heads)
        self.connector = SwiGLU(config.width, config.connector_hidden, out_width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        n = pixels.shape[0]
        p, g = cfg.patch_size, cfg.grid
        patches = pixels.reshape(n, 3, g, p, g, p).permute(0, 2, 4, 1, 3, 5)
        x = self.patch_embed(patches.reshape(n, g * g, 3 * p * p)) + self.position
        features: dict[int, torch.Tensor] = {}
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in self.taps:
                features[index] = x
        stacked = torch.cat([features[i] for i in self.taps], dim=-1)
        return self.connector(self.pool(self._group(stacked)))

    def _group(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        n, _, c = x.shape
        g, pool, pg = cfg.grid, cfg.pool, cfg.pooled_grid
        grid = x.reshape(n, g, g, c)
        pad = pg * pool - g
        if pad:
            grid = F.pad(grid, (0, 0, 0, pad, 0, pad))
        grid = grid.reshape(n, pg, pool, pg, pool, c).permute(0, 1, 3, 2, 4, 5)
        return grid.reshape(n, pg * pg, pool * pool, c)
