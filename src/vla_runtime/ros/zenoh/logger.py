"""rclpy's RcutilsLogger for the zenoh backend: same methods, kwargs and console format.

Format (rcutils default): `[INFO] [1700000000.123456789] [node_name]: message`, to stderr.
"""

from __future__ import annotations

import enum
import sys
import threading
import time
from typing import Any


class LoggingSeverity(enum.IntEnum):
    UNSET = 0
    DEBUG = 10
    INFO = 20
    WARN = 30
    ERROR = 40
    FATAL = 50


_LEVELS = {level.name.lower(): level for level in LoggingSeverity}
_LEVELS["warning"] = LoggingSeverity.WARN


def severity_from_name(name: str) -> LoggingSeverity:
    try:
        return _LEVELS[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown log level {name!r}; use one of debug, info, warn, error, fatal"
        ) from None


class RcutilsLogger:
    _default_level = LoggingSeverity.INFO
    _write_lock = threading.Lock()

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._level = LoggingSeverity.UNSET
        self._once: set[tuple[str, int]] = set()
        self._last_ns: dict[tuple[str, int], int] = {}
        self._skipped: set[tuple[str, int]] = set()

    @classmethod
    def set_default_level(cls, level: LoggingSeverity) -> None:
        cls._default_level = level

    def get_child(self, name: str) -> RcutilsLogger:
        child = RcutilsLogger(f"{self.name}.{name}" if self.name else name)
        child._level = self._level
        return child

    def set_level(self, level: LoggingSeverity | int) -> None:
        self._level = LoggingSeverity(level)

    def get_effective_level(self) -> LoggingSeverity:
        return self._level or self._default_level

    def is_enabled_for(self, severity: LoggingSeverity | int) -> bool:
        return int(severity) >= int(self.get_effective_level())

    def log(self, message: Any, severity: LoggingSeverity | int, **kwargs: Any) -> bool:
        severity = LoggingSeverity(severity)
        if not self.is_enabled_for(severity):
            return False
        site = (str(kwargs.get("name", "")), _caller_line())
        if kwargs.get("once"):
            if site in self._once:
                return False
            self._once.add(site)
        if kwargs.get("skip_first") and site not in self._skipped:
            self._skipped.add(site)
            return False
        throttle_s = kwargs.get("throttle_duration_sec")
        if throttle_s:
            now = time.monotonic_ns()
            last = self._last_ns.get(site)
            if last is not None and now - last < throttle_s * 1e9:
                return False
            self._last_ns[site] = now
        stamp = time.time_ns()
        line = (
            f"[{severity.name}] [{stamp // 1_000_000_000}.{stamp % 1_000_000_000:09d}] "
            f"[{self.name}]: {message}\n"
        )
        with self._write_lock:
            sys.stderr.write(line)
            sys.stderr.flush()
        return True

    def debug(self, message: Any, **kwargs: Any) -> bool:
        return self.log(message, LoggingSeverity.DEBUG, **kwargs)

    def info(self, message: Any, **kwargs: Any) -> bool:
        return self.log(message, LoggingSeverity.INFO, **kwargs)

    def warning(self, message: Any, **kwargs: Any) -> bool:
        return self.log(message, LoggingSeverity.WARN, **kwargs)

    warn = warning

    def error(self, message: Any, **kwargs: Any) -> bool:
        return self.log(message, LoggingSeverity.ERROR, **kwargs)

    def fatal(self, message: Any, **kwargs: Any) -> bool:
        return self.log(message, LoggingSeverity.FATAL, **kwargs)


def _caller_line() -> int:
    # The call site of debug()/info()/...: two frames above log().
    frame = sys._getframe(3)
    return hash((frame.f_code.co_filename, frame.f_lineno))


def get_logger(name: str) -> RcutilsLogger:
    return RcutilsLogger(name)
