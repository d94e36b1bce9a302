"""Zenoh session and router configuration, mirroring rmw_zenoh's defaults.

rmw_zenoh (DEFAULT_RMW_ZENOH_SESSION_CONFIG.json5 / ..._ROUTER_CONFIG.json5): nodes are peers that
connect to a local router for discovery only; gossip tells them about each other and data flows
peer to peer. Multicast scouting is off there and *always* off here (a lab LAN must never see
our discovery traffic). Unlike rmw_zenohd, our router listens on loopback unless told otherwise.

Environment (same names as rmw_zenoh):
  ZENOH_SESSION_CONFIG_URI  JSON5 file replacing the default node session config
  ZENOH_ROUTER_CONFIG_URI   JSON5 file replacing the default router config
  ZENOH_CONFIG_OVERRIDE     `key=value;key=value`, each value JSON5, applied last
  ROS_DOMAIN_ID             first chunk of every key (default 0)
and ours:
  VLA_RUNTIME_ROUTER        the router endpoint nodes connect to (default tcp/127.0.0.1:7447)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import zenoh

DEFAULT_ROUTER_ENDPOINT = "tcp/127.0.0.1:7447"
_LOG = logging.getLogger("vla_runtime.zenoh")


class ConfigError(ValueError):
    """A Zenoh configuration the user supplied cannot be used."""


@dataclass(frozen=True)
class SessionSettings:
    """What a node's session needs from the environment, read once at `init()`."""

    domain_id: int
    router_endpoint: str
    session_config_uri: str | None
    router_config_uri: str | None
    config_override: str | None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SessionSettings:
        env = os.environ if environ is None else environ
        raw_domain = env.get("ROS_DOMAIN_ID", "0").strip() or "0"
        try:
            domain_id = int(raw_domain)
        except ValueError as exc:
            raise ConfigError(f"ROS_DOMAIN_ID={raw_domain!r} is not an integer") from exc
        if not 0 <= domain_id <= 232:
            raise ConfigError(f"ROS_DOMAIN_ID={domain_id} is out of range 0..232")
        return cls(
            domain_id=domain_id,
            router_endpoint=env.get("VLA_RUNTIME_ROUTER", DEFAULT_ROUTER_ENDPOINT).strip()
            or DEFAULT_ROUTER_ENDPOINT,
            session_config_uri=env.get("ZENOH_SESSION_CONFIG_URI") or None,
            router_config_uri=env.get("ZENOH_ROUTER_CONFIG_URI") or None,
            config_override=env.get("ZENOH_CONFIG_OVERRIDE") or None,
        )


def _common(config: zenoh.Config) -> None:
    config.insert_json5("scouting/gossip/enabled", "true")
    config.insert_json5("scouting/gossip/multihop", "false")
    config.insert_json5(
        "scouting/gossip/target", json.dumps({"router": ["router", "peer"], "peer": ["router"]})
    )
    config.insert_json5(
        "timestamping/enabled", json.dumps({"router": True, "peer": True, "client": True})
    )
    # rmw_zenoh 0.2.8 raised this to 10 min so long service calls are not cut off.
    config.insert_json5("queries_default_timeout", "600000")


def _apply_override(config: zenoh.Config, override: str | None) -> None:
    if not override:
        return
    for item in filter(None, (part.strip() for part in override.split(";"))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"ZENOH_CONFIG_OVERRIDE item {item!r} is not key=value "
                '(e.g. mode="client";connect/endpoints=["tcp/127.0.0.1:7447"])'
            )
        try:
            config.insert_json5(key.strip(), value.strip())
        except Exception as exc:
            raise ConfigError(
                f"ZENOH_CONFIG_OVERRIDE {key.strip()}={value.strip()}: {exc}"
            ) from exc


def _force_no_multicast(config: zenoh.Config) -> None:
    try:
        enabled = json.loads(config.get_json("scouting/multicast/enabled"))
    except Exception:
        enabled = None
    if enabled:
        _LOG.warning("multicast scouting was enabled by configuration; vla_runtime keeps it off")
    config.insert_json5("scouting/multicast/enabled", "false")


def _load_file(uri: str, variable: str) -> zenoh.Config:
    path = uri.removeprefix("file://")
    if not os.path.isfile(path):
        raise ConfigError(f"{variable}={uri!r}: no such file")
    try:
        return zenoh.Config.from_file(path)
    except Exception as exc:
        raise ConfigError(f"{variable}={uri!r}: {exc}") from exc


def session_config(settings: SessionSettings) -> zenoh.Config:
    """A node's session: a peer connecting to the router, listening on an OS-chosen port."""
    if settings.session_config_uri:
        config = _load_file(settings.session_config_uri, "ZENOH_SESSION_CONFIG_URI")
    else:
        config = zenoh.Config()
        config.insert_json5("mode", '"peer"')
        config.insert_json5("connect/endpoints", json.dumps([settings.router_endpoint]))
        # Loopback by default; the port is whatever the OS gives (rmw_zenoh: localhost:0).
        config.insert_json5("listen/endpoints", json.dumps([_listen_like(settings)]))
        # Wait for the router like rmw_zenoh does (retry 1 s .. 4 s), but never block init.
        config.insert_json5("connect/timeout_ms", json.dumps({"router": -1, "peer": -1}))
        config.insert_json5(
            "connect/exit_on_failure", json.dumps({"router": False, "peer": False})
        )
        _common(config)
    _apply_override(config, settings.config_override)
    _force_no_multicast(config)
    return config


def router_config(settings: SessionSettings, listen: list[str] | None = None) -> zenoh.Config:
    """The router: discovery hub for the nodes of one host (or lab, when configured so)."""
    if settings.router_config_uri:
        config = _load_file(settings.router_config_uri, "ZENOH_ROUTER_CONFIG_URI")
    else:
        config = zenoh.Config()
        config.insert_json5("mode", '"router"')
        config.insert_json5("listen/endpoints", json.dumps(listen or [settings.router_endpoint]))
        _common(config)
    if listen and settings.router_config_uri:
        config.insert_json5("listen/endpoints", json.dumps(listen))
    _apply_override(config, settings.config_override)
    _force_no_multicast(config)
    return config


def _listen_like(settings: SessionSettings) -> str:
    """Listen on the router endpoint's host with port 0: loopback for a loopback router."""
    proto, _, address = settings.router_endpoint.partition("/")
    host = address.rsplit(":", 1)[0] if ":" in address else address
    if proto not in ("tcp", "tls", "quic", "udp") or not host:
        return "tcp/127.0.0.1:0"
    return f"{proto}/{host}:0"


def open_session(config: zenoh.Config) -> zenoh.Session:
    try:
        return zenoh.open(config)
    except Exception as exc:
        raise ConfigError(f"could not open a Zenoh session: {exc}") from exc
