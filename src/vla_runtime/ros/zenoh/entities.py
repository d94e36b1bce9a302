"""Publishers, subscriptions, services, clients, timers and guard conditions over Zenoh.

Threading rule: Zenoh delivers samples, queries and replies on its own threads. Those threads
only queue what arrived and wake the executors; decoding and user callbacks run when an executor
takes the work (`take()`), so a bad message or a raising callback can never break the transport.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zenoh
import zenoh.ext

from vla_runtime.ros.zenoh import wire
from vla_runtime.ros.zenoh.callback_groups import CallbackGroup
from vla_runtime.ros.zenoh.futures import Future
from vla_runtime.ros.zenoh.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from vla_runtime.ros.zenoh.typesupport import MessageSupport, ServiceSupport, TypeSupportError

if TYPE_CHECKING:
    from vla_runtime.ros.zenoh.node import Node

Work = Callable[[], None]
_LOG = logging.getLogger("vla_runtime.zenoh")
# One complaint per entity per this many ns about rejected input, with a running count.
_COMPLAINT_PERIOD_NS = 1_000_000_000
# rmw_zenoh's sporadic heartbeat for RELIABLE + TRANSIENT_LOCAL publishers.
_HEARTBEAT_S = 0.5


def _payload(data: bytes | bytearray | memoryview) -> bytes | bytearray:
    """Zenoh takes bytes or bytearray, not memoryview: unwrap the serialiser's buffer."""
    if isinstance(data, memoryview):
        owner = data.obj
        if isinstance(owner, (bytes, bytearray)) and data.nbytes == len(owner):
            return owner
        return data.tobytes()
    return data


class _Complaints:
    """Rate-limited, counted error reports for one entity (bad input is reported, not fatal)."""

    def __init__(self, node: Node, what: str) -> None:
        self._node = node
        self._what = what
        self._last_ns = 0
        self.count = 0

    def report(self, reason: str) -> None:
        self.count += 1
        now = time.monotonic_ns()
        if now - self._last_ns >= _COMPLAINT_PERIOD_NS:
            self._last_ns = now
            self._node.get_logger().error(
                f"{self._what}: {reason} (rejected so far: {self.count})"
            )


class Entity:
    """Something with a liveliness token, owned by a node, maybe producing executor work."""

    kind = ""

    def __init__(self, node: Node, callback_group: CallbackGroup | None) -> None:
        self._node = node
        self.callback_group = callback_group or node.default_callback_group
        self._token: Any = None
        self.token_key = ""
        self.gid = b""
        self._destroyed = False

    def _declare_token(self, fq_name: str, dds_type: str, type_hash: str, qos: QoSProfile) -> None:
        token = self._node._endpoint_token(self.kind, fq_name, dds_type, type_hash, qos)
        self.token_key = token.key()
        self.gid = wire.gid_of(self.token_key)
        self._token = self._node.context.session.liveliness().declare_token(self.token_key)
        # Our own entities are in the graph at once (as in rclpy), not when the token echoes.
        self._node.context.graph.put(self.token_key)

    def take(self, now_ns: int) -> Work | None:
        return None

    def next_due_ns(self) -> int | None:
        return None

    def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        if self.token_key:
            self._node.context.graph.delete(self.token_key)
        for handle in (self._token, *self._handles()):
            try:
                if handle is not None:
                    handle.undeclare()
            except Exception:
                pass

    def _handles(self) -> tuple[Any, ...]:
        return ()


# ---------------------------------------------------------------------------------------------


class Publisher(Entity):
    kind = wire.PUBLISHER

    def __init__(
        self,
        node: Node,
        support: MessageSupport,
        topic: str,
        qos: QoSProfile,
        callback_group: CallbackGroup | None,
    ) -> None:
        super().__init__(node, callback_group)
        self.msg_type = support.cls
        self.topic_name = topic
        self.qos_profile = qos
        self._support = support
        self._sequence = itertools.count(1)  # rmw_zenoh starts at 1
        key = wire.data_key(node.context.domain_id, topic, support.dds_name, support.type_hash)
        self._declare_token(topic, support.dds_name, support.type_hash, qos)
        session = node.context.session
        reliable = qos.reliability != ReliabilityPolicy.BEST_EFFORT
        congestion = (
            zenoh.CongestionControl.BLOCK
            if reliable and qos.history == HistoryPolicy.KEEP_ALL
            else zenoh.CongestionControl.DROP
        )
        reliability = zenoh.Reliability.RELIABLE if reliable else zenoh.Reliability.BEST_EFFORT
        if qos.durability == DurabilityPolicy.TRANSIENT_LOCAL:
            # Late joiners query this cache (rmw_zenoh: AdvancedPublisher, cache = depth).
            self._publisher: Any = zenoh.ext.declare_advanced_publisher(
                session,
                key,
                congestion_control=congestion,
                reliability=reliability,
                cache=zenoh.ext.CacheConfig(max(1, qos.depth)),
                publisher_detection=True,
                sample_miss_detection=(
                    zenoh.ext.MissDetectionConfig(heartbeat=None, sporadic_heartbeat=_HEARTBEAT_S)
                    if reliable
                    else None
                ),
            )
        else:
            self._publisher = session.declare_publisher(
                key, congestion_control=congestion, reliability=reliability
            )

    def publish(self, msg: Any) -> None:
        """Serialise and send `msg` (or already serialised CDR bytes) to every subscriber."""
        if isinstance(msg, (bytes, bytearray, memoryview)):
            payload = _payload(msg)
        else:
            if getattr(msg, "__msgtype__", None) != self._support.name:
                raise TypeError(
                    f"publisher on {self.topic_name} sends {self._support.name}, "
                    f"not {getattr(msg, '__msgtype__', type(msg).__name__)}"
                )
            payload = _payload(self._support.serialize(msg))
        attachment = wire.Attachment(next(self._sequence), time.time_ns(), self.gid).encode()
        self._publisher.put(payload, attachment=attachment)

    def get_subscription_count(self) -> int:
        return self._node.context.graph.count(wire.SUBSCRIPTION, self.topic_name)

    def _handles(self) -> tuple[Any, ...]:
        return (self._publisher,)


class Subscription(Entity):
    kind = wire.SUBSCRIPTION

    def __init__(
        self,
        node: Node,
        support: MessageSupport,
        topic: str,
        callback: Callable[[Any], None],
        qos: QoSProfile,
        callback_group: CallbackGroup | None,
        raw: bool,
    ) -> None:
        super().__init__(node, callback_group)
        self.msg_type = support.cls
        self.topic_name = topic
        self.qos_profile = qos
        self.callback = callback
        self.raw = raw
        self._support = support
        self._complaints = _Complaints(node, f"subscription {topic} [{support.name}]")
        depth = None if qos.history == HistoryPolicy.KEEP_ALL else max(1, qos.depth)
        # KEEP_LAST n: a slow callback sees the newest n samples; older ones are dropped here.
        self._queue: deque[tuple[bytes, bytes | None]] = deque(maxlen=depth)
        self.received = 0
        key = wire.data_key(node.context.domain_id, topic, support.dds_name, support.type_hash)
        self._declare_token(topic, support.dds_name, support.type_hash, qos)
        session = node.context.session
        handler = zenoh.handlers.Callback(self._on_sample, indirect=False)
        if qos.durability == DurabilityPolicy.TRANSIENT_LOCAL:
            self._subscriber: Any = zenoh.ext.declare_advanced_subscriber(
                session,
                key,
                handler,
                history=zenoh.ext.HistoryConfig(
                    detect_late_publishers=True, max_samples=max(1, qos.depth)
                ),
                recovery=(
                    zenoh.ext.RecoveryConfig(periodic_queries=None, heartbeat=True)
                    if qos.reliability != ReliabilityPolicy.BEST_EFFORT
                    else None
                ),
                subscriber_detection=True,
            )
        else:
            self._subscriber = session.declare_subscriber(key, handler)

    def _on_sample(self, sample: zenoh.Sample) -> None:
        # Zenoh thread: copy out, queue, wake. Nothing here may raise or take long.
        try:
            attachment = sample.attachment
            self._queue.append(
                (sample.payload.to_bytes(), attachment.to_bytes() if attachment else None)
            )
            self.received += 1
        except Exception:
            return
        self._node._wake()

    def take(self, now_ns: int) -> Work | None:
        if not self._queue:  # the common case on every scan: no exception machinery
            return None
        try:
            payload, attachment = self._queue.popleft()
        except IndexError:
            return None
        return lambda: self._deliver(payload, attachment)

    def _deliver(self, payload: bytes, attachment: bytes | None) -> None:
        try:
            wire.Attachment.decode(attachment)
            msg = payload if self.raw else self._support.deserialize(payload)
        except (wire.WireError, TypeSupportError) as exc:
            self._complaints.report(str(exc))
            return
        self.callback(msg)

    @property
    def rejected(self) -> int:
        return self._complaints.count

    def get_publisher_count(self) -> int:
        return self._node.context.graph.count(wire.PUBLISHER, self.topic_name)

    def _handles(self) -> tuple[Any, ...]:
        return (self._subscriber,)


# ---------------------------------------------------------------------------------------------


class Service(Entity):
    kind = wire.SERVICE

    def __init__(
        self,
        node: Node,
        support: ServiceSupport,
        name: str,
        callback: Callable[[Any, Any], Any],
        qos: QoSProfile,
        callback_group: CallbackGroup | None,
    ) -> None:
        super().__init__(node, callback_group)
        self.srv_type = support.cls
        self.srv_name = name
        self.callback = callback
        self._support = support
        self._complaints = _Complaints(node, f"service {name} [{support.name}]")
        self._pending: deque[zenoh.Query] = deque()
        self._key = wire.data_key(
            node.context.domain_id, name, support.dds_name, support.type_hash
        )
        self._declare_token(name, support.dds_name, support.type_hash, qos)
        self._queryable = node.context.session.declare_queryable(
            self._key, zenoh.handlers.Callback(self._on_query, indirect=False), complete=True
        )

    def _on_query(self, query: zenoh.Query) -> None:
        self._pending.append(query)  # answered later, from the executor; Zenoh waits for it
        self._node._wake()

    def take(self, now_ns: int) -> Work | None:
        if not self._pending:
            return None
        try:
            query = self._pending.popleft()
        except IndexError:
            return None
        return lambda: self._answer(query)

    def _answer(self, query: zenoh.Query) -> None:
        try:
            request_attachment = wire.Attachment.decode(
                query.attachment.to_bytes() if query.attachment else None
            )
            request = self._support.request.deserialize(
                query.payload.to_bytes() if query.payload else b""
            )
        except (wire.WireError, TypeSupportError) as exc:
            self._complaints.report(str(exc))
            query.reply_err(f"{self.srv_name}: bad request: {exc}".encode())
            return
        try:
            response = self.callback(request, self._support.response.cls())
            payload = _payload(self._support.response.serialize(response))
        except Exception as exc:
            # Tell the caller instead of leaving it waiting for the 10-minute query timeout.
            query.reply_err(f"{self.srv_name}: server error: {exc}".encode())
            raise
        # The reply echoes the client's sequence number and GID, with a fresh timestamp.
        attachment = wire.Attachment(
            request_attachment.sequence_number, time.time_ns(), request_attachment.gid
        ).encode()
        query.reply(self._key, payload, attachment=attachment)

    def _handles(self) -> tuple[Any, ...]:
        return (self._queryable,)


class ServiceError(RuntimeError):
    """A service call that the server (or the middleware) answered with an error."""


class Client(Entity):
    kind = wire.CLIENT

    def __init__(
        self,
        node: Node,
        support: ServiceSupport,
        name: str,
        qos: QoSProfile,
        callback_group: CallbackGroup | None,
    ) -> None:
        super().__init__(node, callback_group)
        self.srv_type = support.cls
        self.srv_name = name
        self._support = support
        self._sequence = itertools.count(1)
        key = wire.data_key(node.context.domain_id, name, support.dds_name, support.type_hash)
        self._declare_token(name, support.dds_name, support.type_hash, qos)
        self._querier = node.context.session.declare_querier(
            key,
            target=zenoh.QueryTarget.ALL_COMPLETE,
            consolidation=zenoh.ConsolidationMode.NONE,
        )

    def call_async(self, request: Any) -> Future:
        if getattr(request, "__msgtype__", None) != self._support.request.name:
            raise TypeError(
                f"client {self.srv_name} sends {self._support.request.name}, "
                f"not {getattr(request, '__msgtype__', type(request).__name__)}"
            )
        future = Future(scheduler=self._node)
        sequence = next(self._sequence)
        payload = _payload(self._support.request.serialize(request))
        attachment = wire.Attachment(sequence, time.time_ns(), self.gid).encode()

        def on_reply(reply: zenoh.Reply) -> None:
            # Zenoh thread: decoding only; the future's callbacks go to the executor.
            if reply.ok is None:
                error = reply.err.payload.to_bytes().decode(errors="replace") if reply.err else ""
                future.set_exception(ServiceError(error or f"{self.srv_name}: error reply"))
                return
            try:
                wire.Attachment.decode(
                    reply.ok.attachment.to_bytes() if reply.ok.attachment else None
                )
                future.set_result(self._support.response.deserialize(reply.ok.payload.to_bytes()))
            except (wire.WireError, TypeSupportError) as exc:
                future.set_exception(ServiceError(f"{self.srv_name}: bad response: {exc}"))

        def on_done() -> None:
            if not future.done():
                future.set_exception(ServiceError(f"{self.srv_name}: no service server answered"))

        self._querier.get(
            zenoh.handlers.Callback(on_reply, on_done, indirect=False),
            payload=payload,
            attachment=attachment,
        )
        return future

    def call(self, request: Any, timeout_sec: float | None = None) -> Any:
        """Blocking call (Jazzy signature). Works whether or not an executor spins the node."""
        future = self.call_async(request)
        if not future.wait(timeout_sec):
            future.cancel()
            return None
        return future.result()

    def wait_for_service(self, timeout_sec: float | None = None) -> bool:
        graph = self._node.context.graph
        return graph.wait_until(lambda: graph.count(wire.SERVICE, self.srv_name) > 0, timeout_sec)

    def service_is_ready(self) -> bool:
        return self._node.context.graph.count(wire.SERVICE, self.srv_name) > 0

    def _handles(self) -> tuple[Any, ...]:
        return (self._querier,)


# ---------------------------------------------------------------------------------------------


class Timer(Entity):
    """Fires every `period_ns` on the steady clock; missed periods are skipped, not bunched."""

    def __init__(
        self,
        node: Node,
        period_s: float,
        callback: Callable[[], Any],
        callback_group: CallbackGroup | None,
        autostart: bool = True,
    ) -> None:
        super().__init__(node, callback_group)
        if period_s <= 0:
            raise ValueError(f"timer period must be > 0 s, got {period_s}")
        self.timer_period_ns = int(period_s * 1e9)
        self.callback = callback
        self._canceled = not autostart
        self._next_ns = time.monotonic_ns() + self.timer_period_ns

    def take(self, now_ns: int) -> Work | None:
        if self._canceled or now_ns < self._next_ns:
            return None
        missed = (now_ns - self._next_ns) // self.timer_period_ns + 1
        self._next_ns += missed * self.timer_period_ns
        return self.callback

    def next_due_ns(self) -> int | None:
        return None if self._canceled else self._next_ns

    def cancel(self) -> None:
        self._canceled = True

    def is_canceled(self) -> bool:
        return self._canceled

    def reset(self) -> None:
        self._canceled = False
        self._next_ns = time.monotonic_ns() + self.timer_period_ns
        self._node._wake()

    def is_ready(self) -> bool:
        return not self._canceled and time.monotonic_ns() >= self._next_ns

    def time_until_next_call(self) -> int | None:
        if self._canceled:
            return None
        return self._next_ns - time.monotonic_ns()

    @property
    def timer_period_s(self) -> float:
        return self.timer_period_ns / 1e9


class GuardCondition(Entity):
    def __init__(
        self, node: Node, callback: Callable[[], Any], callback_group: CallbackGroup | None
    ) -> None:
        super().__init__(node, callback_group)
        self.callback = callback
        self._triggered = threading.Event()

    def trigger(self) -> None:
        self._triggered.set()
        self._node._wake()

    def take(self, now_ns: int) -> Work | None:
        if not self._triggered.is_set():
            return None
        self._triggered.clear()
        return self.callback


class Rate:
    """rclpy Rate: `rate.sleep()` keeps a loop at `frequency` Hz on the steady clock."""

    def __init__(self, frequency: float) -> None:
        if frequency <= 0:
            raise ValueError(f"rate must be > 0 Hz, got {frequency}")
        self._period_ns = int(1e9 / frequency)
        self._next_ns = time.monotonic_ns() + self._period_ns

    def sleep(self) -> None:
        now = time.monotonic_ns()
        if now < self._next_ns:
            time.sleep((self._next_ns - now) / 1e9)
            self._next_ns += self._period_ns
        else:  # late: restart the grid instead of bursting to catch up
            self._next_ns = now + self._period_ns

    def destroy(self) -> None:
        return None
