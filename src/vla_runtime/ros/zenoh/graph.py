"""The ROS graph as seen through rmw_zenoh liveliness tokens.

Each context subscribes to `@ros2_lv/<domain>/**` with history, so it learns about every node,
publisher, subscription, service and client in the domain (ours and rmw_zenoh_cpp's alike), and
keeps the table current as tokens appear and vanish.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from vla_runtime.ros.zenoh import wire
from vla_runtime.ros.zenoh.qos import QoSProfile

_LOG = logging.getLogger("vla_runtime.zenoh.graph")


@dataclass(frozen=True)
class TopicEndpointInfo:
    """rclpy.topic_endpoint_info.TopicEndpointInfo (the fields tools print)."""

    node_name: str
    node_namespace: str
    topic_type: str
    endpoint_type: str  # "PUBLISHER" | "SUBSCRIPTION"
    endpoint_gid: bytes
    qos_profile: QoSProfile
    topic_type_hash: str


class GraphCache:
    """Thread-safe table of live tokens; notifies waiters on every change."""

    def __init__(self) -> None:
        self._tokens: dict[str, wire.EntityToken] = {}
        self._changed = threading.Condition()
        self._listeners: list[Callable[[], None]] = []
        self.rejected_tokens = 0

    # -- updates (from the Zenoh liveliness thread) ----------------------------------------

    def put(self, key: str) -> None:
        try:
            token = wire.EntityToken.parse(key)
        except wire.WireError as exc:
            self.rejected_tokens += 1
            _LOG.debug("ignoring liveliness token: %s", exc)
            return
        with self._changed:
            self._tokens[key] = token
            self._changed.notify_all()
        self._fire()

    def delete(self, key: str) -> None:
        with self._changed:
            self._tokens.pop(key, None)
            self._changed.notify_all()
        self._fire()

    def add_listener(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _fire(self) -> None:
        for listener in list(self._listeners):
            listener()

    # -- queries -----------------------------------------------------------------------------

    def tokens(self) -> list[wire.EntityToken]:
        with self._changed:
            return list(self._tokens.values())

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float | None) -> bool:
        """Block until `predicate()` holds (re-checked on every graph change) or timeout."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout=timeout_s)

    def node_names_and_namespaces(self) -> list[tuple[str, str]]:
        seen = {(t.node_name, t.namespace) for t in self.tokens() if t.kind == wire.NODE}
        return sorted(seen)

    def _endpoints(self, kinds: tuple[str, ...]) -> dict[str, set[str]]:
        result: dict[str, set[str]] = {}
        for token in self.tokens():
            if token.kind in kinds:
                ros_type = _ros_type(token.dds_type)
                result.setdefault(token.topic, set()).add(ros_type)
        return result

    def topic_names_and_types(self) -> list[tuple[str, list[str]]]:
        topics = self._endpoints((wire.PUBLISHER, wire.SUBSCRIPTION))
        return sorted((name, sorted(types)) for name, types in topics.items())

    def service_names_and_types(self) -> list[tuple[str, list[str]]]:
        services = self._endpoints((wire.SERVICE,))
        return sorted((name, sorted(types)) for name, types in services.items())

    def count(self, kind: str, fq_name: str) -> int:
        return sum(1 for t in self.tokens() if t.kind == kind and t.topic == fq_name)

    def endpoints_info(self, kind: str, fq_name: str) -> list[TopicEndpointInfo]:
        label = "PUBLISHER" if kind == wire.PUBLISHER else "SUBSCRIPTION"
        infos = []
        for key, token in sorted(self._snapshot().items()):
            if token.kind == kind and token.topic == fq_name:
                assert token.qos is not None
                infos.append(
                    TopicEndpointInfo(
                        node_name=token.node_name,
                        node_namespace=token.namespace,
                        topic_type=_ros_type(token.dds_type),
                        endpoint_type=label,
                        endpoint_gid=wire.gid_of(key),
                        qos_profile=token.qos,
                        topic_type_hash=token.type_hash,
                    )
                )
        return infos

    def _snapshot(self) -> dict[str, wire.EntityToken]:
        with self._changed:
            return dict(self._tokens)


def _ros_type(dds_type: str) -> str:
    try:
        return wire.ros_type_from_dds(dds_type)
    except wire.WireError:
        return dds_type
