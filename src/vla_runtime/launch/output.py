"""The launcher's output: every line of every process on one stream, prefixed with its name.

A reader thread per child copies the child's merged stdout and stderr line by line as
`[name] line`; the launcher's own messages go to the same stream, so a lock keeps lines whole.
With colour on, each name gets an ANSI colour that stays the same from run to run.
"""

from __future__ import annotations

import subprocess
import threading
import zlib
from typing import IO

_BOLD = 1
# 31-36 and 91-96: the ANSI colours readable on both dark and light terminals.
_COLOURS = (31, 32, 33, 34, 35, 36, 91, 92, 93, 94, 95, 96)


class PrefixedOutput:
    """One output stream shared by the launcher and the reader threads of its children."""

    def __init__(self, stream: IO[str], *, colour: bool = False) -> None:
        self._stream = stream
        self._colour = colour
        self._lock = threading.Lock()

    def log(self, name: str, message: str) -> None:
        """Write one of the launcher's own messages, its `[name]` prefix in bold."""
        self._write(name, message, _BOLD if self._colour else None)

    def follow(self, name: str, popen: subprocess.Popen[bytes]) -> threading.Thread:
        """Start a daemon thread that copies a child's output until the pipe closes; return it.

        The child must have been started with `stdout=subprocess.PIPE`.
        """
        reader = threading.Thread(
            target=self._pump, args=(name, popen, self._colour_of(name)), daemon=True
        )
        reader.start()
        return reader

    def _pump(self, name: str, popen: subprocess.Popen[bytes], colour: int | None) -> None:
        assert popen.stdout is not None
        with popen.stdout:
            for raw in iter(popen.stdout.readline, b""):
                self._write(name, raw.decode("utf-8", errors="replace").rstrip("\r\n"), colour)

    def _write(self, name: str, line: str, colour: int | None) -> None:
        prefix = f"[{name}]" if colour is None else f"\x1b[{colour}m[{name}]\x1b[0m"
        with self._lock:
            try:
                self._stream.write(f"{prefix} {line}\n")
                self._stream.flush()
            except (OSError, ValueError):
                pass  # stdout closed (e.g. piped into `head`); keep supervising

    def _colour_of(self, name: str) -> int | None:
        if not self._colour:
            return None
        # crc32, not hash(): the colour of a node must not change between runs.
        return _COLOURS[zlib.crc32(name.encode()) % len(_COLOURS)]
