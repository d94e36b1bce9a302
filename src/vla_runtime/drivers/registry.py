"""Embodiment name → driver builder: the only place that knows which hardware stack an
embodiment uses (STYLE: explicit registries, no `if embodiment == ...` elsewhere).

Builders are imported lazily, so a machine without one stack's SDK still runs the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from vla_runtime.drivers.base import ArmDriver
from vla_runtime.drivers.parameters import did_you_mean

# Driver parameters as the node read them from the embodiment's ROS parameter file: the
# `driver.*` subtree with the prefix stripped (e.g. {"port": "/dev/ttyACM0", "ids": [1, 2]}).
DriverParameters = Mapping[str, Any]
DriverBuilder = Callable[[tuple[str, ...], DriverParameters], ArmDriver]

_BUILDERS: dict[str, str] = {
    "so100": "vla_runtime.drivers.so100.driver:build",
    "yam_bimanual": "vla_runtime.drivers.yam.driver:build",
    "franka": "vla_runtime.drivers.franka.driver:build",
}


class UnknownEmbodimentError(LookupError):
    """An embodiment name no driver is registered for."""


def known_embodiments() -> list[str]:
    return sorted(_BUILDERS)


def driver_builder(embodiment: str) -> DriverBuilder:
    """The builder for `embodiment`; an unknown name fails with the known ones."""
    try:
        target = _BUILDERS[embodiment]
    except KeyError:
        raise UnknownEmbodimentError(
            f"unknown embodiment {embodiment!r}; known: {', '.join(known_embodiments())}."
            + did_you_mean(embodiment, _BUILDERS)
        ) from None
    module_name, _, attribute = target.partition(":")
    builder: DriverBuilder = getattr(importlib.import_module(module_name), attribute)
    return builder


def build_driver(
    embodiment: str, joint_names: tuple[str, ...], parameters: DriverParameters
) -> ArmDriver:
    return driver_builder(embodiment)(joint_names, parameters)
