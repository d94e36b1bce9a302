"""Behaviour cloning of the reference model on scripted demonstrations.

One training step runs the model's own modules on a batch, teacher-forced:

    prompt (images, task, state tokens, <depth_output><depth_start>) + 100 depth codes
    + <depth_end><action_output>  ->  vision encoder + VLM in one causal forward

and adds three losses:

- depth: cross-entropy of the VLM's logits over the 128 depth codes at the 100 positions that
  predict them (the engine decodes them greedily over the same slice of the vocabulary);
- flow: flow matching on the per-layer K/V cache, x_t = (1 - t) noise + t action, target
  velocity action - noise, t ~ U(0, 1) (the engine integrates from noise at t = 0 to t = 1);
- recurrent: RD-VLA's L1 on the chunk decoded after r core iterations from a truncated-normal
  state, r drawn once per batch from Huginn's log-normal Poisson sampler (mean `mean_recurrence`),
  gradients through the last `backprop_depth` iterations only (TBPTT) [rd-vla.md §2].

The step works on batches of prompts of one layout (same task strings, so every prompt has the
same length and its image placeholders sit at the same positions), which is what one
embodiment's demonstrations give.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from vla_runtime.policy.model.config import ModelConfig
from vla_runtime.policy.model.model import ReferenceModel, flatten_cache
from vla_runtime.policy.model.tokenizer import PromptTokenizer
from vla_runtime.policy.model.weights import save_model
from vla_runtime.policy.transforms import EmbodimentTransform
from vla_runtime.train.codebook import save_codebook
from vla_runtime.train.demos import DemoData

REPORT_FILE = "training_report.json"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of one behaviour-cloning run.

    Attributes:
        steps: optimiser steps.
        batch_size: samples per step.
        learning_rate: AdamW peak rate, after `warmup_steps` linear warm-up, cosine to 10 %.
        weight_decay: AdamW weight decay.
        grad_clip: global gradient-norm clip (RD-VLA: 1.0).
        depth_weight, flow_weight, recurrent_weight: loss weights.
        vision_aux_weight: weight of a training-only probe on the visual tokens that predicts,
            per token, whether the red cube is in its 28x28-px region (colour mask of the
            image) and the token's own grid position. The ViT's position embedding starts at
            zero and nothing else tells the heads *where* a token is; a short run needs this
            push to localise the cube. The probe is not part of the saved model. 0 = off.
        state_noise_rad: std of Gaussian noise on the joint state the prompt's state tokens are
            made from (training batches only; labels unchanged). Against BC's causal
            confusion: with the exact state the model can tell the demonstration, hence the
            cube, from its own joints instead of the image. 0 = off.
        gate_lr_scale: learning-rate factor of the recurrent head's tanh vision gates. They
            start at 0 (vision logits flat) and, as scalars under Adam, move at most ~lr per
            step: a short run needs them faster to let the head look at the image tokens.
        mean_recurrence: mean of the iteration sampler (RD-VLA trains with 32 for 24-layer
            heads; the code default 12 suits the tiny head and puts fixed-12 at the mean).
        min_recurrence, max_recurrence: iterations are clipped to [min, max]. RD-VLA's
            sampler (mean 32) practically never draws 1-2; a tiny head trained at mean 8 with
            min 1 learns to answer in one iteration, so the iteration count stops mattering.
            min_recurrence > 1 never asks it to.
        backprop_depth: iterations that carry gradients (RD-VLA / Huginn: 8).
        validation_fraction: episodes held out for the validation losses.
        log_every: steps between progress lines (and loss-history entries).
        checkpoint_every: steps between checkpoints in the output directory (0 = end only).
        stop_after: end the run after this many steps, mid-schedule (0 = run all `steps`).
        seed: data order, noise, iteration counts and initial weights.
    """

    steps: int = 1500
    batch_size: int = 16
    learning_rate: float = 1.5e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    depth_weight: float = 0.5
    flow_weight: float = 1.0
    recurrent_weight: float = 1.0
    gate_lr_scale: float = 1.0
    vision_aux_weight: float = 0.0
    state_noise_rad: float = 0.0
    mean_recurrence: float = 12.0
    min_recurrence: int = 1
    max_recurrence: int = 32
    backprop_depth: int = 8
    validation_fraction: float = 0.05
    log_every: int = 25
    checkpoint_every: int = 250
    stop_after: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if self.mean_recurrence < 1 or self.max_recurrence < 1 or self.backprop_depth < 1:
            raise ValueError("mean_recurrence, max_recurrence and backprop_depth must be >= 1")
        if not 1 <= self.min_recurrence <= self.max_recurrence:
            raise ValueError("min_recurrence must be in [1, max_recurrence]")


@dataclass
class Batch:
    """One teacher-forced batch (B samples, C cameras, S tokens, R rows, A action dims).

    Attributes:
        tokens: (B, S) int64 prompt + depth codes + <depth_end><action_output>.
        pixels: (B * C, 3, size, size) float32 in [-1, 1].
        actions: (B, R, A) float32 normalised chunk, zero padded.
        depth_targets: (B, 100) int64 codes.
        depth_start: position of the first depth code in `tokens`.
    """

    tokens: torch.Tensor
    pixels: torch.Tensor
    actions: torch.Tensor
    depth_targets: torch.Tensor
    depth_start: int
    cube_tokens: torch.Tensor | None = None


class BatchBuilder:
    """Turns recorded samples into model inputs with the same tokenizer and transform as
    inference (`ModelPolicy.infer`)."""

    def __init__(self, config: ModelConfig, transform: EmbodimentTransform) -> None:
        self.config = config
        self.transform = transform
        self.tokenizer = PromptTokenizer(config.state_bins, config.depth_codes)
        task, setup, control = transform.prompt_fields(None)
        self._fields = (task, setup, control)

    def prompt(self, joints: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
        task, setup, control = self._fields
        return self.tokenizer.prompt(
            images=len(self.transform.config.cameras),
            tokens_per_image=self.config.vision.tokens_per_image,
            task=task,
            setup=setup,
            control=control,
            state_bins=self.transform.state_tokens(joints),
            depth=True,
        )

    def build(
        self,
        images: npt.NDArray[np.uint8],
        joints: npt.NDArray[np.float32],
        actions: npt.NDArray[np.float32],
        codes: npt.NDArray[np.uint8],
    ) -> Batch:
        """From (B, C, S, S, 3) images, (B, J) joints, (B, R, J) actions, (B, 100) codes."""
        tok = self.tokenizer
        rows = []
        depth_start = 0
        for joint_row, code_row in zip(joints, codes, strict=True):
            prompt = self.prompt(joint_row)
            depth_start = prompt.size
            depth = tok.depth_start + code_row.astype(np.int64)
            rows.append(np.concatenate((prompt, depth, tok.after_depth())))
        size = self.config.vision.image_size
        if images.shape[2:4] != (size, size):
            raise ValueError(f"images must be {size}x{size}, got {images.shape[2:4]}")
        pixels = torch.from_numpy(images.reshape(-1, size, size, 3)).permute(0, 3, 1, 2)
        normalized = np.stack([self.transform.encode_actions(a) for a in actions])
        grid = self.config.vision.pooled_grid
        return Batch(
            cube_tokens=torch.from_numpy(cube_token_mask(images.reshape(-1, size, size, 3), grid)),
            tokens=torch.from_numpy(np.stack(rows)),
            pixels=pixels.float() * (2.0 / 255.0) - 1.0,
            actions=torch.from_numpy(normalized),
            depth_targets=torch.from_numpy(codes.astype(np.int64)),
            depth_start=depth_start,
        )


def cube_token_mask(images: npt.NDArray[np.uint8], grid: int) -> npt.NDArray[np.float32]:
    """(N, S, S, 3) images -> (N, grid * grid) 1.0 where a visual token's region shows red.

    Red = the cube's colour, lit or shaded: R > 90 and R more than 2.5 x G and B.
    """
    rgb = images.astype(np.int16)
    red = (
        (rgb[..., 0] > 90) & (rgb[..., 0] > 2.5 * rgb[..., 1]) & (rgb[..., 0] > 2.5 * rgb[..., 2])
    )
    n, size = red.shape[0], red.shape[1]
    cell = -(-size // grid)
    padded = np.zeros((n, grid * cell, grid * cell), np.bool_)
    padded[:, :size, :size] = red
    blocks = padded.reshape(n, grid, cell, grid, cell).sum(axis=(2, 4))
    mask: npt.NDArray[np.float32] = (blocks >= 4).reshape(n, grid * grid).astype(np.float32)
    return mask


def vision_aux_loss(
    probe: torch.nn.Module, visual: torch.Tensor, cube_tokens: torch.Tensor
) -> torch.Tensor:
    """Cube-in-token BCE + own-grid-position MSE of the probe on visual tokens (N, T, W)."""
    out = probe(visual)
    tokens = visual.shape[1]
    grid = round(math.sqrt(tokens))
    axis = torch.linspace(-1.0, 1.0, grid)
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    position = torch.stack((rows.reshape(-1), cols.reshape(-1)), dim=-1)
    bce = F.binary_cross_entropy_with_logits(
        out[..., 0], cube_tokens, pos_weight=torch.tensor(20.0)
    )
    return bce + F.mse_loss(out[..., 1:3], position.expand_as(out[..., 1:3]))


def sample_iterations(
    generator: np.random.Generator, mean: float, maximum: int, minimum: int = 1
) -> int:
    """Huginn / RD-VLA's log-normal Poisson draw: r = Poisson(exp(N(log mean - 1/8, 1/2))) + 1,
    rate capped at 100, r clipped to [minimum, maximum]."""
    tau = generator.normal(math.log(mean) - 0.125, 0.5)
    rate = min(math.exp(tau), 100.0)
    return int(np.clip(generator.poisson(rate) + 1, minimum, maximum))


def forward_context(
    model: ReferenceModel, batch: Batch
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Vision + VLM over the teacher-forced batch.

    Returns every position's logits (B, S, vocab), the per-layer keys and values
    (L, B, S, kv_dim), the image-placeholder mask (S,) and the visual tokens (B * C, T, W).
    """
    tokens = batch.tokens
    visual = model.encode_images(batch.pixels)
    b = tokens.shape[0]
    is_patch = tokens[0] == model.tokenizer.patch_id
    embeds = model.vlm.embed(tokens)
    # Same layout in every row: scatter each sample's visual tokens into its placeholders.
    embeds = embeds.masked_scatter(
        is_patch[None, :, None].expand_as(embeds),
        visual.reshape(b, -1, visual.shape[-1]).to(embeds.dtype),
    )
    _, kv, hidden = model.vlm.prefill(embeds)
    logits = model.vlm.logits(hidden[-1])
    keys, values = flatten_cache(kv)
    return logits, keys, values, is_patch, visual


def compute_losses(
    model: ReferenceModel,
    batch: Batch,
    mask: torch.Tensor,
    *,
    iterations: int,
    backprop_depth: int,
    generator: torch.Generator,
    probe: torch.nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """The three losses of one batch (see module docstring); `mask` (A,) marks real dims.

    With a `probe` (and `batch.cube_tokens`) a fourth, 'vision_aux' (`vision_aux_loss`).
    """
    logits, keys, values, is_patch, visual = forward_context(model, batch)
    tok = model.tokenizer
    lo, hi = tok.depth_start, tok.depth_start + tok.depth_codes
    start = batch.depth_start
    grid = batch.depth_targets.shape[1]
    depth_logits = logits[:, start - 1 : start - 1 + grid, lo:hi]
    losses = {
        "depth": F.cross_entropy(
            depth_logits.reshape(-1, hi - lo), batch.depth_targets.reshape(-1)
        )
    }
    if probe is not None and batch.cube_tokens is not None:
        losses["vision_aux"] = vision_aux_loss(probe, visual, batch.cube_tokens)
    actions = batch.actions
    b, rows, _ = actions.shape
    weights = mask.to(actions.dtype)
    denominator = weights.sum() * b * rows
    if model.flow_head is not None:
        head = model.flow_head
        valid = torch.ones(b, keys.shape[2], dtype=torch.bool)
        ctx_k, ctx_v, ctx_mask = head.prepare(keys, values, valid)
        noise = torch.randn(actions.shape, generator=generator) * weights
        t = torch.rand(b, generator=generator)
        x_t = (1 - t[:, None, None]) * noise + t[:, None, None] * actions
        velocity = head.velocity(x_t, t, ctx_k, ctx_v, ctx_mask)
        error = (velocity - (actions - noise)) ** 2 * weights
        losses["flow"] = error.sum() / denominator
    if model.recurrent_head is not None:
        head_r = model.recurrent_head
        task_index = torch.nonzero(~is_patch).flatten()
        vision_index = torch.nonzero(is_patch).flatten()
        prepared = head_r.prepare(keys, values, task_index, vision_index)
        cfg = head_r.config
        z = torch.randn(b, cfg.queries, cfg.width, generator=generator).clamp(-3.0, 3.0)
        state = z * (head_r.gamma_init.abs() * cfg.init_std)
        with torch.no_grad():
            for _ in range(max(iterations - backprop_depth, 0)):
                state = head_r.core_step(state, *prepared)
        for _ in range(min(iterations, backprop_depth)):
            state = head_r.core_step(state, *prepared)
        chunk = head_r.decode(state, *prepared)
        error_r = (chunk[:, :rows] - actions).abs() * weights
        losses["recurrent"] = error_r.sum() / denominator
    return losses


@dataclass
class TrainingReport:
    """What a run did; written as training_report.json next to the weights."""

    model: str
    samples: int
    episodes: int
    validation_samples: int
    steps: int
    wall_s: float
    config: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    validation: dict[str, float] = field(default_factory=dict)
    codebook_usage: int = 0
    # Earlier runs this one continued from (`--init`): their reports, oldest first.
    previous: list[dict[str, Any]] = field(default_factory=list)

    def write(self, directory: Path) -> Path:
        path = directory / REPORT_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path


class Trainer:
    """Holds model, data split and optimiser; `run` trains, checkpointing into `out`."""

    def __init__(
        self,
        model: ReferenceModel,
        transform: EmbodimentTransform,
        data: DemoData,
        codes: npt.NDArray[np.uint8],
        codebook: npt.NDArray[np.float32],
        config: TrainConfig,
    ) -> None:
        self.model = model
        self.transform = transform
        self.data = data
        self.codes = codes
        self.codebook = codebook
        self.config = config
        self.builder = BatchBuilder(model.config, transform)
        self.mask = torch.from_numpy(transform.action_mask())
        episodes = np.unique(data.episode)
        rng = np.random.default_rng(config.seed)
        held = max(1, round(len(episodes) * config.validation_fraction))
        validation_episodes = rng.choice(episodes, held, replace=False)
        is_validation = np.isin(data.episode, validation_episodes)
        self.train_index = np.flatnonzero(~is_validation)
        self.validation_index = np.flatnonzero(is_validation)
        self._rng = rng
        self._generator = torch.Generator().manual_seed(config.seed)
        self.probe: torch.nn.Module | None = None
        if config.vision_aux_weight > 0:
            self.probe = torch.nn.Linear(model.config.vlm.width, 3)
        named = list(model.named_parameters())
        if self.probe is not None:
            named += [(f"probe.{n}", p) for n, p in self.probe.named_parameters()]
        gates = [p for n, p in named if n.endswith("vision_gate")]
        rest = [(n, p) for n, p in named if not n.endswith("vision_gate")]
        decay = [p for n, p in rest if p.ndim >= 2 and "embed" not in n]
        no_decay = [p for n, p in rest if p.ndim < 2 or "embed" in n]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": config.weight_decay, "scale": 1.0},
                {"params": no_decay, "weight_decay": 0.0, "scale": 1.0},
                {"params": gates, "weight_decay": 0.0, "scale": config.gate_lr_scale},
            ],
            lr=config.learning_rate,
            betas=(0.9, 0.95),
        )

    def batch(self, index: npt.NDArray[np.int64], *, noisy: bool = False) -> Batch:
        d = self.data
        joints = d.joint_positions[index]
        if noisy and self.config.state_noise_rad > 0:
            noise = self._rng.normal(0.0, self.config.state_noise_rad, joints.shape)
            joints = (joints + noise).astype(np.float32)
        return self.builder.build(d.images[index], joints, d.actions[index], self.codes[index])

    def learning_rate(self, step: int) -> float:
        cfg = self.config
        if step < cfg.warmup_steps:
            return cfg.learning_rate * (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    def step(self, step: int) -> dict[str, float]:
        """One optimiser step on a random batch; returns the losses and the iteration count."""
        cfg = self.config
        self.model.train()
        index = self._rng.choice(self.train_index, cfg.batch_size, replace=False)
        batch = self.batch(np.sort(index), noisy=True)
        iterations = sample_iterations(
            self._rng, cfg.mean_recurrence, cfg.max_recurrence, cfg.min_recurrence
        )
        losses = compute_losses(
            self.model,
            batch,
            self.mask,
            iterations=iterations,
            backprop_depth=cfg.backprop_depth,
            generator=self._generator,
            probe=self.probe,
        )
        weights = {
            "depth": cfg.depth_weight,
            "flow": cfg.flow_weight,
            "recurrent": cfg.recurrent_weight,
            "vision_aux": cfg.vision_aux_weight,
        }
        total = sum(weights[name] * value for name, value in losses.items())
        assert isinstance(total, torch.Tensor)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(step) * group["scale"]
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        out = {name: float(value.detach()) for name, value in losses.items()}
        out["total"] = float(total.detach())
        out["grad_norm"] = float(norm)
        out["iterations"] = float(iterations)
        return out

    @torch.no_grad()
    def validate(self, iterations: int = 12, limit: int = 64) -> dict[str, float]:
        """Mean losses over (at most `limit`) held-out samples, recurrent head at `iterations`."""
        self.model.eval()
        index = self.validation_index[:limit]
        totals: dict[str, float] = {}
        generator = torch.Generator().manual_seed(1234)
        count = 0
        for start in range(0, len(index), self.config.batch_size):
            part = index[start : start + self.config.batch_size]
            losses = compute_losses(
                self.model,
                self.batch(part),
                self.mask,
                iterations=iterations,
                backprop_depth=iterations,
                generator=generator,
            )
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + float(value) * len(part)
            count += len(part)
        return {name: value / max(count, 1) for name, value in totals.items()}

    def save(self, directory: Path, report: TrainingReport) -> None:
        self.model.eval()
        save_model(self.model, directory)
        save_codebook(self.codebook, directory)
        report.write(directory)

    def run(
        self,
        out: Path,
        *,
        progress: Callable[[int, dict[str, float]], None] | None = None,
        previous: list[dict[str, Any]] | None = None,
    ) -> TrainingReport:
        cfg = self.config
        began = time.monotonic()
        report = TrainingReport(
            model=self.model.config.name,
            samples=len(self.data),
            episodes=len(np.unique(self.data.episode)),
            validation_samples=len(self.validation_index),
            steps=0,
            wall_s=0.0,
            config=asdict(cfg),
            codebook_usage=len(np.unique(self.codes)),
            previous=list(previous or []),
        )
        window: dict[str, list[float]] = {}
        end = min(cfg.stop_after, cfg.steps) if cfg.stop_after > 0 else cfg.steps
        for step in range(end):
            losses = self.step(step)
            for name, value in losses.items():
                window.setdefault(name, []).append(value)
            last = step + 1 == end
            if (step + 1) % cfg.log_every == 0 or last:
                entry = {name: float(np.mean(values)) for name, values in window.items()}
                entry["step"] = step + 1
                entry["lr"] = self.learning_rate(step)
                entry["elapsed_s"] = time.monotonic() - began
                report.history.append(entry)
                window = {}
                if progress is not None:
                    progress(step + 1, entry)
            if last or (cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0):
                report.steps = step + 1
                report.wall_s = time.monotonic() - began
                if last:
                    report.validation = self.validate()
                self.save(out, report)
        return report


def train_from_demos(
    demos: Path | list[Path],
    out: Path,
    config: TrainConfig,
    *,
    model_config: str = "tiny",
    embodiment: str = "so100",
    init: Path | None = None,
    reset_recurrent_head: bool = False,
    recurrent_core_layers: tuple[int, ...] | None = None,
    log: Callable[[str], None] = print,
) -> TrainingReport:
    """Fit the depth codebook on `demos`, behaviour-clone a model, write `out`.

    The model starts from random weights of `model_config`, or from the model directory `init`
    (its weights and its codebook: fine-tuning keeps the depth-token targets);
    `reset_recurrent_head` then gives the recurrent head fresh weights. `out` receives
    config.json + model.safetensors (loadable by `create_policy`), the codebook and
    training_report.json, every `checkpoint_every` steps and at the end.
    """
    from vla_runtime.policy.model.config import preset
    from vla_runtime.policy.model.weights import init_model, load_model
    from vla_runtime.policy.transforms import load_transform_config
    from vla_runtime.train.codebook import fit_codebook, load_codebook, quantize

    began = time.monotonic()
    previous: list[dict[str, Any]] = []
    sources = [demos] if isinstance(demos, Path) else list(demos)
    data = DemoData.concatenate([DemoData.load(d) for d in sources])
    log(
        f"{len(data)} samples from {len(np.unique(data.episode))} episodes in "
        f"{', '.join(str(d) for d in sources)}"
    )
    if init is not None:
        model = load_model(init).train()
        codebook = load_codebook(init)
        log(f"starting from {init}")
        if reset_recurrent_head and model.config.recurrent_head is not None:
            head_config = model.config.recurrent_head
            if recurrent_core_layers is not None:
                head_config = dataclasses.replace(head_config, core_layers=recurrent_core_layers)
            model.config = dataclasses.replace(model.config, recurrent_head=head_config)
            model.recurrent_head = init_model(model.config, seed=config.seed).recurrent_head
            log(
                f"recurrent head re-initialised (core reads VLM layers "
                f"{list(head_config.core_layers)}; the rest of the model kept)"
            )
        elif recurrent_core_layers is not None:
            raise ValueError("recurrent core layers can only change with a fresh recurrent head")
        if (init / REPORT_FILE).is_file():
            earlier = json.loads((init / REPORT_FILE).read_text())
            previous = [*earlier.pop("previous", []), earlier]
    else:
        model = init_model(preset(model_config), seed=config.seed).train()
        codebook = fit_codebook(data.depth_cells, model.config.depth_codes, seed=config.seed)
    codes = quantize(data.depth_cells, codebook)
    error = float(
        np.sqrt(
            np.mean((codebook[codes.astype(np.int64)] - data.depth_cells.astype(np.float32)) ** 2)
        )
    )
    log(
        f"depth codebook: {len(np.unique(codes))}/{len(codebook)} codes used, "
        f"rms quantisation error {error * 1000:.1f} mm ({time.monotonic() - began:.0f} s)"
    )
    transform = EmbodimentTransform(load_transform_config(embodiment))
    trainer = Trainer(model, transform, data, codes, codebook, config)

    def progress(step: int, entry: dict[str, float]) -> None:
        log(
            f"step {step:5d}/{config.steps}  total {entry['total']:.4f}  "
            f"depth {entry['depth']:.3f}"
            f"  flow {entry.get('flow', math.nan):.4f}  recurrent "
            f"{entry.get('recurrent', math.nan):.4f}  lr {entry['lr']:.2e}  "
            f"{entry['elapsed_s']:.0f} s"
        )

    out.mkdir(parents=True, exist_ok=True)
    report = trainer.run(out, progress=progress, previous=previous)
    log(f"validation: {json.dumps({k: round(v, 4) for k, v in report.validation.items()})}")
    return report
