"""`TeleopLoop`: reads a teleop source on its own thread at a fixed rate."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from vla_runtime.core.loop_timing import RateKeeper
from vla_runtime.drivers.base import DriverError, DriverTimeout, FloatArray
from vla_runtime.drivers.teleop.sources import TeleopSource

_RETRY_S = (0.5, 1.0, 2.0, 5.0)  # backoff while the device is absent (as the driver loop)
# Consecutive read timeouts (in seconds of the loop) before the bus is reopened: one timeout is
# a glitch worth a retry next tick, half a second of them is a cut power or cable.
_RECONNECT_AFTER_S = 0.5


@dataclass(frozen=True)
class TeleopReading:
    """One read of the source.

    Attributes:
        positions: (joints,) targets in the follower's order [rad or m].
        stamp_ns: system time right after the read [ns since the epoch], the message stamp.
        index: reads since start (gaps never appear; skipped ticks are simply not read).
    """

    positions: FloatArray
    stamp_ns: int
    index: int


@dataclass(frozen=True)
class TeleopStatus:
    connected: bool
    failing: bool  # the newest read attempt failed
    reads: int
    errors: int
    reconnects: int
    last_error: str


class TeleopLoop:
    """Reads `source` at `rate_hz` on its own thread (see the package docstring).

    Args:
        on_reading: called on the loop thread with every reading (keep it light: publish).
        on_error: called on the loop thread with each new error message (a repeat of the
            previous message is not reported again until a read succeeds).
        retry_s: waits between connection attempts, the last one repeated.
    """

    def __init__(
        self,
        source: TeleopSource,
        rate_hz: float,
        on_reading: Callable[[TeleopReading], None],
        on_error: Callable[[str], None],
        *,
        retry_s: Sequence[float] = _RETRY_S,
    ) -> None:
        if not rate_hz > 0.0 or not retry_s:
            raise ValueError("rate_hz must be > 0 and retry_s non-empty")
        self.source = source
        self.rate = RateKeeper(1.0 / rate_hz, sleep=self._sleep)
        self._reconnect_after = max(1, math.ceil(rate_hz * _RECONNECT_AFTER_S))
        self._retry_s = tuple(retry_s)
        self._on_reading = on_reading
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._latest: TeleopReading | None = None
        self._connected = self._failing = False
        self._reported = ""
        self._reads = self._errors = self._reconnects = 0
        self._ever_connected = False
        self._last_error = ""

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="teleop-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self._disconnect()

    def latest(self) -> TeleopReading | None:
        """The newest reading (None before the first)."""
        with self._lock:
            return self._latest

    def status(self) -> TeleopStatus:
        with self._lock:
            return TeleopStatus(
                self._connected,
                self._failing,
                self._reads,
                self._errors,
                self._reconnects,
                self._last_error,
            )

    def diagnostics(self) -> tuple[str, str, dict[str, str]]:
        """(level 'OK'|'WARN'|'ERROR', one-line message, key-values) for /diagnostics."""
        status = self.status()
        summary = self.rate.summary()
        level = "ERROR" if not status.connected else "WARN" if status.failing else "OK"
        values = {key: str(value) for key, value in dataclasses.asdict(status).items()}
        values["period_error_p99_ms"] = f"{summary.period_error_p99_ms:.3f}"
        values["overruns"] = str(summary.overruns)
        healthy = status.connected and not status.failing
        message = "reading" if healthy else status.last_error or "connecting"
        return level, message, values

    # -- the thread ------------------------------------------------------------------------------

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _run(self) -> None:
        attempt = 0
        timeouts = 0
        while not self._stop.is_set():
            if not self._connected:
                if not self._connect(attempt):
                    attempt += 1
                    continue
                attempt = timeouts = 0
                self.rate.start()
            self.rate.wait()
            if self._stop.is_set():
                break
            try:
                positions = np.asarray(self.source.read(), dtype=np.float64)
            except DriverTimeout as exc:
                timeouts += 1
                self._error(f"read failed: {exc}")
                if timeouts >= self._reconnect_after:
                    self._disconnect()
                continue
            except Exception as exc:  # any error, not only DriverError: see _describe
                self._error(f"read failed: {_describe(exc)}")
                self._disconnect()
                continue
            timeouts = 0
            stamp_ns = time.time_ns()
            if positions.shape != (len(self.source.joint_names),):
                self._error(f"the source gave {positions.shape} values, not one per joint")
                continue
            with self._lock:
                reading = TeleopReading(positions, stamp_ns, self._reads)
                self._latest = reading
                self._reads += 1
                self._failing = False
            self._reported = ""  # a recurrence of an old error is news again
            self._on_reading(reading)

    def _connect(self, attempt: int) -> bool:
        try:
            self.source.connect()
        except Exception as exc:  # any error, not only DriverError: see _describe
            self._error(f"cannot connect: {_describe(exc)}")
            with contextlib.suppress(Exception):  # a half-open bus would skip the next ping
                self.source.disconnect()
            self._stop.wait(self._retry_s[min(attempt, len(self._retry_s) - 1)])
            return False
        with self._lock:
            self._reconnects += self._ever_connected
            self._connected = self._ever_connected = True
        return True

    def _disconnect(self) -> None:
        with self._lock:
            connected, self._connected = self._connected, False
        if connected:
            with contextlib.suppress(Exception):  # a vanished device has nothing to close
                self.source.disconnect()

    def _error(self, message: str) -> None:
        with self._lock:
            self._errors += 1
            self._failing = True
            self._last_error = message
        if message != self._reported:
            self._reported = message
            self._on_error(message)


def _describe(exc: Exception) -> str:
    """A device error's message; anything else named with its type.

    The loop thread must outlive whatever a source raises: vendor SDKs raise more than
    DriverError on a garbled status packet (scservo_sdk's ping indexes a short answer:
    IndexError), and a dead thread would leave the node running but silent. Such errors are
    reported and retried like a vanished device.
    """
    return str(exc) if isinstance(exc, DriverError) else f"{type(exc).__name__}: {exc}"
