"""Who commands the arm, tick by tick: modes, handover and the local watchdog (DESIGN §4).

Modes: IDLE (hold the seeded pose), TELEOP (follow the leader arm), POLICY (follow the chunk
executor), HOLD (keep the last command). Switching source cross-fades from the current command
over `handover_s`, so teleop → policy → teleop never jumps; the policy is refused when its first
target is too far from where the arm is. Whatever the mode, the output goes through the safety
envelope, and a tick in TELEOP/POLICY without a valid target is a HOLD (the local watchdog: it
needs no other node). Pure logic: the driver node feeds it stamps, targets and requests.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from vla_runtime.core.chunk_executor import ActionChunk, ChunkExecutor, FloatArray, SubmitResult
from vla_runtime.core.safety import SafetyEnvelope


class Mode(str, enum.Enum):
    IDLE = "IDLE"
    TELEOP = "TELEOP"
    POLICY = "POLICY"
    HOLD = "HOLD"


@dataclass(frozen=True)
class ArmControlConfig:
    """Handover and watchdog settings.

    Attributes:
        handover_s: cross-fade time when the commanding source changes [s].
        max_engage_distance: refuse to engage the policy when any joint of its first target is
            farther than this from the current command [rad or m].
        teleop_timeout_s: a teleop target older than this is no target (watchdog) [s].
        teleop_limit_tolerance: teleop targets this far outside the limits are clipped; farther
            ones are rejected [rad or m].
    """

    handover_s: float = 1.0
    max_engage_distance: float = 0.35
    teleop_timeout_s: float = 0.25
    teleop_limit_tolerance: float = 0.05

    def __post_init__(self) -> None:
        if self.handover_s < 0 or self.teleop_timeout_s <= 0:
            raise ValueError("handover_s must be >= 0 and teleop_timeout_s > 0")
        if self.max_engage_distance <= 0 or self.teleop_limit_tolerance < 0:
            raise ValueError("max_engage_distance must be > 0, teleop_limit_tolerance >= 0")


@dataclass(frozen=True)
class Transition:
    """Answer to a mode request (what the Trigger service returns)."""

    success: bool
    message: str


@dataclass(frozen=True)
class TickOutput:
    """One control tick's decision.

    Attributes:
        command: joint command to send [rad or m], inside the envelope.
        mode: mode after this tick.
        hold_reason: why the arm is in HOLD ('' otherwise); set on the tick HOLD began too.
        entered_hold: True on the tick the watchdog (or a request) switched to HOLD.
    """

    command: FloatArray
    mode: Mode
    hold_reason: str = ""
    entered_hold: bool = False


@dataclass
class _Fade:
    start: FloatArray
    start_mono_ns: int


@dataclass
class ArmController:
    """The per-arm decision logic of a driver."""

    config: ArmControlConfig
    executor: ChunkExecutor
    envelope: SafetyEnvelope
    mode: Mode = Mode.IDLE
    hold_reason: str = ""
    rejected_teleop: Counter[str] = field(default_factory=Counter)
    _held_from: Mode = Mode.IDLE
    _hold_pose: FloatArray | None = None
    _teleop: FloatArray | None = None
    _teleop_mono_ns: int = 0
    _fade: _Fade | None = None
    _pending_hold: str = ""

    # -- inputs ----------------------------------------------------------------------------

    def activate(self, measured: FloatArray) -> None:
        """Seed the command from the measured position: the arm does not move on start."""
        self.envelope.reset(measured)
        self._hold_pose = self.envelope.command
        self.mode = Mode.IDLE
        self.hold_reason = ""
        self._fade = None
        self.executor.clear()

    def submit_chunk(self, chunk: ActionChunk, now_ns: int) -> SubmitResult:
        return self.executor.submit(chunk, now_ns)

    def set_teleop_target(self, target: FloatArray, mono_ns: int) -> str:
        """Take a teleop target; returns '' or why it was rejected (counted)."""
        problem = self.envelope.check(target)
        if not problem:
            limits = self.envelope.limits
            tolerance = self.config.teleop_limit_tolerance
            outside = (target < limits.lower - tolerance) | (target > limits.upper + tolerance)
            if np.any(outside):
                joint = int(np.argmax(outside))
                problem = (
                    f"teleop target {target[joint]:.3f} for joint {joint} is outside its limits "
                    f"[{limits.lower[joint]:.3f}, {limits.upper[joint]:.3f}]"
                )
        if problem:
            self.rejected_teleop[problem.split(" ")[0]] += 1
            return problem
        self._teleop = np.clip(
            np.asarray(target, dtype=np.float64),
            self.envelope.limits.lower,
            self.envelope.limits.upper,
        )
        self._teleop_mono_ns = mono_ns
        return ""

    # -- requests (the /robot/* Trigger services) ----------------------------------------------

    def engage_policy(self, now_ns: int, mono_ns: int) -> Transition:
        if self.mode == Mode.POLICY:
            return Transition(True, "already in POLICY")
        target = self.executor.target(now_ns)
        if target is None:
            return Transition(False, "no policy chunk covers now: is the policy node running?")
        distance = np.abs(target - self.envelope.command)
        worst = int(np.argmax(distance))
        if distance[worst] > self.config.max_engage_distance:
            return Transition(
                False,
                f"the policy's first target is {distance[worst]:.2f} away from the current pose "
                f"at joint {self.executor.joint_names[worst]} (limit "
                f"{self.config.max_engage_distance:.2f}): bring the arm closer with teleop first",
            )
        self._switch(Mode.POLICY, mono_ns)
        return Transition(True, "POLICY engaged")

    def engage_teleop(self, mono_ns: int) -> Transition:
        if self.mode == Mode.TELEOP:
            return Transition(True, "already in TELEOP")
        if self._teleop_target(mono_ns) is None:
            return Transition(False, "no fresh teleop target: is the leader arm publishing?")
        self._switch(Mode.TELEOP, mono_ns)
        return Transition(True, f"TELEOP engaged (handover over {self.config.handover_s:.1f} s)")

    def hold(self, reason: str) -> Transition:
        """Keep the current command (operator, latency monitor or watchdog)."""
        if self.mode != Mode.HOLD:
            self._enter_hold(reason)
        return Transition(True, f"HOLD ({reason})")

    def release(self, now_ns: int, mono_ns: int) -> Transition:
        """Leave HOLD to the mode it interrupted, if that source has a valid target."""
        if self.mode != Mode.HOLD:
            return Transition(True, f"not holding (mode {self.mode.value})")
        resume = self._held_from
        if resume == Mode.POLICY and self.executor.target(now_ns) is not None:
            self._switch(Mode.POLICY, mono_ns)
        elif resume == Mode.TELEOP and self._teleop_target(mono_ns) is not None:
            self._switch(Mode.TELEOP, mono_ns)
        else:
            self._hold_pose = self.envelope.command
            self.mode, self.hold_reason = Mode.IDLE, ""
            return Transition(True, f"released to IDLE ({resume.value} has no valid target)")
        return Transition(True, f"released to {self.mode.value}")

    # -- the tick ----------------------------------------------------------------------------

    def tick(self, now_ns: int, mono_ns: int) -> TickOutput:
        """The command for this control period."""
        entered = False
        if self.mode in (Mode.POLICY, Mode.TELEOP):
            source = (
                self.executor.target(now_ns)
                if self.mode == Mode.POLICY
                else self._teleop_target(mono_ns)
            )
            if source is None:
                what = "policy chunk" if self.mode == Mode.POLICY else "teleop target"
                self._enter_hold(f"watchdog: no valid {what} for this tick")
                entered = True
                target = self._held()
            else:
                target = self._faded(source, mono_ns)
        else:
            entered = bool(self._pending_hold)
            target = self._held()
        self._pending_hold = ""
        command = self.envelope.step(target)
        return TickOutput(command, self.mode, self.hold_reason, entered)

    # -- internals ---------------------------------------------------------------------------

    def _teleop_target(self, mono_ns: int) -> FloatArray | None:
        if self._teleop is None:
            return None
        if (mono_ns - self._teleop_mono_ns) / 1e9 > self.config.teleop_timeout_s:
            return None
        return self._teleop

    def _switch(self, mode: Mode, mono_ns: int) -> None:
        self._fade = _Fade(self.envelope.command, mono_ns) if self.config.handover_s > 0 else None
        self.mode, self.hold_reason = mode, ""

    def _faded(self, source: FloatArray, mono_ns: int) -> FloatArray:
        if self._fade is None:
            return source
        progress = (mono_ns - self._fade.start_mono_ns) / 1e9 / self.config.handover_s
        if progress >= 1.0:
            self._fade = None
            return source
        w = progress * progress * (3.0 - 2.0 * progress)
        blended: FloatArray = (1.0 - w) * self._fade.start + w * source
        return blended

    def _enter_hold(self, reason: str) -> None:
        self._held_from = self.mode if self.mode in (Mode.POLICY, Mode.TELEOP) else Mode.IDLE
        self._hold_pose = self.envelope.command
        self.mode, self.hold_reason, self._fade = Mode.HOLD, reason, None
        self._pending_hold = reason

    def _held(self) -> FloatArray:
        if self._hold_pose is None:
            raise RuntimeError("the controller was not activated: call activate(measured)")
        return self._hold_pose
