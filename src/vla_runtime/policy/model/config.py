"""Shapes of the reference model, as typed configs with named presets.

Presets:
- `tiny`: real time on 2 CPU cores, a few MB of weights; both action heads.
- `molmoact2`: MolmoAct2's shapes [molmoact2.md §1]: SigLIP2-so400m/14-sized vision (27 layers,
  width 1152, features of layers -3 and -9, so the last two are never built), a Qwen3-4B-shaped
  VLM (36 layers, width 2560, 32 heads, 8 KV heads, head dim 128, vocab 151,936, tied
  embeddings), a 768-wide flow expert with 36 blocks.
- `rdvla`: RD-VLA's shapes [rd-vla.md §1]: Qwen2.5-0.5B-shaped backbone (24 layers, width 896,
  14 heads, 2 KV heads), a 4-layer recurrent head of width 896 (prelude reads layer 11, core and
  coda read layer 23), 8 action queries.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ModelConfigError(ValueError):
    """A model config that cannot be built (the message names the field)."""


@dataclass(frozen=True)
class VisionConfig:
    image_size: int = 378
    patch_size: int = 14
    width: int = 1152
    layers: int = 27
    heads: int = 16
    mlp_hidden: int = 4304
    feature_layers: tuple[int, ...] = (-3, -9)
    pool: int = 2
    connector_hidden: int = 9728

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ModelConfigError("vision.image_size must be a multiple of vision.patch_size")
        if self.width % self.heads:
            raise ModelConfigError("vision.width must be divisible by vision.heads")
        for index in self.feature_layers:
            if not -self.layers <= index < self.layers:
                raise ModelConfigError(f"vision.feature_layers: {index} outside {self.layers}")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def pooled_grid(self) -> int:
        return -(-self.grid // self.pool)

    @property
    def tokens_per_image(self) -> int:
        return self.pooled_grid**2

    @property
    def built_layers(self) -> int:
        """Layers up to the deepest tapped one; later layers would never be used."""
        return max(i % self.layers for i in self.feature_layers) + 1


@dataclass(frozen=True)
class VLMConfig:
    width: int = 2560
    layers: int = 36
    heads: int = 32
    kv_heads: int = 8
    head_dim: int = 128
    mlp_hidden: int = 9728
    vocab_size: int = 151936
    rope_theta: float = 1.0e6
    qk_norm: bool = True
    max_positions: int = 4096

    def __post_init__(self) -> None:
        if self.heads % self.kv_heads:
            raise ModelConfigError("vlm.heads must be a multiple of vlm.kv_heads (GQA)")
        if self.head_dim % 2:
            raise ModelConfigError("vlm.head_dim must be even (RoPE)")

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


@dataclass(frozen=True)
class FlowHeadConfig:
    """MolmoAct2's flow-matching expert: one block per VLM layer."""

    width: int = 768
    heads: int = 8
    mlp_hidden: int = 3584
    steps: int = 10
    time_embed_dim: int = 256

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ModelConfigError("flow_head.width must be divisible by flow_head.heads")
        if self.steps < 1:
            raise ModelConfigError("flow_head.steps must be >= 1")


@dataclass(frozen=True)
class RecurrentHeadConfig:
    """RD-VLA's prelude -> weight-tied core -> coda head.

    `prelude_layers`, `core_layers`, `coda_layers` list the VLM layer each head layer reads.
    `context` = 'kv': cross-attend to that layer's cached K/V (the MolmoAct2 conditioning);
    'hidden': to its output hidden states (RD-VLA as published).
    """

    width: int = 896
    heads: int = 8
    mlp_hidden: int = 3584
    queries: int = 8
    prelude_layers: tuple[int, ...] = (11,)
    core_layers: tuple[int, ...] = (23, 23)
    coda_layers: tuple[int, ...] = (23,)
    context: str = "kv"
    threshold: float = 1.0e-3
    min_iterations: int = 2
    max_iterations: int = 32
    init_std: float = 0.632

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ModelConfigError("recurrent_head.width must be divisible by heads")
        if self.context not in ("kv", "hidden"):
            raise ModelConfigError("recurrent_head.context must be 'kv' or 'hidden'")
        if not 1 <= self.min_iterations <= self.max_iterations:
            raise ModelConfigError("recurrent_head: need 1 <= min_iterations <= max_iterations")
        if not self.core_layers:
            raise ModelConfigError("recurrent_head.core_layers must not be empty")


@dataclass(frozen=True)
class ModelConfig:
    """The whole reference model."""

    name: str = "custom"
    vision: VisionConfig = field(default_factory=VisionConfig)
    vlm: VLMConfig = field(default_factory=VLMConfig)
    flow_head: FlowHeadConfig | None = field(default_factory=FlowHeadConfig)
    recurrent_head: RecurrentHeadConfig | None = None
    action_width: int = 32
    max_horizon: int = 30
    state_bins: int = 256
    depth_grid: int = 10
    depth_codes: int = 128

    def __post_init__(self) -> None:
        if self.flow_head is None and self.recurrent_head is None:
            raise ModelConfigError("a model needs at least one action head")
        head = self.recurrent_head
        if head is not None:
            for layer in (*head.prelude_layers, *head.core_layers, *head.coda_layers):
                if not 0 <= layer < self.vlm.layers:
                    raise ModelConfigError(
                        f"recurrent_head reads VLM layer {layer}; the VLM has {self.vlm.layers}"
                    )

    @property
    def heads(self) -> tuple[str, ...]:
        names = []
        if self.flow_head is not None:
            names.append("flow")
        if self.recurrent_head is not None:
            names.append("recurrent")
        return tuple(names)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        parts: dict[str, type[Any]] = {
            "vision": VisionConfig,
            "vlm": VLMConfig,
            "flow_head": FlowHeadConfig,
            "recurrent_head": RecurrentHeadConfig,
        }
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ModelConfigError(f"unknown model config keys: {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            part = parts.get(key)
            if part is not None and value is not None:
                kwargs[key] = _build(part, value, key)
            else:
                kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path: Path) -> ModelConfig:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelConfigError(f"cannot read model config {path}: {exc}") from exc
        return cls.from_dict(data)


def _build(part: type[Any], value: dict[str, Any], key: str) -> Any:
    names = {f.name for f in dataclasses.fields(part)}
    unknown = set(value) - names
    if unknown:
        raise ModelConfigError(f"unknown keys in {key}: {sorted(unknown)}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    return part(**converted)


def _tiny() -> ModelConfig:
    return ModelConfig(
        name="tiny",
        vision=VisionConfig(
            width=48,
            layers=2,
            heads=2,
            mlp_hidden=96,
            feature_layers=(-1, -2),
            connector_hidden=192,
        ),
        vlm=VLMConfig(
            width=96,
            layers=4,
            heads=4,
            kv_heads=2,
            head_dim=24,
            mlp_hidden=256,
            vocab_size=768,
            rope_theta=1.0e4,
            max_positions=1024,
        ),
        flow_head=FlowHeadConfig(width=48, heads=2, mlp_hidden=128, steps=10, time_embed_dim=48),
        recurrent_head=RecurrentHeadConfig(
            width=48,
            heads=2,
            mlp_hidden=128,
            queries=30,
            prelude_layers=(1,),
            core_layers=(3, 3),
            coda_layers=(3,),
        ),
    )


def _molmoact2() -> ModelConfig:
    return ModelConfig(name="molmoact2")


def _rdvla() -> ModelConfig:
    return ModelConfig(
        name="rdvla",
        vision=VisionConfig(),
        vlm=VLMConfig(
            width=896,
            layers=24,
            heads=14,
            kv_heads=2,
            head_dim=64,
            mlp_hidden=4864,
            rope_theta=1.0e6,
            qk_norm=False,
        ),
        flow_head=None,
        recurrent_head=RecurrentHeadConfig(context="hidden"),
    )


PRESETS = {"tiny": _tiny, "molmoact2": _molmoact2, "rdvla": _rdvla}


def preset(name: str) -> ModelConfig:
    """A named config; raises ModelConfigError naming the known ones."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ModelConfigError(
            f"unknown model config {name!r}; known: {', '.join(sorted(PRESETS))}"
        ) from None
