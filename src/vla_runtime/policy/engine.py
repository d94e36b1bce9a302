"""The inference loops every model backend shares: prompt, depth schedule, heads, stopping.

A backend supplies a `ModelRunner` (the model's export units on its runtime: torch, onnxruntime)
and gets a full `Policy` from `ModelPolicy`. Keeping the loops here means the torch and ONNX
backends cannot drift apart in what they compute, only in how fast.

One `infer`:
1. transform: check the observation against the embodiment, order cameras, state -> bins;
2. vision: images -> visual tokens;  3. prefill: prompt -> per-layer KV cache;
4. depth (with a scene): decode only the changed cells, feed the cached codes of the unchanged
   runs in one forward each (`depth_schedule`);
5. action head: flow (N Euler steps) or recurrent (iterate until converged, max, or deadline);
6. transform: un-normalise, drop padding -> absolute joint targets.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from vla_runtime.policy.interface import (
    DepthScene,
    Observation,
    Policy,
    PolicyError,
    PolicyOutput,
    PolicyTrace,
)
from vla_runtime.policy.model.config import ModelConfig
from vla_runtime.policy.model.tokenizer import PromptTokenizer
from vla_runtime.policy.preprocess import to_pixels
from vla_runtime.policy.stopping import IterationCostEstimator, StopRule, chunk_change
from vla_runtime.policy.transforms import EmbodimentTransform

HEADS = ("flow", "recurrent")


class ModelRunner(Protocol):
    """A model's export units on one runtime. Opaque values stay on the runtime's device.

    The runner holds the KV cache of the current query: `prefill` starts it, `extend` appends.
    """

    config: ModelConfig

    def encode_images(self, pixels: npt.NDArray[np.float32]) -> Any: ...

    def prefill(self, tokens: npt.NDArray[np.int64], visual: Any) -> npt.NDArray[np.float32]:
        """Start the cache with the prompt; logits of its last position (vocab,)."""

    def extend(self, tokens: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """Append tokens to the cache; logits of the last one (vocab,)."""

    def flow_prepare(self) -> Any: ...

    def flow_step(self, prepared: Any, x: Any, t: float, dt: float) -> Any:
        """x + dt * velocity(x, t), padded action dims zeroed."""

    def recurrent_prepare(self) -> Any: ...

    def recurrent_iterate(self, prepared: Any, state: Any) -> tuple[Any, npt.NDArray[np.float32]]:
        """One core iteration: (new state, decoded chunk (queries, action_width))."""

    def to_device(self, array: npt.NDArray[np.float32]) -> Any: ...

    def to_numpy(self, value: Any) -> npt.NDArray[np.float32]: ...

    def set_action_mask(self, mask: npt.NDArray[np.bool_]) -> None: ...

    def synchronize(self) -> None: ...


@dataclass(frozen=True)
class PolicyOptions:
    """How a model policy runs (not what the model is).

    Attributes:
        head: 'flow' or 'recurrent'.
        flow_steps: Euler steps of the flow head (MolmoAct2: 10).
        stop: the recurrent head's stopping rule.
        depth: reason over MolmoThink depth tokens (observations without a scene get a full
            refresh).
        seed: seed of the noise / initial-state stream; reset() restarts it.
    """

    head: str = "flow"
    flow_steps: int = 10
    stop: StopRule = field(default_factory=StopRule)
    depth: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.flow_steps < 1:
            raise ValueError("flow_steps must be >= 1")


def depth_schedule(changed: npt.NDArray[np.bool_]) -> list[tuple[int, int, bool]]:
    """Contiguous runs (start, stop, changed) of the row-major 100-cell mask."""
    flat = np.asarray(changed, dtype=bool).reshape(-1)
    runs: list[tuple[int, int, bool]] = []
    start = 0
    for index in range(1, flat.size + 1):
        if index == flat.size or flat[index] != flat[start]:
            runs.append((start, index, bool(flat[start])))
            start = index
    return runs


def truncated_normal(
    rng: np.random.Generator, shape: tuple[int, ...], std: float
) -> npt.NDArray[np.float32]:
    """Normal(0, std) cut at +-3 std by resampling."""
    values = rng.standard_normal(shape)
    outside = np.abs(values) > 3.0
    while outside.any():
        values[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(values) > 3.0
    return (values * std).astype(np.float32)


class ModelPolicy(Policy):
    """A `Policy` over any `ModelRunner`."""

    def __init__(
        self,
        runner: ModelRunner,
        transform: EmbodimentTransform,
        options: PolicyOptions,
        *,
        initial_state_std: float = 0.632,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        config = runner.config
        if options.head not in config.heads:
            raise PolicyError(
                f"model {config.name!r} has no {options.head} head (it has: "
                f"{', '.join(config.heads)}); pick --head {config.heads[0]}"
            )
        horizon = self._horizon(config, options.head)
        if transform.config.chunk_rows > horizon:
            raise PolicyError(
                f"embodiment {transform.config.embodiment!r} wants {transform.config.chunk_rows}"
                f"-row chunks; the {options.head} head of {config.name!r} makes {horizon}"
            )
        self.runner = runner
        self.transform = transform
        self.options = options
        self.tokenizer = PromptTokenizer(config.state_bins, config.depth_codes)
        self.initial_state_std = initial_state_std
        self.iteration_cost = IterationCostEstimator()
        self._clock = clock  # seconds, monotonic; injectable so tests can script time
        self._mask = transform.action_mask()
        runner.set_action_mask(self._mask)
        self._rng = np.random.default_rng(options.seed)

    @staticmethod
    def _horizon(config: ModelConfig, head: str) -> int:
        if head == "recurrent" and config.recurrent_head is not None:
            return config.recurrent_head.queries
        return config.max_horizon

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.transform.config.joint_names

    @property
    def camera_names(self) -> tuple[str, ...]:
        return self.transform.config.cameras

    @property
    def chunk_rate_hz(self) -> float:
        return self.transform.config.chunk_rate_hz

    @property
    def uses_depth(self) -> bool:
        return self.options.depth

    def reset(self) -> None:
        self._rng = np.random.default_rng(self.options.seed)

    def infer(
        self, observation: Observation, *, time_budget_s: float | None = None
    ) -> PolicyOutput:
        start = self._clock()
        trace = PolicyTrace()
        transform = self.transform
        transform.check_observation(
            observation.images, observation.joint_names, observation.joint_positions
        )
        runner = self.runner
        cfg = runner.config
        try:
            pixels = to_pixels(transform.ordered_images(observation.images), cfg.vision.image_size)
            task, setup, control = transform.prompt_fields(observation.prompt or None)
            tokens = self.tokenizer.prompt(
                images=len(self.camera_names),
                tokens_per_image=cfg.vision.tokens_per_image,
                task=task,
                setup=setup,
                control=control,
                state_bins=transform.state_tokens(observation.joint_positions),
                depth=self.options.depth,
            )
            trace.prompt_tokens = int(tokens.size)
            mark = self._clock()
            visual = runner.encode_images(pixels)
            runner.synchronize()
            trace.vision_ms, mark = self._lap(mark)
            logits = runner.prefill(tokens, visual)
            trace.prefill_ms, mark = self._lap(mark)
            depth_codes, depth_stamp_ns = None, 0
            if self.options.depth:
                scene = observation.scene or DepthScene.full_refresh(observation.stamp_ns)
                depth_codes = self._decode_depth(logits, scene, trace)
                depth_stamp_ns = scene.stamp_ns
                trace.depth_ms, mark = self._lap(mark)
            if self.options.head == "flow":
                normalized = self._flow(trace)
            else:
                normalized = self._recurrent(trace, start, time_budget_s)
            trace.action_ms, mark = self._lap(mark)
        except PolicyError:
            raise
        except (RuntimeError, ValueError) as exc:
            raise PolicyError(f"inference failed: {exc}") from exc
        if not np.all(np.isfinite(normalized)):
            raise PolicyError("the model produced non-finite actions; nothing published")
        actions = transform.decode_actions(normalized)
        trace.total_ms = (self._clock() - start) * 1e3
        return PolicyOutput(
            actions=actions,
            joint_names=self.joint_names,
            chunk_rate_hz=self.chunk_rate_hz,
            stamp_ns=observation.stamp_ns,
            depth_codes=depth_codes,
            trace=trace,
            depth_stamp_ns=depth_stamp_ns,
        )

    def _lap(self, mark: float) -> tuple[float, float]:
        now = self._clock()
        return (now - mark) * 1e3, now

    def _decode_depth(
        self, logits: npt.NDArray[np.float32], scene: DepthScene, trace: PolicyTrace
    ) -> npt.NDArray[np.uint8]:
        tok = self.tokenizer
        codes = scene.codes.reshape(-1).astype(np.int64)
        lo, hi = tok.depth_start, tok.depth_start + tok.depth_codes
        pending: list[int] = []
        forwards = 0
        for begin, end, changed in depth_schedule(scene.changed):
            if not changed:
                pending.extend(tok.depth_token(int(c)) for c in codes[begin:end])
                continue
            for cell in range(begin, end):
                if pending:
                    logits = self.runner.extend(np.asarray(pending, np.int64))
                    forwards += 1
                codes[cell] = int(np.argmax(logits[lo:hi]))
                pending = [tok.depth_token(int(codes[cell]))]
        pending.extend(int(t) for t in tok.after_depth())
        self.runner.extend(np.asarray(pending, np.int64))
        trace.depth_forwards = forwards + 1
        trace.changed_cells = int(np.count_nonzero(scene.changed))
        grid = scene.codes.shape
        return codes.reshape(grid).astype(np.uint8)

    def _flow(self, trace: PolicyTrace) -> npt.NDArray[np.float32]:
        runner = self.runner
        cfg = runner.config
        steps = self.options.flow_steps
        prepared = runner.flow_prepare()
        noise = self._rng.standard_normal((1, cfg.max_horizon, cfg.action_width))
        x = runner.to_device((noise * self._mask).astype(np.float32))
        dt = 1.0 / steps
        for step in range(steps):
            x = runner.flow_step(prepared, x, step * dt, dt)
        trace.iterations = steps
        trace.stop_reason = "steps"
        chunk: npt.NDArray[np.float32] = runner.to_numpy(x)[0]
        return chunk

    def _recurrent(
        self, trace: PolicyTrace, start: float, budget_s: float | None
    ) -> npt.NDArray[np.float32]:
        runner = self.runner
        head = runner.config.recurrent_head
        assert head is not None
        rule = self.options.stop
        prepared = runner.recurrent_prepare()
        state = runner.to_device(
            truncated_normal(self._rng, (1, head.queries, head.width), self.initial_state_std)
        )
        previous: npt.NDArray[np.float32] | None = None
        iterations = 0
        residual = math.nan
        while True:
            began = self._clock()
            state, chunk = runner.recurrent_iterate(prepared, state)
            now = self._clock()
            self.iteration_cost.update(now - began)
            iterations += 1
            current = chunk.reshape(head.queries, -1)
            residual = chunk_change(previous, current, self._mask)
            previous = current
            reason = rule.decide(
                iterations, residual, now - start, budget_s, self.iteration_cost.estimate_s()
            )
            if reason is not None:
                break
        trace.iterations = iterations
        trace.residual = residual
        trace.stop_reason = reason
        return previous
