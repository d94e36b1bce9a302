"""RD-VLA's recurrent-depth action head: prelude -> weight-tied core (iterated) -> coda.

Every layer is a pre-norm block [rd-vla.md §1.3]: bidirectional self-attention over the action
queries (RoPE), cross-attention with one softmax over two key sets taken from one VLM layer —
the non-vision context and the vision tokens, whose logits are scaled by tanh(gate) (gate
initialised to 0) — and a SwiGLU MLP. Per iteration [§1.4]: x = RMSNorm(gamma_adapt *
W_adapt [S; S_prelude]); the core layers run on x; RMSNorm gives the new state S. The coda
decodes any state into a chunk, so every iteration yields a chunk (anytime decoding).

The context does not change while iterating, so `prepare` projects it once per query into
per-layer keys/values (the upstream code re-projects it in every layer of every iteration, ~88 %
of the iteration's FLOPs [§1.6]); `iterate_uncached` keeps that behaviour for the benchmark.
Only the (B, queries, width) state is carried between iterations, so memory is flat.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from vla_runtime.policy.model.config import RecurrentHeadConfig
from vla_runtime.policy.model.layers import (
    RMSNorm,
    SwiGLU,
    apply_rope,
    merge_heads,
    rope_tables,
    split_heads,
)

UNTRAINED_STATE_GAIN = 0.4
"""Initial scale of the adapter's state half. With plain init an untrained core is not
contractive and every query runs to max_iterations; at 0.4 random weights stop after ~8-10
iterations at 1e-3, as the released checkpoints do (mean 7.3, rd-vla.md §3.3). Trained weights
overwrite it."""

Projection = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class RecurrentLayer(nn.Module):
    def __init__(self, config: RecurrentHeadConfig, key_dim: int, value_dim: int) -> None:
        super().__init__()
        width = config.width
        self.heads = config.heads
        self.norm1 = RMSNorm(width)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.attn_out = nn.Linear(width, width, bias=False)
        self.norm2 = RMSNorm(width)
        self.cross_q = nn.Linear(width, width, bias=False)
        self.task_k = nn.Linear(key_dim, width, bias=False)
        self.task_v = nn.Linear(value_dim, width, bias=False)
        self.vision_k = nn.Linear(key_dim, width, bias=False)
        self.vision_v = nn.Linear(value_dim, width, bias=False)
        self.vision_gate = nn.Parameter(torch.zeros(()))
        self.cross_out = nn.Linear(width, width, bias=False)
        self.norm3 = RMSNorm(width)
        self.mlp = SwiGLU(width, config.mlp_hidden)

    def project(
        self,
        keys: torch.Tensor,
        values: torch.Tensor,
        task_index: torch.Tensor,
        vision_index: torch.Tensor,
    ) -> Projection:
        """Per-head K/V of both key sets, each from its own positions only; once per query.

        Args:
            keys, values: (B, T, dim) context of this layer's VLM layer.
            task_index, vision_index: positions of the non-vision / vision tokens.
        """
        task_keys, task_values = keys[:, task_index], values[:, task_index]
        vision_keys, vision_values = keys[:, vision_index], values[:, vision_index]
        return (
            split_heads(self.task_k(task_keys), self.heads),
            split_heads(self.task_v(task_values), self.heads),
            split_heads(self.vision_k(vision_keys), self.heads),
            split_heads(self.vision_v(vision_values), self.heads),
        )

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, projection: Projection
    ) -> torch.Tensor:
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(self.norm1(x)).chunk(3, dim=-1))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        x = x + self.attn_out(merge_heads(F.scaled_dot_product_attention(q, k, v)))
        task_k, task_v, vision_k, vision_v = projection
        q = split_heads(self.cross_q(self.norm2(x)), self.heads)
        scale = 1.0 / math.sqrt(q.shape[-1])
        task_logits = q @ task_k.transpose(-1, -2) * scale
        vision_logits = (q @ vision_k.transpose(-1, -2) * scale) * torch.tanh(self.vision_gate)
        weights = torch.softmax(torch.cat((task_logits, vision_logits), dim=-1), dim=-1)
        cross = weights @ torch.cat((task_v, vision_v), dim=2)
        x = x + self.cross_out(merge_heads(cross))
        return x + self.mlp(self.norm3(x))


class RecurrentHead(nn.Module):
    def __init__(
        self, config: RecurrentHeadConfig, *, key_dim: int, value_dim: int, action_width: int
    ) -> None:
        super().__init__()
        self.config = config
        width = config.width

        def layers(count: int) -> nn.ModuleList:
            return nn.ModuleList(RecurrentLayer(config, key_dim, value_dim) for _ in range(count))

        self.queries = nn.Parameter(torch.empty(config.queries, width))
        nn.init.trunc_normal_(
            self.queries, std=config.init_std, a=-3 * config.init_std, b=3 * config.init_std
        )
        self.prelude = layers(len(config.prelude_layers))
        self.adapter = nn.Linear(2 * width, width, bias=False)
        with torch.no_grad():  # contractive start: see UNTRAINED_STATE_GAIN
            self.adapter.weight[:, :width].mul_(UNTRAINED_STATE_GAIN)
        self.gamma_adapt = nn.Parameter(torch.ones(()))
        self.gamma_init = nn.Parameter(torch.ones(()))
        self.adapt_norm = RMSNorm(width)
        self.core = layers(len(config.core_layers))
        self.core_norm = RMSNorm(width)
        self.coda = layers(len(config.coda_layers))
        self.coda_norm = RMSNorm(width)
        self.action_out = nn.Linear(width, action_width)

    @property
    def tapped_layers(self) -> tuple[int, ...]:
        cfg = self.config
        return (*cfg.prelude_layers, *cfg.core_layers, *cfg.coda_layers)

    def _rope(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(x.shape[1], device=x.device)
        return rope_tables(positions, self.config.width // self.config.heads, 10000.0, x.dtype)

    def initial_state_std(self) -> float:
        """Std of the truncated-normal initial state (gamma_init x 0.632)."""
        return float(self.gamma_init.detach().abs()) * self.config.init_std

    def prepare(
        self,
        keys: torch.Tensor,
        values: torch.Tensor,
        task_index: torch.Tensor,
        vision_index: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """Once per query: the prelude output and every core/coda layer's projected context.

        Args:
            keys, values: (vlm_layers, B, T, dim) per-layer context (the cached K/V, or the
                hidden states for both with context='hidden').
            task_index, vision_index: (n,) int64 positions of the non-vision and the image
                tokens; each key set is projected from its own positions only.

        Returns:
            A flat tuple (prelude_out, then 4 tensors per core layer, then 4 per coda layer),
            the inputs of `iterate` after the state.
        """
        x = self.prelude_output(keys, values, task_index, vision_index)
        return (x, *self._project_context(keys, values, task_index, vision_index))

    def prelude_output(
        self,
        keys: torch.Tensor,
        values: torch.Tensor,
        task_index: torch.Tensor,
        vision_index: torch.Tensor,
    ) -> torch.Tensor:
        """The prelude's output S_pre (B, queries, width), re-injected every iteration."""
        x = self.queries[None].expand(keys.shape[1], -1, -1)
        cos, sin = self._rope(x)
        for layer, source in zip(self.prelude, self.config.prelude_layers, strict=True):
            projection = cast(RecurrentLayer, layer).project(
                keys[source], values[source], task_index, vision_index
            )
            x = layer(x, cos, sin, projection)
        return x

    def _project_context(
        self,
        keys: torch.Tensor,
        values: torch.Tensor,
        task_index: torch.Tensor,
        vision_index: torch.Tensor,
    ) -> list[torch.Tensor]:
        flat: list[torch.Tensor] = []
        sources = (*self.config.core_layers, *self.config.coda_layers)
        for layer, source in zip((*self.core, *self.coda), sources, strict=True):
            flat.extend(
                cast(RecurrentLayer, layer).project(
                    keys[source], values[source], task_index, vision_index
                )
            )
        return flat

    def iterate(
        self, state: torch.Tensor, *prepared: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One core iteration and the coda's decode of the new state: (state, chunk)."""
        state = self.core_step(state, *prepared)
        return state, self.decode(state, *prepared)

    def core_step(self, state: torch.Tensor, *prepared: torch.Tensor) -> torch.Tensor:
        """One core iteration without the decode (training runs many before one decode)."""
        prelude_out = prepared[0]
        cos, sin = self._rope(state)
        x = self.adapt_norm(self.gamma_adapt * self.adapter(torch.cat((state, prelude_out), -1)))
        for index, layer in enumerate(self.core):
            x = layer(x, cos, sin, _projection(prepared, index))
        return cast(torch.Tensor, self.core_norm(x))

    def decode(self, state: torch.Tensor, *prepared: torch.Tensor) -> torch.Tensor:
        """The coda's chunk (B, queries, action_width) for a state."""
        cos, sin = self._rope(state)
        y = state
        n_core = len(self.core)
        for index, layer in enumerate(self.coda):
            y = layer(y, cos, sin, _projection(prepared, n_core + index))
        return cast(torch.Tensor, self.action_out(self.coda_norm(y)))

    def iterate_uncached(
        self,
        state: torch.Tensor,
        prelude_out: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        task_index: torch.Tensor,
        vision_index: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`iterate` that re-projects the context in every layer, as upstream does."""
        projected = self._project_context(keys, values, task_index, vision_index)
        return self.iterate(state, prelude_out, *projected)


def _projection(prepared: tuple[torch.Tensor, ...], layer: int) -> Projection:
    """Layer `layer`'s (task_k, task_v, vision_k, vision_v) in `prepare`'s flat tuple."""
    i = 1 + 4 * layer
    return prepared[i], prepared[i + 1], prepared[i + 2], prepared[i + 3]
