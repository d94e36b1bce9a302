"""Build script shared by pip (`pip install -e .`) and colcon (ament_python).

Metadata and dependencies live in pyproject.toml; this file adds what only setup.py can say:
the ROS 2 share/ data files and the executables `ros2 run` looks for under lib/vla_runtime.
"""

from glob import glob

from setuptools import setup

PACKAGE = "vla_runtime"

# One executable per node file (DESIGN §9, STYLE "Names"): executable name == module name.
NODE_EXECUTABLES = ["talker_node", "listener_node"]


def _data_files() -> list[tuple[str, list[str]]]:
    files = [
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
    ]
    for folder in ("config", "urdf"):
        for path in sorted(glob(f"{folder}/**/*", recursive=True)):
            if not path.endswith("/") and not _is_dir(path):
                files.append((f"share/{PACKAGE}/{path.rsplit('/', 1)[0]}", [path]))
    return files


def _is_dir(path: str) -> bool:
    import os

    return os.path.isdir(path)


setup(
    data_files=_data_files(),
    entry_points={
        "console_scripts": [
            "vla-runtime = vla_runtime.cli.main:main",
            *[f"{name} = vla_runtime.nodes.{name}:main" for name in NODE_EXECUTABLES],
        ]
    },
)
