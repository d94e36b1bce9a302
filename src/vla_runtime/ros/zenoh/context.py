"""The process-wide middleware context: one Zenoh session shared by every node, as rmw_zenoh.

`init()` reads the environment and `--ros-args` once, opens the session (peer, connected to the
router) and starts following the graph's liveliness tokens. `shutdown()` wakes every executor so
`spin()` returns, and closes the session. SIGINT/SIGTERM shut the context down cleanly.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import zenoh

from vla_runtime.ros.zenoh.arguments import RosArguments, parse_ros_args
from vla_runtime.ros.zenoh.config import SessionSettings, open_session, session_config
from vla_runtime.ros.zenoh.graph import GraphCache
from vla_runtime.ros.zenoh.logger import RcutilsLogger
from vla_runtime.ros.zenoh.wire import ADMIN_SPACE

_LOG = logging.getLogger("vla_runtime.zenoh")


class NotInitializedError(RuntimeError):
    """The middleware was used before `init()` or after `shutdown()`."""


class Context:
    """rclpy.context.Context for the zenoh backend."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._session: zenoh.Session | None = None
        self._liveliness_subscriber: Any = None
        self._shutdown = threading.Event()
        self._initialized = False
        self._next_id = 0
        self._on_shutdown: list[Callable[[], None]] = []
        self.graph = GraphCache()
        self.settings: SessionSettings | None = None
        self.ros_args = RosArguments()
        self.argv: list[str] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def init(self, args: list[str] | None = None, domain_id: int | None = None) -> None:
        with self._lock:
            if self._initialized and not self._shutdown.is_set():
                raise RuntimeError("Context.init() must only be called once")
            self.argv = list(sys.argv if args is None else args)
            self.ros_args = parse_ros_args(self.argv)
            settings = SessionSettings.from_environ()
            if domain_id is not None:
                settings = SessionSettings(
                    domain_id,
                    settings.router_endpoint,
                    settings.session_config_uri,
                    settings.router_config_uri,
                    settings.config_override,
                )
            self.settings = settings
            _tune_allocator()
            self._session = open_session(session_config(settings))
            self._shutdown.clear()
            self._initialized = True
        self._follow_graph()
        atexit.register(self._close_session)
        if not self._session.info.routers_zid():
            RcutilsLogger("vla_runtime").warning(
                f"no Zenoh router reachable at {settings.router_endpoint}: nodes will not "
                "discover each other until one runs (start it with `vla-runtime router`)"
            )

    def _follow_graph(self) -> None:
        assert self._session is not None and self.settings is not None

        def on_token(sample: zenoh.Sample) -> None:
            key = str(sample.key_expr)
            if sample.kind == zenoh.SampleKind.PUT:
                self.graph.put(key)
            else:
                self.graph.delete(key)

        # history=True also delivers the tokens that existed before we subscribed.
        # indirect=False: run on Zenoh's own thread. The default starts a non-daemon Python
        # thread, which interpreter exit waits for forever when a script never calls shutdown.
        self._liveliness_subscriber = self._session.liveliness().declare_subscriber(
            f"{ADMIN_SPACE}/{self.settings.domain_id}/**",
            zenoh.handlers.Callback(on_token, indirect=False),
            history=True,
        )

    def ok(self) -> bool:
        return self._initialized and not self._shutdown.is_set()

    def on_shutdown(self, callback: Callable[[], None]) -> None:
        self._on_shutdown.append(callback)

    def request_shutdown(self) -> None:
        """Stop spinning everywhere (ok() turns False, executors wake); the session stays open.

        This is what a signal does. Closing the session is left to `shutdown()` on the main
        thread (or to exit), so it never races the node's own teardown (`destroy_node`).
        """
        with self._lock:
            if not self._initialized or self._shutdown.is_set():
                return
            self._shutdown.set()
            callbacks, self._on_shutdown = self._on_shutdown, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                _LOG.exception("error in an on-shutdown callback")

    def shutdown(self) -> None:
        """rclpy.shutdown: stop spinning and close the session; an error if already closed."""
        if not self._initialized or self._session is None:
            raise RuntimeError("Context.shutdown() called on a context that is not running")
        self.request_shutdown()
        self._close_session()

    def try_shutdown(self) -> None:
        """rclpy.try_shutdown: shutdown() without the error when already down."""
        if self._initialized:
            self.request_shutdown()
            self._close_session()

    def _close_session(self) -> None:
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            try:
                session.close()
            except Exception:
                _LOG.debug("error closing the Zenoh session", exc_info=True)

    def wait_for_shutdown(self, timeout_s: float | None = None) -> bool:
        return self._shutdown.wait(timeout_s)

    # -- shared state ------------------------------------------------------------------------

    @property
    def session(self) -> zenoh.Session:
        if self._session is None or not self.ok():
            raise NotInitializedError(
                "the middleware is not initialised: call vla_runtime.ros.init() first"
            )
        return self._session

    @property
    def domain_id(self) -> int:
        assert self.settings is not None
        return self.settings.domain_id

    @property
    def session_id(self) -> str:
        return str(self.session.zid())

    def next_entity_id(self) -> int:
        """rmw_zenoh: one counter per context, shared by nodes and their entities."""
        with self._lock:
            entity_id = self._next_id
            self._next_id += 1
            return entity_id


def _tune_allocator() -> None:
    """Keep large message buffers on the heap (glibc only; VLA_RUNTIME_TUNE_MALLOC=0 opts out).

    Every image is a fresh ~1 MB buffer (serialise, Zenoh's copy, reassembly, to_bytes). glibc
    serves blocks that size with mmap and returns them with munmap, so each message costs a few
    hundred page faults: measured, it moved image p50 from ~0.95 ms to ~1.65 ms
    (benchmarks/transport.py). Raising the mmap and trim thresholds keeps them on the heap.
    """
    if os.environ.get("VLA_RUNTIME_TUNE_MALLOC", "1") == "0" or not sys.platform.startswith(
        "linux"
    ):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    mallopt(m_mmap_threshold, 32 * 1024 * 1024)
    mallopt(m_trim_threshold, 64 * 1024 * 1024)


_default_context = Context()


def default_context() -> Context:
    return _default_context


def install_signal_handlers(context: Context) -> None:
    """SIGINT/SIGTERM: shut the context down so `spin()` returns; SIGINT also raises
    KeyboardInterrupt in the main thread, as with rclpy's default handler."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, _frame: Any) -> None:
        if not context.ok() and signum == signal.SIGTERM:
            # Asked twice: the process is stuck shutting down, so terminate for real.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        # Waking executors takes locks the interrupted code may hold: do it on another thread.
        threading.Thread(target=context.request_shutdown, name="ros-shutdown", daemon=True).start()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
