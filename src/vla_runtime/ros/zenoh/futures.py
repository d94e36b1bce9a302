"""rclpy.task.Future and Task: results delivered by the middleware, callbacks run by executors.

A Future may be completed from any thread (a Zenoh reply thread, say), but its done-callbacks
are never run there: they are handed to the executor that spins the owning node, so user code
always runs on executor threads, as in rclpy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Protocol


class TaskScheduler(Protocol):
    def schedule(self, work: Callable[[], None]) -> None: ...


class Future:
    """The outcome of an asynchronous operation (service call, task)."""

    def __init__(self, *, scheduler: TaskScheduler | None = None) -> None:
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._result: Any = None
        self._exception: BaseException | None = None
        self._cancelled = False
        self._callbacks: list[Callable[[Future], None]] = []
        self._scheduler = scheduler

    def done(self) -> bool:
        return self._done.is_set()

    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self._cancelled = True
        self._finish()

    def result(self) -> Any:
        if self._exception is not None:
            raise self._exception
        return self._result

    def exception(self) -> BaseException | None:
        return self._exception

    def set_result(self, result: Any) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self._result = result
        self._finish()

    def set_exception(self, exception: BaseException) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self._exception = exception
        self._finish()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until done (only useful while another thread spins the executor)."""
        return self._done.wait(timeout_s)

    def add_done_callback(self, callback: Callable[[Future], None]) -> None:
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(callback)
                return
        self._dispatch(callback)

    def _set_scheduler(self, scheduler: TaskScheduler) -> None:
        self._scheduler = scheduler

    def _finish(self) -> None:
        with self._lock:
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            self._dispatch(callback)

    def _dispatch(self, callback: Callable[[Future], None]) -> None:
        if self._scheduler is None:
            callback(self)
        else:
            self._scheduler.schedule(lambda: callback(self))

    def __await__(self) -> Generator[Future, None, Any]:
        while not self.done():
            yield self  # the Task running us resumes when we complete
        return self.result()


class Task(Future):
    """Runs a callable or a coroutine on an executor; a coroutine resumes when what it awaits
    completes."""

    def __init__(
        self,
        handler: Callable[..., Any] | Coroutine[Any, Any, Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        scheduler: TaskScheduler,
    ) -> None:
        super().__init__(scheduler=scheduler)
        self._handler = handler
        self._args = args
        self._kwargs = kwargs or {}
        self._coroutine: Coroutine[Any, Any, Any] | None = (
            handler if isinstance(handler, Coroutine) else None
        )
        self._running = threading.Lock()

    def __call__(self) -> None:
        """Run (or resume) the task on the calling executor thread."""
        if self.done() or not self._running.acquire(blocking=False):
            return
        try:
            if self._coroutine is None:
                outcome = self._handler(*self._args, **self._kwargs)  # type: ignore[operator]
                if isinstance(outcome, Coroutine):
                    self._coroutine = outcome
                else:
                    self.set_result(outcome)
                    return
            self._step()
        except Exception as exc:
            self.set_exception(exc)
        finally:
            self._running.release()

    def _step(self) -> None:
        assert self._coroutine is not None
        try:
            awaited = self._coroutine.send(None)
        except StopIteration as stop:
            self.set_result(stop.value)
            return
        assert self._scheduler is not None
        if isinstance(awaited, Future):
            # Resume when what we wait on completes, instead of polling every spin.
            awaited.add_done_callback(lambda _: self._scheduler.schedule(self))  # type: ignore[union-attr]
        else:
            self._scheduler.schedule(self)
