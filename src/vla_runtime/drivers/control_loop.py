"""The driver's fixed-rate loop: read the arm, decide (core), write the arm, report.

Runs on its own thread, paced on the monotonic clock (`RateKeeper`), independent of the
middleware's executor, so a busy callback never delays a control tick. Inputs from the node
(chunks, teleop targets, mode requests) go through one short lock. A bus fault holds the arm and
is reported; a device that is absent at start is retried with backoff: the node never exits or
crash-loops because of hardware, it says what is wrong and keeps trying.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from vla_runtime.core.arm_control import ArmController, Mode, TickOutput, Transition
from vla_runtime.core.chunk_executor import ActionChunk, ChunkExecutor, FloatArray, SubmitResult
from vla_runtime.core.loop_timing import RateKeeper, TickTiming
from vla_runtime.core.safety import SafetyEnvelope
from vla_runtime.drivers.base import ArmDriver, DriverError, JointReading
from vla_runtime.drivers.embodiment import EmbodimentConfig

_RETRY_S = (0.5, 1.0, 2.0, 5.0)  # backoff while the device is absent


@dataclass(frozen=True)
class TickReport:
    """What one tick did, for publishing (runs on the loop thread: keep consumers light)."""

    stamp_ns: int
    reading: JointReading | None
    output: TickOutput
    timing: TickTiming


@dataclass(frozen=True)
class LoopStatus:
    connected: bool
    mode: Mode
    hold_reason: str
    bus_errors: int
    last_error: str


def _describe(exc: BaseException) -> str:
    """DriverErrors speak for themselves; anything else gets its type (it is a bug)."""
    return str(exc) if isinstance(exc, DriverError) else f"{type(exc).__name__}: {exc}"


class DriverLoop:
    """Owns the arm's driver, its controller and the control thread."""

    def __init__(
        self,
        config: EmbodimentConfig,
        driver: ArmDriver,
        on_tick: Callable[[TickReport], None],
        on_error: Callable[[str], None],
    ) -> None:
        if tuple(driver.joint_names) != config.joint_names:
            raise ValueError(
                f"driver joints {list(driver.joint_names)} differ from the embodiment's "
                f"{list(config.joint_names)}"
            )
        limits = config.envelope_limits()
        self.config = config
        self.driver = driver
        self.controller = ArmController(
            config.control,
            ChunkExecutor(config.chunk, config.joint_names, limits.lower, limits.upper),
            SafetyEnvelope(limits, config.period_s),
        )
        self.rate = RateKeeper(config.period_s)
        self._on_tick = on_tick
        self._on_error = on_error
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connected = False
        self.bus_errors = 0
        self.last_error = ""
        # Which chunk the arm executes, for the latency monitor's reaction latency: the
        # newest accepted chunk is applied from the first POLICY tick after it arrived.
        self._pending_stamp_ns = 0
        self.applied_chunk_stamp_ns = 0  # capture stamp of the chunk being executed
        self.applied_since_ns = 0  # system time of the tick that first applied it

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="control-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the loop; the arm keeps its last command (servos hold, Damiao motors damp
        after their 400 ms watchdog), then the bus is closed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._connected:
            self.driver.disconnect()
            self._connected = False

    def _connect(self) -> bool:
        attempt = 0
        while not self._stop.is_set():
            try:
                self.driver.connect()
                self.driver.enable()
                measured = self.driver.read()
            except Exception as exc:  # SDK bugs too: report, retry, never die
                self._error(f"cannot start the arm: {_describe(exc)}")
                self._stop.wait(_RETRY_S[min(attempt, len(_RETRY_S) - 1)])
                attempt += 1
                continue
            with self._lock:
                self.controller.activate(measured.positions)
            self._connected = True
            return True
        return False

    def _run(self) -> None:
        if not self._connect():
            return
        # After connect: threads a driver starts while connecting (a middleware session, an
        # executor) must not inherit real-time priority, and connecting needs none.
        self._set_priority()
        self.rate.start()
        while not self._stop.is_set():
            timing = self.rate.wait()
            stamp_ns = time.time_ns()
            reading: JointReading | None = None
            # Any exception from the bus (an SDK's IndexError on a garbled packet included) is a
            # bus fault: the arm holds and it is reported; the control thread never dies.
            try:
                reading = self.driver.read()
            except Exception as exc:
                self._bus_fault(f"read failed: {_describe(exc)}")
            with self._lock:
                output = self.controller.tick(stamp_ns, timing.started_ns)
                if output.mode == Mode.POLICY and self._pending_stamp_ns:
                    self.applied_chunk_stamp_ns = self._pending_stamp_ns
                    self.applied_since_ns = stamp_ns
                    self._pending_stamp_ns = 0
            try:
                self.driver.write(output.command)
            except Exception as exc:
                self._bus_fault(f"write failed: {_describe(exc)}")
            try:
                self._on_tick(TickReport(stamp_ns, reading, output, timing))
            except Exception as exc:  # publishing must not stop control
                self._error(f"reporting a tick failed: {_describe(exc)}")

    def _set_priority(self) -> None:
        """SCHED_FIFO for this thread when configured (Linux: pid 0 = the calling thread)."""
        priority = self.config.realtime_priority
        if priority == 0:
            return
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        except (AttributeError, OSError) as exc:
            self._error(
                f"realtime_priority {priority} not applied ({exc}); running with normal "
                "scheduling. Grant it with `ulimit -r 99` / an rtprio limit, or set 0"
            )

    def _bus_fault(self, message: str) -> None:
        self.bus_errors += 1
        with self._lock:
            self.controller.hold(f"bus: {message}")
        self._error(message)

    def _error(self, message: str) -> None:
        self.last_error = message
        self._on_error(message)

    # -- inputs from the node (any thread) -----------------------------------------------------

    def submit_chunk(self, chunk: ActionChunk) -> SubmitResult:
        with self._lock:
            result = self.controller.submit_chunk(chunk, time.time_ns())
            if result.accepted:
                self._pending_stamp_ns = chunk.capture_stamp_ns
            return result

    def set_teleop_target(self, positions: FloatArray) -> str:
        with self._lock:
            return self.controller.set_teleop_target(positions, time.monotonic_ns())

    def request(self, name: str, reason: str = "operator") -> Transition:
        """`engage_policy`, `engage_teleop`, `hold` or `release` (the /robot/* services)."""
        if not self._connected:
            return Transition(False, f"the arm is not connected: {self.last_error or 'starting'}")
        now_ns, mono_ns = time.time_ns(), time.monotonic_ns()
        with self._lock:
            if name == "engage_policy":
                return self.controller.engage_policy(now_ns, mono_ns)
            if name == "engage_teleop":
                return self.controller.engage_teleop(mono_ns)
            if name == "hold":
                return self.controller.hold(reason)
            if name == "release":
                return self.controller.release(now_ns, mono_ns)
        return Transition(False, f"unknown request {name!r}")

    def status(self) -> LoopStatus:
        with self._lock:
            return LoopStatus(
                self._connected,
                self.controller.mode,
                self.controller.hold_reason,
                self.bus_errors,
                self.last_error,
            )

    def diagnostics(self) -> tuple[str, str, dict[str, str]]:
        """(level 'OK'|'WARN'|'ERROR', one-line message, key-values) for /diagnostics."""
        status = self.status()
        summary = self.rate.summary()
        with self._lock:  # a consistent pair: both change on the same tick
            applied_stamp_ns, applied_since_ns = self.applied_chunk_stamp_ns, self.applied_since_ns
        level = "ERROR" if not status.connected else "WARN" if status.mode == Mode.HOLD else "OK"
        values = {
            "mode": status.mode.value,
            "hold_reason": status.hold_reason,
            "period_error_p50_ms": f"{summary.period_error_p50_ms:.3f}",
            "period_error_p99_ms": f"{summary.period_error_p99_ms:.3f}",
            "overruns": str(summary.overruns),
            "ticks": str(summary.ticks),
            "last_error": status.last_error,
            "applied_chunk_stamp_ns": str(applied_stamp_ns),
            "applied_since_ns": str(applied_since_ns),
            **{key: str(value) for key, value in self.counters().items()},
        }
        return level, status.hold_reason or status.last_error or "running", values

    def counters(self) -> dict[str, int]:
        """Rejections and faults so far, for diagnostics."""
        with self._lock:
            chunk_counts = dict(self.controller.executor.counts)
            teleop = dict(self.controller.rejected_teleop)
        counts = {f"chunks_{key}": value for key, value in chunk_counts.items()}
        counts.update({f"teleop_rejected_{key}": value for key, value in teleop.items()})
        counts["bus_errors"] = self.bus_errors
        counts["limited_ticks"] = self.controller.envelope.limited_ticks
        return counts
