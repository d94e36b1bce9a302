"""Session and router configuration from the environment: loopback, no multicast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vla_runtime.ros.zenoh.config import (
    ConfigError,
    SessionSettings,
    router_config,
    session_config,
)


def _get(config: object, key: str) -> object:
    return json.loads(config.get_json(key))  # type: ignore[attr-defined]


def test_defaults_are_a_loopback_peer_with_multicast_off() -> None:
    settings = SessionSettings.from_environ({})
    assert settings.domain_id == 0
    assert settings.router_endpoint == "tcp/127.0.0.1:7447"
    config = session_config(settings)
    assert _get(config, "mode") == "peer"
    assert _get(config, "connect/endpoints") == ["tcp/127.0.0.1:7447"]
    assert _get(config, "listen/endpoints") == ["tcp/127.0.0.1:0"]
    assert _get(config, "scouting/multicast/enabled") is False
    assert _get(config, "scouting/gossip/enabled") is True
    router = router_config(settings)
    assert _get(router, "mode") == "router"
    assert _get(router, "listen/endpoints") == ["tcp/127.0.0.1:7447"]
    assert _get(router, "scouting/multicast/enabled") is False


def test_override_applies_and_multicast_stays_off() -> None:
    settings = SessionSettings.from_environ(
        {"ZENOH_CONFIG_OVERRIDE": 'mode="client";scouting/multicast/enabled=true'}
    )
    config = session_config(settings)
    assert _get(config, "mode") == "client"
    assert _get(config, "scouting/multicast/enabled") is False


@pytest.mark.parametrize(
    ("environ", "needle"),
    [
        ({"ROS_DOMAIN_ID": "abc"}, "not an integer"),
        ({"ROS_DOMAIN_ID": "999"}, "out of range"),
    ],
)
def test_bad_environment_values(environ: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        SessionSettings.from_environ(environ)


def test_bad_override_names_the_item() -> None:
    settings = SessionSettings.from_environ({"ZENOH_CONFIG_OVERRIDE": "mode"})
    with pytest.raises(ConfigError, match="ZENOH_CONFIG_OVERRIDE item 'mode'"):
        session_config(settings)


def test_config_files_replace_the_defaults(tmp_path: Path) -> None:
    session_file = tmp_path / "session.json5"
    session_file.write_text('{ mode: "client", connect: { endpoints: ["tcp/127.0.0.1:9999"] } }')
    settings = SessionSettings.from_environ({"ZENOH_SESSION_CONFIG_URI": str(session_file)})
    config = session_config(settings)
    assert _get(config, "connect/endpoints") == ["tcp/127.0.0.1:9999"]
    missing = SessionSettings.from_environ({"ZENOH_ROUTER_CONFIG_URI": "/nonexistent.json5"})
    with pytest.raises(ConfigError, match="no such file"):
        router_config(missing)


def test_router_endpoint_and_domain_from_environment() -> None:
    settings = SessionSettings.from_environ(
        {"ROS_DOMAIN_ID": "12", "VLA_RUNTIME_ROUTER": "tcp/127.0.0.1:17000"}
    )
    assert settings.domain_id == 12
    assert _get(session_config(settings), "connect/endpoints") == ["tcp/127.0.0.1:17000"]
