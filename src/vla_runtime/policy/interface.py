"""The policy interface: an observation in, an action chunk plus a timing trace out.

Every backend (reference torch model, onnxruntime, later remote servers) implements `Policy`;
nodes and benchmarks only see this module. Arrays are numpy, in the embodiment's units: joint
positions in joint-name order [rad or m], images HxWx3 uint8 RGB.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

DEPTH_GRID = 10
"""MolmoThink's depth tokens: a 10x10 grid over the first camera."""
DEPTH_CODES = 128
"""Size of the depth VQ-VAE codebook."""


class PolicyError(RuntimeError):
    """Inference failed for this observation (bad input, non-finite output, backend error)."""


@dataclass(frozen=True)
class DepthScene:
    """MolmoThink's cached depth codes and which cells changed since they were predicted.

    Attributes:
        codes: (10, 10) uint8 codes 0..127 from the cache.
        changed: (10, 10) bool; True = re-predict this cell.
        stamp_ns: capture time of the frame the mask was computed on.
    """

    codes: npt.NDArray[np.uint8]
    changed: npt.NDArray[np.bool_]
    stamp_ns: int = 0

    def __post_init__(self) -> None:
        shape = (DEPTH_GRID, DEPTH_GRID)
        if self.codes.shape != shape or self.changed.shape != shape:
            raise PolicyError(
                f"depth scene must be {DEPTH_GRID}x{DEPTH_GRID}, got codes {self.codes.shape} "
                f"and mask {self.changed.shape}"
            )
        if self.codes.size and int(self.codes.max()) >= DEPTH_CODES:
            raise PolicyError(f"depth codes must be < {DEPTH_CODES}, got {int(self.codes.max())}")

    @classmethod
    def full_refresh(cls, stamp_ns: int = 0) -> DepthScene:
        """No cache yet: every cell is decoded."""
        return cls(
            codes=np.zeros((DEPTH_GRID, DEPTH_GRID), np.uint8),
            changed=np.ones((DEPTH_GRID, DEPTH_GRID), np.bool_),
            stamp_ns=stamp_ns,
        )

    @property
    def changed_fraction(self) -> float:
        return float(self.changed.mean())


@dataclass(frozen=True)
class Observation:
    """One synchronised observation.

    Attributes:
        images: camera name -> HxWx3 uint8 RGB; any order (the transform orders them).
        joint_positions: measured joint state in `joint_names` order.
        joint_names: names of `joint_positions`' entries.
        prompt: the task instruction.
        stamp_ns: capture time the answer is stamped with (the oldest camera frame).
        scene: MolmoThink scene; None = no depth reasoning for this step.
    """

    images: Mapping[str, npt.NDArray[np.uint8]]
    joint_positions: npt.NDArray[np.float64]
    joint_names: tuple[str, ...]
    prompt: str = ""
    stamp_ns: int = 0
    scene: DepthScene | None = None


@dataclass
class PolicyTrace:
    """Where the time of one inference went, and what the adaptive parts decided.

    Stage times are wall-clock milliseconds on the monotonic clock; a stage that did not run
    stays 0. `iterations` counts flow Euler steps or recurrent-core iterations.
    """

    vision_ms: float = 0.0
    prefill_ms: float = 0.0
    depth_ms: float = 0.0
    action_ms: float = 0.0
    total_ms: float = 0.0
    iterations: int = 0
    residual: float = float("nan")
    stop_reason: str = ""
    changed_cells: int = 0
    depth_forwards: int = 0
    prompt_tokens: int = 0

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "vision_ms": self.vision_ms,
            "prefill_ms": self.prefill_ms,
            "depth_ms": self.depth_ms,
            "action_ms": self.action_ms,
            "total_ms": self.total_ms,
            "iterations": self.iterations,
            "residual": self.residual,
            "stop_reason": self.stop_reason,
            "changed_cells": self.changed_cells,
            "depth_forwards": self.depth_forwards,
            "prompt_tokens": self.prompt_tokens,
        }


@dataclass
class PolicyOutput:
    """An action chunk answering one observation.

    Attributes:
        actions: (rows, joints) absolute joint targets in `joint_names` order.
        joint_names: column names (the embodiment's joints).
        chunk_rate_hz: row i is meant for stamp + i / chunk_rate_hz.
        stamp_ns: the observation's capture time.
        depth_codes: (10, 10) uint8 predicted depth grid when depth reasoning ran, else None.
        depth_stamp_ns: capture stamp of the frame the depth grid answers (the scene's stamp:
            the primary camera's frame), 0 when no depth reasoning ran.
        trace: per-stage timings and adaptive-compute decisions.
    """

    actions: npt.NDArray[np.float64]
    joint_names: tuple[str, ...]
    chunk_rate_hz: float
    stamp_ns: int
    depth_codes: npt.NDArray[np.uint8] | None = None
    trace: PolicyTrace = field(default_factory=PolicyTrace)
    depth_stamp_ns: int = 0


class Policy(abc.ABC):
    """A VLA policy: `reset()` between episodes, `infer()` per observation."""

    @property
    @abc.abstractmethod
    def joint_names(self) -> tuple[str, ...]:
        """The embodiment's joints, in the order of the chunk's columns."""

    @property
    @abc.abstractmethod
    def camera_names(self) -> tuple[str, ...]:
        """Cameras an observation must hold, in the model's order."""

    @property
    @abc.abstractmethod
    def chunk_rate_hz(self) -> float:
        """Rate of the chunk's rows."""

    @property
    def uses_depth(self) -> bool:
        """True when the model reasons over MolmoThink depth tokens."""
        return False

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget per-episode state (random streams, warm starts, running cost estimates)."""

    @abc.abstractmethod
    def infer(
        self, observation: Observation, *, time_budget_s: float | None = None
    ) -> PolicyOutput:
        """One action chunk for `observation`.

        Args:
            observation: the synchronised inputs.
            time_budget_s: wall time the action head may still use (anytime heads stop early);
                None = no deadline.

        Raises:
            PolicyError: bad input or a non-finite result; nothing is returned for this step.
        """
