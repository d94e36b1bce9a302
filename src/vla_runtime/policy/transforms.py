"""Per-embodiment policy transforms: robot joints and cameras in, model-space arrays out, and back.

What differs between robots for a MolmoAct2-style policy is data in the `policy:` subtree of
`config/embodiments/<name>.yaml` [molmoact2.md §1.1, §1.2, §4.1]: the checkpoint's `norm_tag`,
camera order, chunk horizon and rate, prompt strings, quantile statistics, the joint convention
and which joints are normalised. `EmbodimentTransform` applies it, numpy only:

    model = sign × scale × robot + offset                 (joint convention, per joint)
    state = clip(2 (model − q01) / (q99 − q01) − 1, −1, 1) (normalised joints)
    state = clip(model, −1, 1)                            (not normalised: YAM/DROID grippers)
    token = rint((state + 1) / 2 × (bins − 1))            (MolmoAct2's discrete state tokens)

and decodes actions with the inverse of the first two lines (no clipping: the driver's safety
envelope owns the limits). Statistics are in model units, i.e. after the joint convention.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vla_runtime.drivers.parameters import did_you_mean
from vla_runtime.policy.interface import PolicyError
from vla_runtime.resources import resolve
from vla_runtime.ros.zenoh.arguments import RosArgumentError, load_params_file

__all__ = [
    "EmbodimentTransform", "TransformConfig", "TransformConfigError", "load_transform_config",
]  # fmt: skip

FloatArray = npt.NDArray[np.float64]

# `policy.*` keys: required ones, and how each is read from a ROS parameter value.
_REQUIRED = (
    "norm_tag", "cameras", "chunk_rate_hz", "chunk_rows", "prompt", "setup", "control_mode",
    "state_q01", "state_q99", "action_q01", "action_q99",
)  # fmt: skip
_FLOATS = (
    "state_q01", "state_q99", "action_q01", "action_q99",
    "joint_signs", "joint_offsets", "joint_scales",
)  # fmt: skip


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be an integer, got {value!r}")
    return value


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "cameras": lambda value: tuple(str(v) for v in value),
    "chunk_rate_hz": float,
    "chunk_rows": _whole,
    "normalize": lambda value: tuple(bool(v) for v in value),
    **dict.fromkeys(("norm_tag", "prompt", "setup", "control_mode"), str),
    **dict.fromkeys(_FLOATS, lambda value: tuple(float(v) for v in value)),
}


class TransformConfigError(ValueError):
    """A `policy:` configuration that cannot drive a model (message says what to change, where)."""


def _file(embodiment: str) -> str:
    return f"config/embodiments/{embodiment or '<name>'}.yaml"


@dataclass(frozen=True)
class TransformConfig:
    """One embodiment's policy-side description (the `policy:` subtree of its parameter file).

    Attributes:
        embodiment: registry key, e.g. 'so100'.
        norm_tag: the checkpoint's statistics key, e.g. 'so100_so101_molmoact2'.
        joint_names: the robot's joints, in command order (top-level `joint_names`).
        cameras: camera names in the order the model sees them ("Image 1", "Image 2", ...).
        chunk_rate_hz: rate of the action chunk's rows.
        chunk_rows: rows of a chunk the robot executes (the checkpoint's horizon).
        prompt: default task instruction when an observation carries none.
        setup: robot description for `<setup_start>…<setup_end>`; must match training exactly.
        control_mode: string for `<control_start>…<control_end>`, e.g. 'absolute joint pose'.
        state_q01, state_q99, action_q01, action_q99: per-joint 1st/99th percentiles in model
            units; ignored for joints with `normalize` False.
        joint_signs: +1 or −1 per joint; empty = all +1.
        joint_offsets: per joint, in model units; empty = all 0.
        joint_scales: > 0 per joint, model units per robot unit (e.g. 1 / gripper stroke [1/m]
            for a 0..1 aperture); empty = all 1.
        normalize: per joint; False = passed to the model un-normalised; empty = all True.
    """

    embodiment: str
    norm_tag: str
    joint_names: tuple[str, ...]
    cameras: tuple[str, ...]
    chunk_rate_hz: float
    chunk_rows: int
    prompt: str
    setup: str
    control_mode: str
    state_q01: tuple[float, ...]
    state_q99: tuple[float, ...]
    action_q01: tuple[float, ...]
    action_q99: tuple[float, ...]
    joint_signs: tuple[float, ...] = ()
    joint_offsets: tuple[float, ...] = ()
    normalize: tuple[bool, ...] = ()
    joint_scales: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        where = _file(self.embodiment)
        n = len(self.joint_names)
        if n == 0 or len(set(self.joint_names)) != n:
            raise TransformConfigError(f"joint_names in {where} must be non-empty and unique")
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise TransformConfigError(
                f"policy.cameras in {where} must list each camera once, got {list(self.cameras)}"
            )
        if not self.norm_tag:
            raise TransformConfigError(f"policy.norm_tag in {where} is empty")
        if not (math.isfinite(self.chunk_rate_hz) and self.chunk_rate_hz > 0):
            raise TransformConfigError(f"policy.chunk_rate_hz in {where} must be > 0 Hz")
        if self.chunk_rows < 1:
            raise TransformConfigError(f"policy.chunk_rows in {where} must be >= 1")
        # Empty optional conventions mean identity (frozen: set once, here).
        for name, default in (("joint_signs", 1.0), ("joint_offsets", 0.0),
                              ("joint_scales", 1.0), ("normalize", True)):  # fmt: skip
            if not getattr(self, name):
                object.__setattr__(self, name, (default,) * n)
        for name in (*_FLOATS, "normalize"):
            values = getattr(self, name)
            if len(values) != n:
                raise TransformConfigError(
                    f"policy.{name} in {where} has {len(values)} values for {n} joints "
                    f"{list(self.joint_names)}; give one per joint"
                )
            if not all(math.isfinite(v) for v in values):
                raise TransformConfigError(f"policy.{name} in {where} has a non-finite value")
        for joint, sign, scale in zip(
            self.joint_names, self.joint_signs, self.joint_scales, strict=True
        ):
            if sign not in (1.0, -1.0) or not scale > 0.0:
                raise TransformConfigError(
                    f"{joint} in {where}: policy.joint_signs must be 1.0 or -1.0 (got {sign}), "
                    f"policy.joint_scales > 0 (got {scale})"
                )
        for kind in ("state", "action"):
            low, high = getattr(self, f"{kind}_q01"), getattr(self, f"{kind}_q99")
            for joint, lo, hi, norm in zip(
                self.joint_names, low, high, self.normalize, strict=True
            ):
                if norm and not hi > lo:
                    raise TransformConfigError(
                        f"policy.{kind}_q99 must exceed policy.{kind}_q01 for joint {joint} in "
                        f"{where} (got q01 {lo}, q99 {hi}); fix the statistics or set its "
                        "policy.normalize entry to false"
                    )

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> TransformConfig:
        """Build from flat ROS parameters (`embodiment`, `joint_names`, `policy.cameras`, ...)."""
        embodiment = str(parameters.get("embodiment", ""))
        where = _file(embodiment)
        for key in ("embodiment", "joint_names", *(f"policy.{k}" for k in _REQUIRED)):
            if key not in parameters:
                raise TransformConfigError(
                    f"missing parameter {key!r}; add it to {where} (the `policy:` subtree "
                    "holds the checkpoint's norm_tag, cameras, statistics and prompt strings)"
                )
        joint_names = parameters["joint_names"]
        if isinstance(joint_names, str) or not isinstance(joint_names, Sequence):
            raise TransformConfigError(f"joint_names in {where} must be a list of names")
        kwargs: dict[str, Any] = {
            "embodiment": embodiment,
            "joint_names": tuple(str(name) for name in joint_names),
        }
        for key, value in parameters.items():
            if not key.startswith("policy."):
                continue
            name = key[len("policy.") :]
            if name not in _CONVERT:
                raise TransformConfigError(
                    f"unknown parameter {key!r} in {where}."
                    + did_you_mean(key, [f"policy.{k}" for k in _CONVERT])
                )
            try:
                kwargs[name] = _CONVERT[name](value)
            except (TypeError, ValueError) as exc:
                raise TransformConfigError(f"{key} in {where}: {exc}") from None
        return cls(**kwargs)


def load_transform_config(name_or_path: str) -> TransformConfig:
    """The transform config of embodiment `name_or_path` ('so100') or of a parameter file path."""
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix in (".yaml", ".yml") or len(candidate.parts) > 1:
        path = candidate
    else:
        try:
            path = resolve("config", f"embodiments/{name_or_path}.yaml")
        except FileNotFoundError as exc:
            raise TransformConfigError(str(exc)) from exc
        if not path.is_file():
            known = _known_embodiments(path.parent)
            raise TransformConfigError(
                f"unknown embodiment {name_or_path!r}; known: {', '.join(known) or 'none'} "
                f"(files in {path.parent})." + did_you_mean(name_or_path, known)
            )
    if not path.is_file():
        raise TransformConfigError(f"no parameter file {path}")
    try:
        parameters = load_params_file(str(path), "/policy")
    except RosArgumentError as exc:
        raise TransformConfigError(str(exc)) from exc
    return TransformConfig.from_parameters(parameters)


def _known_embodiments(folder: Path) -> list[str]:
    """Files in `folder` that describe an embodiment of their own name (not so100_leader)."""
    known = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            if load_params_file(str(path), "/policy").get("embodiment") == path.stem:
                known.append(path.stem)
        except RosArgumentError:
            continue
    return known


class EmbodimentTransform:
    """Applies one `TransformConfig`: checks observations, normalises state, decodes chunks."""

    def __init__(
        self,
        config: TransformConfig,
        *,
        action_width: int = 32,
        max_rows: int = 30,
        state_bins: int = 256,
    ) -> None:
        """Check that `config` fits the model.

        Args:
            config: the embodiment's transform config.
            action_width: the model's padded action dims (MolmoAct2: 32).
            max_rows: the model's longest chunk (MolmoAct2: 30).
            state_bins: discrete state tokens per dimension (MolmoAct2: 256).
        """
        where = _file(config.embodiment)
        n = len(config.joint_names)
        if state_bins < 2:
            raise TransformConfigError(f"state_bins must be >= 2, got {state_bins}")
        if n > action_width:
            raise TransformConfigError(
                f"{config.embodiment} has {n} joints but the model's action_width is "
                f"{action_width}; use a model with at least {n} action dims"
            )
        if config.chunk_rows > max_rows:
            raise TransformConfigError(
                f"policy.chunk_rows {config.chunk_rows} in {where} exceeds the model's horizon "
                f"of {max_rows} rows (max_rows); lower policy.chunk_rows or use a longer model"
            )
        self._config = config
        self._action_width = action_width
        self._max_rows = max_rows
        self._state_bins = state_bins
        self._gain = np.multiply(config.joint_signs, config.joint_scales, dtype=np.float64)
        self._offset = np.asarray(config.joint_offsets, np.float64)
        # A joint that is not normalised gets q01 −1, q99 +1: the affine maps become identities.
        mask = np.asarray(config.normalize, np.bool_)
        self._state_q01: FloatArray = np.where(mask, config.state_q01, -1.0)
        self._state_span: FloatArray = np.where(mask, config.state_q99, 1.0) - self._state_q01
        self._action_q01: FloatArray = np.where(mask, config.action_q01, -1.0)
        self._action_span: FloatArray = np.where(mask, config.action_q99, 1.0) - self._action_q01

    @property
    def config(self) -> TransformConfig:
        return self._config

    @property
    def action_width(self) -> int:
        return self._action_width

    @property
    def max_rows(self) -> int:
        return self._max_rows

    @property
    def state_bins(self) -> int:
        return self._state_bins

    def check_observation(
        self,
        images: Mapping[str, npt.NDArray[np.uint8]],
        joint_names: Sequence[str],
        joint_positions: npt.NDArray[np.float64],
    ) -> None:
        """Raise PolicyError, saying what to change, if the observation does not fit."""
        cfg = self._config
        for name, image in zip(cfg.cameras, self.ordered_images(images), strict=True):
            shape: tuple[int, ...] = getattr(image, "shape", ())
            dtype = getattr(image, "dtype", type(image))
            if dtype != np.uint8 or len(shape) != 3 or shape[2] != 3 or 0 in shape:
                raise PolicyError(
                    f"camera {name!r}: expected an HxWx3 uint8 RGB image, got {shape} {dtype}"
                )
        if tuple(joint_names) != cfg.joint_names:
            hint = (
                "same joints in another order; reorder the joint state"
                if sorted(joint_names) == sorted(cfg.joint_names)
                else "wrong embodiment or parameter file?"
            )
            raise PolicyError(
                f"observation has {len(joint_names)} joints {list(joint_names)}, {cfg.embodiment} "
                f"expects {len(cfg.joint_names)} {list(cfg.joint_names)} ({hint})"
            )
        self._joint_vector(joint_positions)

    def ordered_images(
        self, images: Mapping[str, npt.NDArray[np.uint8]]
    ) -> list[npt.NDArray[np.uint8]]:
        """The configured cameras' images in model order (extra cameras are dropped)."""
        cfg = self._config
        missing = [name for name in cfg.cameras if name not in images]
        if missing:
            raise PolicyError(
                f"missing camera(s) {missing}: {cfg.embodiment} expects {list(cfg.cameras)}, got "
                f"{sorted(images)}; remap the camera topics or edit policy.cameras in "
                f"{_file(cfg.embodiment)}"
            )
        return [images[name] for name in cfg.cameras]

    def normalize_state(self, joint_positions: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """(joints,) robot units → (joints,) float32 in [−1, 1], saturated outside q01..q99.

        Joints with `normalize` False are passed through in model units and clipped to [−1, 1]
        (a YAM gripper's 0..1 aperture stays 0..1).
        """
        model = self._gain * self._joint_vector(joint_positions) + self._offset
        state = 2.0 * (model - self._state_q01) / self._state_span - 1.0
        return np.clip(state, -1.0, 1.0).astype(np.float32)

    def state_tokens(self, joint_positions: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """(joints,) robot units → bins 0..state_bins−1 (−1 → 0, 0 → bins/2, +1 → last)."""
        state = self.normalize_state(joint_positions).astype(np.float64)
        tokens = np.rint((state + 1.0) / 2.0 * (self._state_bins - 1)).astype(np.int64)
        return np.clip(tokens, 0, self._state_bins - 1)

    def decode_actions(self, normalized: npt.ArrayLike) -> FloatArray:
        """(rows >= chunk_rows, action_width) model output → (chunk_rows, joints) robot targets.

        Only the first chunk_rows rows and the embodiment's columns are read (the rest is
        padding); those must be finite. Values are not clipped.
        """
        array = np.asarray(normalized)
        rows, n = self._config.chunk_rows, len(self._config.joint_names)
        if array.ndim != 2 or array.shape[0] < rows or array.shape[1] != self._action_width:
            raise PolicyError(
                f"model actions have shape {array.shape}, expected (>= {rows}, "
                f"{self._action_width})"
            )
        used = array[:rows, :n].astype(np.float64)
        if not np.isfinite(used).all():
            row, col = np.argwhere(~np.isfinite(used))[0]
            raise PolicyError(
                f"non-finite model action at row {row}, joint {self._config.joint_names[col]}"
            )
        model = (used + 1.0) / 2.0 * self._action_span + self._action_q01
        robot: FloatArray = (model - self._offset) / self._gain
        return robot

    def encode_actions(self, actions: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """(rows, joints) robot targets → (rows, action_width) normalised, zero padded."""
        array = np.asarray(actions, dtype=np.float64)
        n = len(self._config.joint_names)
        if array.ndim != 2 or array.shape[1] != n:
            raise PolicyError(f"actions have shape {array.shape}, expected (rows, {n})")
        if not np.isfinite(array).all():
            raise PolicyError("actions contain non-finite values")
        model = self._gain * array + self._offset
        out = np.zeros((array.shape[0], self._action_width), np.float32)
        out[:, :n] = 2.0 * (model - self._action_q01) / self._action_span - 1.0
        return out

    def action_mask(self) -> npt.NDArray[np.bool_]:
        """(action_width,) True for the embodiment's dims, False for padding."""
        mask = np.zeros(self._action_width, np.bool_)
        mask[: len(self._config.joint_names)] = True
        return mask

    def prompt_fields(self, task: str | None) -> tuple[str, str, str]:
        """(instruction, setup, control mode); the configured prompt when `task` is empty."""
        instruction = task if task and task.strip() else self._config.prompt
        if not instruction.strip():
            raise PolicyError(
                f"no task instruction: pass one with the observation or set policy.prompt in "
                f"{_file(self._config.embodiment)}"
            )
        return instruction, self._config.setup, self._config.control_mode

    def _joint_vector(self, joint_positions: npt.ArrayLike) -> FloatArray:
        vector = np.asarray(joint_positions, dtype=np.float64)
        names = self._config.joint_names
        if vector.shape != (len(names),):
            raise PolicyError(
                f"joint_positions has shape {vector.shape}, expected ({len(names)},)"
            )
        if not np.isfinite(vector).all():
            bad = [name for name, ok in zip(names, np.isfinite(vector), strict=True) if not ok]
            raise PolicyError(f"non-finite joint positions for {bad}; check the joint state")
        return vector
