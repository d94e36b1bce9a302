"""Where the package's data lives: `config/`, `urdf/`, `launch/`, `models/`.

The source checkout's folders when running from one (edits take effect without reinstalling),
else a pip install's `<prefix>/share/vla_runtime/...` (or the `--user` one), else the ament
index's share directory (a colcon install).
"""

from __future__ import annotations

import contextlib
import os
import sys
import sysconfig
from pathlib import Path

PACKAGE = "vla_runtime"


def share_path(kind: str) -> Path:
    """The package's `kind` folder ('config', 'urdf', 'launch', 'models').

    Raises:
        FileNotFoundError: if no installed or checked-out copy exists.
    """
    checkout = Path(__file__).resolve().parents[2]
    candidates = []
    if (checkout / "package.xml").is_file():
        candidates.append(checkout / kind)
    candidates.append(Path(sys.prefix) / "share" / PACKAGE / kind)
    with contextlib.suppress(KeyError):
        user_data = sysconfig.get_path("data", f"{os.name}_user")
        candidates.append(Path(user_data) / "share" / PACKAGE / kind)
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE)) / kind)
    except Exception:  # not installed, or this package is not in the index
        pass
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"no {PACKAGE} {kind} directory; looked in {', '.join(map(str, candidates))}. "
        "Run from a source checkout, or install the package (pip install . / colcon build)."
    )


def resolve(kind: str, path: str) -> Path:
    """An absolute path as is; a relative one inside the package's `kind` folder."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else share_path(kind) / candidate
