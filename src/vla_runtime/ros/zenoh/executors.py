"""rclpy.executors for the zenoh backend: single- and multi-threaded.

Middleware threads only queue work and call `wake()`. An executor scans its nodes for ready work
(timers due, samples queued, requests pending, tasks), runs one item per `spin_once`, and
otherwise sleeps on a condition until woken or the next timer is due: no polling.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from vla_runtime.ros.zenoh.callback_groups import CallbackGroup
from vla_runtime.ros.zenoh.context import Context, default_context
from vla_runtime.ros.zenoh.entities import Work
from vla_runtime.ros.zenoh.futures import Future, Task
from vla_runtime.ros.zenoh.node import Node

_LOG = logging.getLogger("vla_runtime.zenoh.executor")


class ExternalShutdownException(Exception):
    """The context was shut down (e.g. by SIGINT) while spinning (rclpy.executors)."""


class ShutdownException(Exception):
    """Spinning an executor that was shut down."""


_Ready = tuple[Work, CallbackGroup | None, Node]


class Executor:
    """Base executor: owns nodes, finds ready work, runs it."""

    def __init__(self, *, context: Context | None = None) -> None:
        self._context = context or default_context()
        self._nodes: list[Node] = []
        self._cond = threading.Condition()
        self._woken = False
        self._is_shutdown = False
        self._cursor = 0
        self._context.on_shutdown(self.wake)
        self.callback_errors = 0

    @property
    def context(self) -> Context:
        return self._context

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- nodes -------------------------------------------------------------------------------

    def add_node(self, node: Node) -> bool:
        with self._cond:
            if node in self._nodes:
                return False
            self._nodes.append(node)
        node._executors.add(self)
        node._executor = self
        self.wake()
        return True

    def remove_node(self, node: Node) -> None:
        with self._cond:
            if node in self._nodes:
                self._nodes.remove(node)
        node._executors.discard(self)
        if node._executor is self:
            node._executor = None

    def get_nodes(self) -> list[Node]:
        with self._cond:
            return list(self._nodes)

    # -- waking and finding work -------------------------------------------------------------

    def wake(self) -> None:
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def create_task(
        self, callback: Callable[..., Any] | Coroutine[Any, Any, Any], *args: Any, **kwargs: Any
    ) -> Task:
        nodes = self.get_nodes()
        if not nodes:
            raise RuntimeError("create_task needs at least one node added to the executor")
        task = Task(callback, args, kwargs, scheduler=nodes[0])
        nodes[0].schedule(task)
        return task

    def _find_ready(self) -> tuple[_Ready | None, int | None]:
        """One ready work item (round-robin over nodes), else the next timer deadline."""
        now = time.monotonic_ns()
        next_due: int | None = None
        nodes = self.get_nodes()
        count = len(nodes)
        for offset in range(count):
            node = nodes[(self._cursor + offset) % count]
            task = node.take_task()
            if task is not None:
                self._cursor = (self._cursor + offset + 1) % count
                return (task, None, node), None
            for entity in node.entities():
                group = entity.callback_group
                if not group.can_execute(entity):
                    continue
                work = entity.take(now)
                if work is not None:
                    if not group.beginning_execution(entity):
                        continue  # raced with another thread; the item is lost only for timers
                    self._cursor = (self._cursor + offset + 1) % count
                    return (work, group, node), None
                due = entity.next_due_ns()
                if due is not None and (next_due is None or due < next_due):
                    next_due = due
        return None, next_due

    def _wait_for_ready(self, timeout_sec: float | None) -> _Ready | None:
        deadline = None if timeout_sec is None else time.monotonic_ns() + int(timeout_sec * 1e9)
        while True:
            if not self._context.ok() or self._is_shutdown:
                return None
            with self._cond:
                self._woken = False
            ready, next_due = self._find_ready()
            if ready is not None:
                return ready
            now = time.monotonic_ns()
            wake_at = (
                min(x for x in (deadline, next_due) if x is not None)
                if (deadline is not None or next_due is not None)
                else None
            )
            if deadline is not None and now >= deadline:
                return None
            with self._cond:
                if not self._woken:
                    self._cond.wait(None if wake_at is None else max(0, wake_at - now) / 1e9)

    def _run(self, ready: _Ready) -> None:
        work, group, node = ready
        try:
            work()
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception:
            self.callback_errors += 1
            node.get_logger().error(
                f"exception in a callback (total so far {self.callback_errors}):\n"
                + _format_exception(),
                throttle_duration_sec=1.0,
            )
        finally:
            if group is not None:
                group.ending_execution(None)
                self.wake()  # work held back by a busy group may now run

    # -- spinning ----------------------------------------------------------------------------

    def spin_once(self, timeout_sec: float | None = None) -> None:
        self._check_running()
        ready = self._wait_for_ready(timeout_sec)
        if ready is not None:
            self._dispatch(ready)

    def _dispatch(self, ready: _Ready) -> None:
        self._run(ready)

    def spin(self) -> None:
        while self._context.ok() and not self._is_shutdown:
            self.spin_once()
        self._raise_if_external_shutdown()

    def spin_until_future_complete(self, future: Future, timeout_sec: float | None = None) -> None:
        deadline = None if timeout_sec is None else time.monotonic() + timeout_sec
        future.add_done_callback(lambda _: self.wake())
        while self._context.ok() and not self._is_shutdown and not future.done():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            self.spin_once(remaining)

    def spin_once_until_future_complete(
        self, future: Future, timeout_sec: float | None = None
    ) -> None:
        future.add_done_callback(lambda _: self.wake())
        self.spin_once(timeout_sec)

    def _check_running(self) -> None:
        if self._is_shutdown:
            raise ShutdownException("this executor was shut down")

    def _raise_if_external_shutdown(self) -> None:
        if not self._context.ok() and not self._is_shutdown:
            raise ExternalShutdownException("the context was shut down while spinning")

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        self._is_shutdown = True
        self.wake()
        for node in self.get_nodes():
            self.remove_node(node)
        return True


def _format_exception() -> str:
    import traceback

    return traceback.format_exc().rstrip()


class SingleThreadedExecutor(Executor):
    """Runs every callback on the thread that spins."""


class MultiThreadedExecutor(Executor):
    """Runs callbacks on a thread pool; callback groups say what may overlap."""

    def __init__(self, num_threads: int | None = None, *, context: Context | None = None) -> None:
        super().__init__(context=context)
        if num_threads is None:
            try:
                num_threads = len(os.sched_getaffinity(0))
            except (AttributeError, OSError):
                num_threads = os.cpu_count() or 2
        self._pool = ThreadPoolExecutor(max_workers=max(1, num_threads))
        self._in_flight = threading.Semaphore(max(1, num_threads))

    def _dispatch(self, ready: _Ready) -> None:
        # Never queue more work than there are threads: newest data wins in the entities.
        self._in_flight.acquire()

        def run() -> None:
            try:
                self._run(ready)
            finally:
                self._in_flight.release()

        self._pool.submit(run)

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        super().shutdown(timeout_sec)
        self._pool.shutdown(wait=timeout_sec != 0, cancel_futures=True)
        return True


_global_executor: Executor | None = None


def get_global_executor() -> Executor:
    global _global_executor
    if _global_executor is None or _global_executor._is_shutdown:
        _global_executor = SingleThreadedExecutor()
    return _global_executor
