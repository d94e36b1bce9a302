"""The policy's inference thread: back-to-back on the freshest synchronised observation.

DESIGN §4: the policy runs asynchronously, never waiting for the arm to finish a chunk. Inputs
arrive from middleware callbacks (`add_image`, `add_joint_state`, `add_scene`) into an
`ObservationSync`; the worker thread wakes on each new message, takes the freshest complete set
it has not answered yet, runs `Policy.infer` on it and hands the chunk to `on_output`. A step
that fails (PolicyError, any other exception, a non-finite chunk) publishes nothing, is counted,
goes to `on_error`, and the loop goes on with the next observation. Knows no middleware.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from vla_runtime.core.observation_sync import ObservationSync, SyncedSet
from vla_runtime.policy.interface import (
    DEPTH_GRID,
    DepthScene,
    Observation,
    Policy,
    PolicyError,
    PolicyOutput,
    PolicyTrace,
)

JOINT_STATES = "joint_states"
# Scenes kept by stamp: ~1 s of primary frames at 30 Hz.
SCENE_HISTORY = 32
# A joint state ring this long covers ~320 ms at the driver's 100 Hz state rate (SO100).
JOINT_STATE_HISTORY = 32
# Fresh frames but no synchronised observation for this long is reported (WARN).
STALL_S = 2.0
# Image encodings the worker takes: whether the channels must be reversed to get RGB.
_CHANNEL_ORDER = {"rgb8": False, "bgr8": True}


@dataclass(frozen=True)
class JointSample:
    """Measured joint positions in the policy's joint order."""

    positions: npt.NDArray[np.float64]


Payload = npt.NDArray[np.uint8] | JointSample


@dataclass(frozen=True)
class WorkerOptions:
    """How the worker runs the policy.

    Attributes:
        sync_tolerance_s: all of an observation's stamps lie within this of its newest frame.
        max_rate_hz: cap on inferences per second; 0 = back-to-back.
        time_budget_s: wall time one inference may use (passed to Policy.infer; anytime heads
            stop early); 0 = none.
        prompt: task instruction; "" = the embodiment's default prompt.
        scene: depth reasoning with MolmoThink scenes: an observation takes the scene of its
            primary (first) camera frame; without one it decodes every cell.
        scene_wait_s: how long a new primary frame waits for its scene before the step goes
            ahead without it (the think node answers a frame in about a millisecond).
    """

    sync_tolerance_s: float = 0.05
    max_rate_hz: float = 0.0
    time_budget_s: float = 0.0
    prompt: str = ""
    scene: bool = False
    scene_wait_s: float = 0.03

    def __post_init__(self) -> None:
        for name in ("sync_tolerance_s", "max_rate_hz", "time_budget_s", "scene_wait_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")


@dataclass
class WorkerStats:
    """Counters since start, for diagnostics.

    Attributes:
        inferences: steps that produced a chunk.
        failures: steps that produced nothing (error, non-finite output).
        joint_states_rejected: joint states whose names do not fit the policy.
        inputs_rejected: images or scenes that could not be used (shape, codes).
        scenes_missing: depth steps without a scene for their primary frame (all cells decoded).
        last_error: message of the latest failure or rejection ("" = none yet).
        last_trace: trace of the latest successful inference.
        last_age_ms: wall time from the observation's capture stamp to handing out its chunk.
        rate_hz: inferences per second over the last two steps' start times.
    """

    inferences: int = 0
    failures: int = 0
    joint_states_rejected: int = 0
    inputs_rejected: int = 0
    scenes_missing: int = 0
    last_error: str = ""
    last_trace: PolicyTrace = field(default_factory=PolicyTrace)
    last_age_ms: float = math.nan
    rate_hz: float = 0.0


class PolicyWorker:
    """Runs a `Policy` on a thread, on fresh synchronised observations only."""

    def __init__(
        self,
        policy: Policy,
        on_output: Callable[[PolicyOutput], None],
        on_error: Callable[[str, Observation], None],
        options: WorkerOptions | None = None,
        *,
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        """Prepare (no thread yet: `start()`).

        Args:
            policy: the built policy; its cameras and joints define the inputs.
            on_output: called on the worker thread with every chunk.
            on_error: called on the worker thread with the message of a failed step and its
                observation (rejected inputs are returned by the `add_*` calls instead).
            options: sync tolerance, rate cap, time budget, prompt, scene.
            wall_clock_ns: the clock capture stamps are on (system time), for the age stat.
        """
        self.policy = policy
        self.options = options or WorkerOptions()
        self._on_output = on_output
        self._on_error = on_error
        self._wall_clock_ns = wall_clock_ns
        self.sync: ObservationSync[Payload] = ObservationSync(
            policy.camera_names, (JOINT_STATES,), history={JOINT_STATES: JOINT_STATE_HISTORY}
        )
        # Scenes by stamp (= their primary frame's stamp), and the newest primary frame's
        # (stamp, monotonic arrival) for `scene_wait_s`.
        self._primary = policy.camera_names[0]
        self._scenes: OrderedDict[int, DepthScene] = OrderedDict()
        self._newest_primary: tuple[int, float] | None = None
        self._joint_names = policy.joint_names
        self._stats = WorkerStats()
        self._reported_rejections = 0
        self._last_step_failed = False
        self._last_set_s = time.monotonic()  # start-up counts as the last set for STALL_S
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- inputs (any thread) -----------------------------------------------------------------

    def add_image(
        self,
        camera: str,
        stamp_ns: int,
        image: npt.NDArray[np.uint8],
        encoding: str = "rgb8",
    ) -> str | None:
        """Add a camera frame (HxWx3 uint8, `encoding` rgb8 or bgr8); return why it was
        rejected, or None. The policy checks the pixels themselves when it runs."""
        if camera not in self.sync.cameras:
            return self.reject_input(f"camera {camera!r} is not one of {list(self.sync.cameras)}")
        if encoding not in _CHANNEL_ORDER:
            return self.reject_input(
                f"camera {camera!r}: encoding {encoding!r} is not one of {sorted(_CHANNEL_ORDER)}"
            )
        if _CHANNEL_ORDER[encoding] and image.ndim == 3:
            image = image[..., ::-1]  # a view: BGR -> RGB without a copy
        self.sync.add(camera, stamp_ns, image)
        if camera == self._primary:
            with self._lock:
                newest = self._newest_primary
                if newest is None or stamp_ns > newest[0]:
                    self._newest_primary = (stamp_ns, time.monotonic())
        self._notify()
        return None

    def add_joint_state(
        self, stamp_ns: int, names: Sequence[str], positions: npt.ArrayLike
    ) -> str | None:
        """Add a measured joint state; return why it was rejected, or None.

        The same joints in another order are reordered; other names are rejected (wrong
        embodiment or parameter file), and so is a state without one position per name.
        """
        vector = np.asarray(positions, dtype=np.float64).reshape(-1)
        names = tuple(names)
        if sorted(names) != sorted(self._joint_names) or vector.shape != (len(names),):
            problem = (
                f"joint state with {len(names)} names {list(names)} and {vector.size} positions "
                f"does not fit the policy's {len(self._joint_names)} joints "
                f"{list(self._joint_names)} (wrong embodiment or parameter file?)"
            )
            with self._lock:
                self._stats.joint_states_rejected += 1
                self._stats.last_error = problem
            return problem
        if names != self._joint_names:
            vector = vector[[names.index(joint) for joint in self._joint_names]]
        self.sync.add(JOINT_STATES, stamp_ns, JointSample(vector))
        self._notify()
        return None

    def add_scene(self, stamp_ns: int, grid: npt.NDArray[np.uint8]) -> str | None:
        """Add a MolmoThink scene: (10, 10, 2) uint8, channel 0 the cached code, channel 1 the
        changed flag (DESIGN §3 `/think/scene`); return why it was rejected, or None."""
        if not self.options.scene:
            return None  # depth reasoning off: scenes are not needed
        array = np.asarray(grid)
        if array.shape != (DEPTH_GRID, DEPTH_GRID, 2) or array.dtype != np.uint8:
            return self.reject_input(
                f"scene must be {DEPTH_GRID}x{DEPTH_GRID}x2 uint8, got {array.shape} {array.dtype}"
            )
        try:
            scene = DepthScene(array[..., 0].copy(), array[..., 1] != 0, stamp_ns)
        except PolicyError as exc:
            return self.reject_input(f"scene rejected: {exc}")
        with self._lock:
            self._scenes[stamp_ns] = scene
            while len(self._scenes) > SCENE_HISTORY:
                self._scenes.popitem(last=False)
        self._notify()
        return None

    def reject_input(self, problem: str) -> str:
        """Count an input that could not be used (e.g. undecodable); return `problem`."""
        with self._lock:
            self._stats.inputs_rejected += 1
            self._stats.last_error = problem
        return problem

    def _notify(self) -> None:
        with self._wake:
            self._pending = True
            self._wake.notify()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("PolicyWorker already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="policy-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the inference in progress (if any) ends; idempotent."""
        self._stop.set()
        self._notify()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        tolerance_ns = round(self.options.sync_tolerance_s * 1e9)
        period_s = 1.0 / self.options.max_rate_hz if self.options.max_rate_hz > 0 else 0.0
        previous_start = math.nan
        while not self._stop.is_set():
            with self._wake:
                while not self._pending and not self._stop.is_set():
                    self._wake.wait(0.5)
                self._pending = False
            wait_s = self._scene_wait_s()
            if wait_s > 0 and not self._stop.is_set():
                with self._wake:  # a scene (or any message) ends the wait early
                    if not self._pending:
                        self._wake.wait(wait_s)
                    self._pending = True
                continue
            synced = self.sync.latest_complete(tolerance_ns)
            if synced is None or self._stop.is_set():
                continue
            started = time.monotonic()
            with self._lock:
                self._last_set_s = started
                if not math.isnan(previous_start):
                    self._stats.rate_hz = 1.0 / max(started - previous_start, 1e-9)
            previous_start = started
            self.step(self._observation(synced))
            if period_s:
                # Pacing on the monotonic clock; a stop request ends the wait at once.
                self._stop.wait(max(0.0, started + period_s - time.monotonic()))

    def _scene_wait_s(self) -> float:
        """How much longer the newest primary frame should wait for its scene (0 = go)."""
        if not self.options.scene:
            return 0.0
        with self._lock:
            if self._newest_primary is None:
                return 0.0
            stamp_ns, arrived_s = self._newest_primary
            if stamp_ns in self._scenes:
                return 0.0
        return max(0.0, arrived_s + self.options.scene_wait_s - time.monotonic())

    def _scene_for(self, frame_stamp_ns: int) -> DepthScene | None:
        """The scene computed on the primary frame of `frame_stamp_ns`; without one (think node
        absent or late) a full refresh: every cell is decoded."""
        if not self.options.scene:
            return None
        with self._lock:
            scene = self._scenes.get(frame_stamp_ns)
            if scene is None:
                self._stats.scenes_missing += 1
        return scene or DepthScene.full_refresh(frame_stamp_ns)

    def _observation(self, synced: SyncedSet[Payload]) -> Observation:
        images: dict[str, npt.NDArray[np.uint8]] = {}
        positions = np.zeros(0, np.float64)
        for name, message in synced.messages.items():
            payload = message.payload
            if isinstance(payload, JointSample):
                positions = payload.positions
            elif isinstance(payload, np.ndarray):
                images[name] = payload
        scene = self._scene_for(synced.messages[self._primary].stamp_ns)
        return Observation(
            images=images,
            joint_positions=positions,
            joint_names=self._joint_names,
            prompt=self.options.prompt,
            stamp_ns=synced.stamp_ns,
            scene=scene,
        )

    def step(self, observation: Observation) -> PolicyOutput | None:
        """One inference on `observation`, with the worker's failure handling (the thread's
        body; callable directly, e.g. for a first warm-up step before `start()`)."""
        budget = self.options.time_budget_s or None
        try:
            output = self.policy.infer(observation, time_budget_s=budget)
            problem = _check_output(output, self._joint_names)
        except PolicyError as exc:
            problem = str(exc)
        except Exception as exc:  # a backend bug must not kill the thread (nothing published)
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            self._fail(problem, observation)
            return None
        try:
            self._on_output(output)
        except Exception as exc:
            self._fail(f"handing out the chunk failed: {type(exc).__name__}: {exc}", observation)
            return None
        age_ms = (self._wall_clock_ns() - observation.stamp_ns) / 1e6
        with self._lock:
            self._stats.inferences += 1
            self._stats.last_trace = output.trace
            self._stats.last_age_ms = age_ms
            self._last_step_failed = False
        return output

    def _fail(self, problem: str, observation: Observation) -> None:
        with self._lock:
            self._stats.failures += 1
            self._stats.last_error = problem
            self._last_step_failed = True
        with contextlib.suppress(Exception):  # reporting must not end the loop either
            self._on_error(problem, observation)

    # -- reporting -----------------------------------------------------------------------------

    def stats(self) -> WorkerStats:
        """A copy of the counters."""
        with self._lock:
            return WorkerStats(**vars(self._stats))

    def diagnostics(self) -> tuple[str, str, dict[str, str]]:
        """(level 'OK'|'WARN'|'ERROR', one-line message, key-values) for /diagnostics.

        ERROR while the latest step failed; WARN when joint states or inputs were rejected
        since the previous call, while a source has no message, or while fresh frames find no
        observation within the tolerance for over STALL_S; OK otherwise.
        """
        stats = self.stats()
        counters = self.sync.counters()
        missing = self.sync.missing()
        rejections = stats.joint_states_rejected + stats.inputs_rejected
        with self._lock:
            new_rejections = rejections > self._reported_rejections
            self._reported_rejections = rejections
            failed = self._last_step_failed
            waited_s = time.monotonic() - self._last_set_s
        stalled = waited_s > STALL_S and self.sync.has_fresh_frame()
        if failed:
            level, message = "ERROR", stats.last_error
        elif new_rejections:
            level, message = "WARN", stats.last_error
        elif missing:
            level, message = "WARN", f"waiting for {', '.join(missing)}"
        elif stalled:
            tolerance_ms = self.options.sync_tolerance_s * 1e3
            level, message = (
                "WARN",
                (
                    f"no observation with all stamps within {tolerance_ms:g} ms for "
                    f"{waited_s:.1f} s (clocks apart, or a source lagging?)"
                ),
            )
        elif stats.inferences == 0:
            level, message = "WARN", "waiting for a synchronised observation"
        else:
            level, message = "OK", "running"
        values = {key: _format(value) for key, value in stats.last_trace.as_dict().items()}
        values.update(
            {
                "inferences": str(stats.inferences),
                "failures": str(stats.failures),
                "rate_hz": f"{stats.rate_hz:.2f}",
                "observation_age_ms": _format(stats.last_age_ms),
                "joint_states_rejected": str(stats.joint_states_rejected),
                "inputs_rejected": str(stats.inputs_rejected),
                "scenes_missing": str(stats.scenes_missing),
                "sets": str(counters.sets),
                "frames_skipped": str(counters.frames_skipped),
                "unsynchronised": str(counters.unsynchronised),
                "out_of_order": str(counters.out_of_order),
                "missing": ",".join(missing),
                "last_error": stats.last_error,
            }
        )
        return level, message, values


def _check_output(output: PolicyOutput, joint_names: tuple[str, ...]) -> str:
    """Why `output` must not be published, or ""."""
    actions = np.asarray(output.actions)
    if actions.ndim != 2 or actions.shape[0] < 1 or actions.shape[1] != len(joint_names):
        return f"chunk has shape {actions.shape}, expected (rows, {len(joint_names)})"
    if tuple(output.joint_names) != joint_names:
        return f"chunk joints {list(output.joint_names)} are not {list(joint_names)}"
    if not np.isfinite(actions).all():
        return "the policy produced non-finite actions; nothing published"
    if not (math.isfinite(output.chunk_rate_hz) and output.chunk_rate_hz > 0):
        return f"chunk rate must be > 0 Hz, got {output.chunk_rate_hz}"
    codes = output.depth_codes
    if codes is not None and np.asarray(codes).shape != (DEPTH_GRID, DEPTH_GRID):
        return f"depth codes have shape {np.asarray(codes).shape}, expected 10x10"
    return ""


def _format(value: float | int | str) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if math.isfinite(value) else "nan"
    return str(value)
