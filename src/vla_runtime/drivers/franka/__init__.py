"""`franka`: a Franka FR3/Panda arm and Franka Hand driven through franka_ros2's topics."""

from vla_runtime.drivers.franka.driver import FrankaConfig, FrankaDriver, build

__all__ = ["FrankaConfig", "FrankaDriver", "build"]
