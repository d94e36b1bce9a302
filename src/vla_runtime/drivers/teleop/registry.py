"""`TELEOP_SOURCES`: the teleop sources by name (STYLE: explicit registries)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from vla_runtime.drivers.teleop.keyboard import build_keyboard
from vla_runtime.drivers.teleop.sources import (
    TeleopConfig,
    TeleopConfigError,
    TeleopSource,
    build_dynamixel_leader,
    build_leader_arm,
)

TeleopSourceBuilder = Callable[[TeleopConfig, Mapping[str, Any]], TeleopSource]

TELEOP_SOURCES: dict[str, TeleopSourceBuilder] = {
    "leader_arm": build_leader_arm,
    "dynamixel_leader": build_dynamixel_leader,
    "keyboard": build_keyboard,
}


def build_teleop_source(config: TeleopConfig, parameters: Mapping[str, Any]) -> TeleopSource:
    """The source `config.source` names, from the node's flat parameters; an unknown name or
    a bad parameter raises TeleopConfigError with what to change."""
    try:
        builder = TELEOP_SOURCES[config.source]
    except KeyError:
        close = difflib.get_close_matches(config.source, TELEOP_SOURCES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise TeleopConfigError(
            f"unknown teleop source {config.source!r}; known: "
            f"{', '.join(sorted(TELEOP_SOURCES))}.{hint}"
        ) from None
    try:
        return builder(config, parameters)
    except TeleopConfigError:
        raise
    except (LookupError, ValueError, TypeError) as exc:  # a driver's own config validation
        raise TeleopConfigError(f"{config.source}: {exc}") from exc
