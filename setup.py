"""Build script shared by pip (`pip install -e .`) and colcon (ament_python).

colcon reads package metadata from this file, so it all lives here (pyproject.toml only
configures the build system and the tools). Besides the Python package it installs what
`ros2 run`/`ros2 launch` look for: executables under lib/vla_runtime (see setup.cfg) and
launch/, config/, urdf/ under share/vla_runtime.
"""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "vla_runtime"

# One executable per node file (DESIGN §9, STYLE "Names"): executable name == module name.
NODE_EXECUTABLES = [
    "talker_node",
    "listener_node",
    "driver_node",
    "teleop_node",
    "policy_node",
    "latency_monitor",
    "camera_node",
    "think_node",
]


def _data_files() -> list:
    files = [
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", sorted(glob("launch/*.launch.py"))),
    ]
    for folder in ("config", "urdf", "models"):
        by_dir: dict = {}
        for path in sorted(glob(f"{folder}/**/*", recursive=True)):
            if os.path.isfile(path):
                by_dir.setdefault(os.path.dirname(path), []).append(path)
        files += [(f"share/{PACKAGE}/{d}", paths) for d, paths in sorted(by_dir.items())]
    return files


def _readme() -> str:
    try:
        with open("README.md", encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return ""


setup(
    name=PACKAGE,
    version="0.1.0",
    description="Real-time ROS 2 runtime for vision-language-action robot policies",
    long_description=_readme(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    maintainer="vla_runtime maintainers",
    maintainer_email="maintainers@vla-runtime.dev",
    python_requires=">=3.10",
    package_dir={"": "src"},
    packages=find_packages("src"),
    package_data={PACKAGE: ["py.typed"]},
    zip_safe=False,
    install_requires=[
        # rmw_zenoh Jazzy/Kilted vendor Zenoh 1.8; the wire protocol is stable across 1.x.
        "eclipse-zenoh>=1.8,<2",
        # CDR and the ROS 2 message definitions (Jazzy type store). Our type support uses
        # rosbags' generated (de)serialisers, whose internals are those of 0.11.
        "rosbags>=0.11,<0.12",
        # rmw_zenoh entity GIDs are XXH3-128 of the liveliness key.
        "xxhash>=3",
        "numpy>=1.24",
        "pyyaml>=6",
        # Latency distributions of the latency monitor (HdrHistogram: constant memory, 3 digits).
        "hdrhistogram>=0.10",
        # Hardware client libraries: the same code talks to the real buses and the emulators.
        "feetech-servo-sdk>=1.0,<2",  # scservo_sdk: SO100/SO101 (STS3215)
        "dynamixel-sdk>=3.7",  # Dynamixel leader arms (GELLO-style)
        "python-can>=4.3,<5",  # Damiao motors (YAM) over socketcan / slcan
        "pyserial>=3.5",
        # RealSense cameras (and the software devices of the tests); wheels only for x86_64,
        # so elsewhere the realsense source says how to install it (built from source).
        'pyrealsense2>=2.54; platform_machine == "x86_64"',
        # Policy runtime: the reference model (torch), its weights, and the ONNX backend.
        # scripts/setup.sh installs torch==2.13.0 first (a CPU wheel where one is provided);
        # any torch >= 2.4 that is already there (CUDA build on a robot PC) is kept.
        "torch>=2.4",
        "safetensors>=0.4",
        "onnx>=1.16",
        "onnxscript>=0.2",
        "onnxruntime>=1.18",
        # Profiling: MCAP recordings (ROS 2 profile), HTML report plots, `vla-runtime top`.
        "mcap>=1.1",
        "mcap-ros2-support>=0.5",
        "matplotlib>=3.7",
        "rich>=13",
        "mujoco>=3.1",  # simulated world (sim/); renders offscreen through EGL (Mesa, no GPU)
        # Cameras: V4L2 devices and video files (headless: no GUI libraries on robots).
        "opencv-python-headless>=4.8",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "pytest-timeout>=2.2",
            "ruff>=0.6",
            "mypy>=1.10",
            "types-PyYAML",
            "hypothesis>=6",
            "colcon-common-extensions>=0.3",
            "catkin-pkg>=1.0",
        ],
        # ROS 2's default DDS, for side-by-side transport numbers.
        "bench": ["cyclonedds>=0.10"],
    },
    data_files=_data_files(),
    entry_points={
        "console_scripts": [
            "vla-runtime = vla_runtime.cli.main:main",
            *[f"{name} = vla_runtime.nodes.{name}:main" for name in NODE_EXECUTABLES],
        ]
    },
)
