"""rclpy.callback_groups: which callbacks may run at the same time on a multi-threaded executor."""

from __future__ import annotations

import threading


class CallbackGroup:
    def __init__(self) -> None:
        self._lock = threading.Lock()

    def can_execute(self, entity: object) -> bool:
        raise NotImplementedError

    def beginning_execution(self, entity: object) -> bool:
        raise NotImplementedError

    def ending_execution(self, entity: object) -> None:
        raise NotImplementedError


class MutuallyExclusiveCallbackGroup(CallbackGroup):
    """At most one callback of the group runs at a time (every node's default group)."""

    def __init__(self) -> None:
        super().__init__()
        self._active: object | None = None

    def can_execute(self, entity: object) -> bool:
        with self._lock:
            return self._active is None

    def beginning_execution(self, entity: object) -> bool:
        with self._lock:
            if self._active is not None:
                return False
            self._active = entity
            return True

    def ending_execution(self, entity: object) -> None:
        with self._lock:
            self._active = None


class ReentrantCallbackGroup(CallbackGroup):
    """Callbacks of the group may run in parallel, even the same one."""

    def can_execute(self, entity: object) -> bool:
        return True

    def beginning_execution(self, entity: object) -> bool:
        return True

    def ending_execution(self, entity: object) -> None:
        return None
