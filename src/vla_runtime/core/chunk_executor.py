"""Executing action chunks on a fixed-rate control loop (DESIGN §4).

A chunk answers one observation: row i is the joint target for `capture stamp + times_s[i]`.
At each control tick the executor returns the target for *now*: a new chunk is entered at the
row matching `now − capture stamp` (latency compensation, never row 0), rows are interpolated
(linear or cubic Hermite), and the join with the chunk in flight is blended (replace,
cross-fade over N rows, or ACT-style temporal ensembling). Chunks that cannot be executed are
rejected with a reason and counted: stale (every row in the past), NaN/Inf, wrong joint count or
names, out-of-limit targets, bad row times, capture stamps from the future.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
_NS = 1e9


class Interpolation(str, enum.Enum):
    LINEAR = "linear"
    CUBIC = "cubic"  # C1 Hermite through the rows, tangents from neighbouring rows


class Blend(str, enum.Enum):
    REPLACE = "replace"  # the new chunk takes over at once (the envelope limits the step)
    CROSSFADE = "crossfade"  # the new chunk fades in over `crossfade_rows` rows
    ENSEMBLE = "ensemble"  # weighted mean of every chunk that covers now (ACT)


@dataclass(frozen=True)
class ChunkExecutorConfig:
    """How chunks are entered, interpolated and joined.

    Attributes:
        interpolation: between rows; cubic is smoother for 15-30 Hz chunks at 100+ Hz.
        blend: how a new chunk joins the one in flight.
        crossfade_rows: rows of the *new* chunk over which it fades in (crossfade only).
        ensemble_decay: ACT's m in w_i = exp(-m·i), i = 0 for the oldest chunk (ensemble only).
        max_future_s: a capture stamp this far ahead of our clock is a clock error: rejected.
        limit_tolerance: targets may exceed the joint limits by this much [rad or m] before the
            chunk is rejected; within it they are clipped by the envelope.
    """

    interpolation: Interpolation = Interpolation.CUBIC
    blend: Blend = Blend.CROSSFADE
    crossfade_rows: int = 5
    ensemble_decay: float = 0.01
    max_future_s: float = 0.5
    limit_tolerance: float = 0.02

    def __post_init__(self) -> None:
        object.__setattr__(self, "interpolation", Interpolation(self.interpolation))
        object.__setattr__(self, "blend", Blend(self.blend))
        if self.crossfade_rows < 1:
            raise ValueError(f"crossfade_rows must be >= 1, got {self.crossfade_rows}")
        if self.ensemble_decay < 0:
            raise ValueError(f"ensemble_decay must be >= 0, got {self.ensemble_decay}")
        if self.max_future_s < 0 or self.limit_tolerance < 0:
            raise ValueError("max_future_s and limit_tolerance must be >= 0")


@dataclass(frozen=True)
class ActionChunk:
    """Absolute joint targets answering the observation captured at `capture_stamp_ns`.

    Attributes:
        positions: (rows, joints) targets [rad or m], in `joint_names` order.
        times_s: (rows,) time of each row after the capture stamp, strictly increasing, >= 0.
        capture_stamp_ns: the observation's capture time [ns, system clock].
        joint_names: joint order of the columns.
    """

    positions: FloatArray
    times_s: FloatArray
    capture_stamp_ns: int
    joint_names: tuple[str, ...]

    @classmethod
    def uniform(
        cls,
        positions: FloatArray,
        rate_hz: float,
        capture_stamp_ns: int,
        joint_names: tuple[str, ...],
    ) -> ActionChunk:
        """Rows at i / rate_hz, as the MolmoAct2 policies emit them."""
        rows = np.asarray(positions, dtype=np.float64)
        return cls(
            rows, np.arange(len(rows), dtype=np.float64) / rate_hz, capture_stamp_ns, joint_names
        )

    def reordered(self, joint_names: tuple[str, ...]) -> ActionChunk:
        """The same chunk with its columns in `joint_names` order (same joint set)."""
        index = [self.joint_names.index(name) for name in joint_names]
        return ActionChunk(
            self.positions[:, index], self.times_s, self.capture_stamp_ns, joint_names
        )

    @property
    def end_s(self) -> float:
        return float(self.times_s[-1])

    def sample(self, t_s: float, interpolation: Interpolation) -> FloatArray | None:
        """Target at `t_s` after the capture; None past the last row."""
        times = self.times_s
        if t_s > times[-1]:
            return None
        if t_s <= times[0] or len(times) == 1:
            first: FloatArray = self.positions[0].copy()
            return first
        k = int(np.searchsorted(times, t_s, side="right")) - 1
        k = min(k, len(times) - 2)
        t0, t1 = times[k], times[k + 1]
        h = t1 - t0
        u = (t_s - t0) / h
        p0, p1 = self.positions[k], self.positions[k + 1]
        if interpolation == Interpolation.LINEAR:
            linear: FloatArray = p0 + (p1 - p0) * u
            return linear
        m0 = self._tangent(k) * h
        m1 = self._tangent(k + 1) * h
        u2, u3 = u * u, u * u * u
        cubic: FloatArray = (
            (2 * u3 - 3 * u2 + 1) * p0
            + (u3 - 2 * u2 + u) * m0
            + (-2 * u3 + 3 * u2) * p1
            + (u3 - u2) * m1
        )
        return cubic

    def _tangent(self, k: int) -> FloatArray:
        """Finite-difference velocity at row k (one-sided at the ends)."""
        lo, hi = max(k - 1, 0), min(k + 1, len(self.times_s) - 1)
        velocity: FloatArray = (self.positions[hi] - self.positions[lo]) / (
            self.times_s[hi] - self.times_s[lo]
        )
        return velocity


@dataclass(frozen=True)
class SubmitResult:
    """What happened to a submitted chunk.

    Attributes:
        accepted: whether it will be executed.
        reason: empty when accepted, else one line saying why not.
        category: counter key ('accepted', 'stale', 'non_finite', 'joint_count', ...).
        entry_time_s: `now − capture stamp` at submission: where the chunk was entered.
    """

    accepted: bool
    reason: str
    category: str
    entry_time_s: float = 0.0


@dataclass
class _Active:
    chunk: ActionChunk
    arrival_ns: int


@dataclass
class ChunkExecutor:
    """Holds the chunks in flight and yields the target for each control tick."""

    config: ChunkExecutorConfig
    joint_names: tuple[str, ...]
    lower: FloatArray
    upper: FloatArray
    counts: Counter[str] = field(default_factory=Counter)
    _active: list[_Active] = field(default_factory=list)

    def clear(self) -> None:
        """Forget every chunk (e.g. on HOLD or a mode change)."""
        self._active.clear()

    def submit(self, chunk: ActionChunk, now_ns: int) -> SubmitResult:
        """Validate `chunk` and, if executable, join it to the chunks in flight."""
        if (
            chunk.joint_names
            and chunk.joint_names != self.joint_names
            and set(chunk.joint_names) == set(self.joint_names)
        ):
            chunk = chunk.reordered(self.joint_names)
        result = self._check(chunk, now_ns)
        self.counts[result.category] += 1
        if not result.accepted:
            return result
        entry = _Active(chunk, now_ns)
        if self.config.blend == Blend.REPLACE:
            self._active = [entry]
        elif self.config.blend == Blend.CROSSFADE:
            # Fade from what is being executed now (the newest chunk) into the new one.
            self._active = [*self._active[-1:], entry]
        else:
            self._active = [a for a in self._active if self._time(a, now_ns) <= a.chunk.end_s]
            self._active.append(entry)
        return result

    def _check(self, chunk: ActionChunk, now_ns: int) -> SubmitResult:
        positions, times = chunk.positions, chunk.times_s
        joints = len(self.joint_names)
        if positions.ndim != 2 or positions.shape[0] == 0:
            return SubmitResult(
                False, f"chunk must be rows × joints, got {positions.shape}", "shape"
            )
        if chunk.joint_names and tuple(chunk.joint_names) != self.joint_names:
            return SubmitResult(
                False,
                f"chunk joints {list(chunk.joint_names)} are not this arm's "
                f"{list(self.joint_names)} (wrong embodiment?)",
                "joint_names",
            )
        if positions.shape[1] != joints:
            return SubmitResult(
                False,
                f"chunk has {positions.shape[1]} joints, this arm has {joints}",
                "joint_count",
            )
        if (
            times.shape != (positions.shape[0],)
            or not np.all(np.isfinite(times))
            or (times[0] < 0 or np.any(np.diff(times) <= 0))
        ):
            return SubmitResult(False, "row times must be finite, >= 0 and increasing", "times")
        if not np.all(np.isfinite(positions)):
            bad = np.argwhere(~np.isfinite(positions))[0]
            return SubmitResult(
                False,
                f"non-finite target at row {bad[0]}, joint {self.joint_names[bad[1]]}",
                "non_finite",
            )
        tolerance = self.config.limit_tolerance
        outside = (positions < self.lower - tolerance) | (positions > self.upper + tolerance)
        if np.any(outside):
            row, joint = np.argwhere(outside)[0]
            return SubmitResult(
                False,
                f"target {positions[row, joint]:.3f} at row {row} is outside joint "
                f"{self.joint_names[joint]}'s limits [{self.lower[joint]:.3f}, "
                f"{self.upper[joint]:.3f}]",
                "out_of_limits",
            )
        age_s = (now_ns - chunk.capture_stamp_ns) / _NS
        if age_s < -self.config.max_future_s:
            return SubmitResult(
                False,
                f"capture stamp is {-age_s * 1e3:.0f} ms in the future: clocks disagree",
                "future",
            )
        if age_s > chunk.end_s:
            return SubmitResult(
                False,
                f"stale: its last row was due {(age_s - chunk.end_s) * 1e3:.0f} ms ago "
                f"(observation {age_s * 1e3:.0f} ms old)",
                "stale",
            )
        return SubmitResult(True, "", "accepted", max(age_s, 0.0))

    @staticmethod
    def _time(active: _Active, now_ns: int) -> float:
        return max((now_ns - active.chunk.capture_stamp_ns) / _NS, 0.0)

    def target(self, now_ns: int) -> FloatArray | None:
        """The joint target for this tick, or None when no chunk covers `now_ns`."""
        interpolation = self.config.interpolation
        samples: list[tuple[_Active, FloatArray]] = []
        for active in self._active:
            sample = active.chunk.sample(self._time(active, now_ns), interpolation)
            if sample is not None:
                samples.append((active, sample))
        if not samples:
            self._active.clear()
            return None
        if self.config.blend == Blend.ENSEMBLE and len(samples) > 1:
            weights = np.exp(-self.config.ensemble_decay * np.arange(len(samples)))
            stacked = np.stack([sample for _, sample in samples])
            blended: FloatArray = (weights[:, None] * stacked).sum(axis=0) / weights.sum()
            return blended
        newest, newest_target = samples[-1]
        if self.config.blend == Blend.CROSSFADE and len(samples) > 1:
            chunk = newest.chunk
            row_s = chunk.end_s / max(len(chunk.times_s) - 1, 1)
            fade_s = self.config.crossfade_rows * row_s
            progress = (now_ns - newest.arrival_ns) / _NS / fade_s if fade_s > 0 else 1.0
            if progress < 1.0:
                w = _smoothstep(progress)
                previous: FloatArray = samples[-2][1]
                faded: FloatArray = (1.0 - w) * previous + w * newest_target
                return faded
            self._active = [newest]
        return newest_target


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)
