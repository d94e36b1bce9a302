"""vla_runtime: a real-time ROS 2 runtime for vision-language-action robot policies."""

__version__ = "0.1.0"
