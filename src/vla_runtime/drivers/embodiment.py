"""An embodiment's driver configuration, read from its ROS parameter file.

`config/embodiments/<name>.yaml` (ROS 2 parameter format) holds everything that differs between
robots: joint names, URDF, control rate, acceleration limits, chunk execution and handover
settings, and the `driver.*` parameters of its hardware stack. Bimanual rigs list their arms in
`driver.arm_names` with one `driver.<arm>.*` subtree each; the builder receives them as
`parameters["arms"]`, in that order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vla_runtime.core.arm_control import ArmControlConfig
from vla_runtime.core.chunk_executor import ChunkExecutorConfig
from vla_runtime.core.safety import EnvelopeLimits
from vla_runtime.core.urdf import load_joint_limits
from vla_runtime.resources import resolve


class EmbodimentConfigError(ValueError):
    """A parameter file that does not describe a usable embodiment (message says what to fix)."""


@dataclass(frozen=True)
class EmbodimentConfig:
    """Driver-side description of one robot.

    Attributes:
        name: registry key, e.g. 'so100' (also the URDF folder and config file name).
        joint_names: command order, identical to the URDF joint names.
        urdf: URDF path, relative to the package's urdf/ folder or absolute.
        control_rate_hz: the driver's fixed loop rate.
        max_acceleration: per joint [rad/s² or m/s²] (URDFs carry no acceleration limits).
        velocity_scale: fraction of the URDF velocity limits the envelope allows.
        state_publish_rate_hz: /robot/joint_states and /robot/joint_commands rate (<= loop).
        realtime_priority: SCHED_FIFO priority of the control thread (1..99), 0 = normal
            scheduling. Needs CAP_SYS_NICE or an rtprio limit (as ros2_control's
            thread_priority); benchmarks/drivers.py shows what it buys on a loaded machine.
        chunk: chunk execution settings.
        control: handover and watchdog settings.
        driver: the hardware stack's parameters (see each driver's config class).
    """

    name: str
    joint_names: tuple[str, ...]
    urdf: str
    control_rate_hz: float
    max_acceleration: tuple[float, ...]
    velocity_scale: float = 1.0
    state_publish_rate_hz: float = 100.0
    realtime_priority: int = 0
    chunk: ChunkExecutorConfig = field(default_factory=ChunkExecutorConfig)
    control: ArmControlConfig = field(default_factory=ArmControlConfig)
    driver: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.joint_names:
            raise EmbodimentConfigError(f"{self.name}: joint_names is empty")
        if len(self.max_acceleration) != len(self.joint_names):
            raise EmbodimentConfigError(
                f"{self.name}: max_acceleration has {len(self.max_acceleration)} values for "
                f"{len(self.joint_names)} joints; give one per joint"
            )
        if not 1.0 <= self.control_rate_hz <= 2000.0:
            raise EmbodimentConfigError(
                f"{self.name}: control_rate_hz {self.control_rate_hz} is outside 1..2000 Hz"
            )
        if not 0 <= self.realtime_priority <= 99:
            raise EmbodimentConfigError(
                f"{self.name}: realtime_priority must be 0 (off) or 1..99, "
                f"got {self.realtime_priority}"
            )
        if not 0.0 < self.state_publish_rate_hz <= self.control_rate_hz:
            raise EmbodimentConfigError(
                f"{self.name}: state_publish_rate_hz must be in (0, control_rate_hz]"
            )

    @property
    def period_s(self) -> float:
        return 1.0 / self.control_rate_hz

    def envelope_limits(self) -> EnvelopeLimits:
        """Position and velocity limits from the URDF, accelerations from this config."""
        path = resolve("urdf", self.urdf)
        try:
            limits = load_joint_limits(path, self.joint_names)
        except (OSError, ValueError) as exc:
            raise EmbodimentConfigError(f"{self.name}: {exc}") from exc
        return EnvelopeLimits.from_values(
            [limit.lower for limit in limits],
            [limit.upper for limit in limits],
            [limit.max_velocity for limit in limits],
            self.max_acceleration,
            self.velocity_scale,
        )

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> EmbodimentConfig:
        """Build from flat ROS parameters (`chunk.blend`, `driver.port`, ...)."""

        def need(key: str) -> Any:
            if key not in parameters:
                raise EmbodimentConfigError(
                    f"missing parameter {key!r}; pass the embodiment's parameter file "
                    "(config/embodiments/<name>.yaml) with --params-file"
                )
            return parameters[key]

        name = str(need("embodiment"))
        try:
            chunk = ChunkExecutorConfig(**_subtree(parameters, "chunk"))
            control = ArmControlConfig(**_subtree(parameters, "control"))
            return cls(
                name=name,
                joint_names=tuple(str(n) for n in need("joint_names")),
                urdf=str(need("urdf")),
                control_rate_hz=float(need("control_rate_hz")),
                max_acceleration=tuple(float(a) for a in need("max_acceleration")),
                velocity_scale=float(parameters.get("velocity_scale", 1.0)),
                state_publish_rate_hz=float(parameters.get("state_publish_rate_hz", 100.0)),
                realtime_priority=int(parameters.get("realtime_priority", 0)),
                chunk=chunk,
                control=control,
                driver=driver_parameters(parameters),
            )
        except EmbodimentConfigError:
            raise
        except TypeError as exc:  # an unknown key in chunk.* / control.*
            raise EmbodimentConfigError(f"{name}: {exc}") from exc
        except ValueError as exc:
            raise EmbodimentConfigError(f"{name}: {exc}") from exc


def _subtree(parameters: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    head = prefix + "."
    return {key[len(head) :]: value for key, value in parameters.items() if key.startswith(head)}


def driver_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The `driver.*` subtree; with `driver.arm_names`, one nested dict per arm in `arms`."""
    flat = _subtree(parameters, "driver")
    arm_names = [str(name) for name in flat.pop("arm_names", [])]
    if not arm_names:
        return flat
    arms = []
    for arm in arm_names:
        subtree = _subtree(flat, arm)
        if not subtree:
            raise EmbodimentConfigError(f"driver.arm_names lists {arm!r} but no driver.{arm}.*")
        arms.append(subtree)
    shared = {key: value for key, value in flat.items() if key.split(".")[0] not in arm_names}
    return {**shared, "arms": arms}
