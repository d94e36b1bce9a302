"""`keyboard` teleop source: single-key joint jogging from a terminal."""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import numpy as np

from vla_runtime.drivers.base import FloatArray
from vla_runtime.drivers.teleop.sources import (
    TeleopConfig,
    TeleopConfigError,
    TeleopSource,
    _per_joint,
    _reject_unknown,
    _subtree,
)

KEY_MAP = """\
  1..9   select joint 1..9 (follower order)
  + =    jog the selected joint up by its step
  - _    jog it down
  r      back to the start pose"""


class KeyboardJog(TeleopSource):
    """Jog one joint at a time from single keys (see `KEY_MAP`), for arms without a leader.

    Keys are taken from `stream` without blocking on every `read()`: a terminal is put in
    cbreak mode (no Enter needed, no echo) between connect() and disconnect(); a pipe is polled
    with select(); a stream without a file descriptor (StringIO) is drained with read().
    """

    def __init__(
        self, joint_names: Sequence[str], start_pose: FloatArray, step: FloatArray,
        stream: TextIO | None = None,
    ) -> None:  # fmt: skip
        self._joint_names = tuple(joint_names)
        self.start_pose = np.array(start_pose, dtype=np.float64)
        self.step = np.array(step, dtype=np.float64)
        self.pose = self.start_pose.copy()
        self.selected = 0  # index of the joint the +/- keys move
        self._stream = stream if stream is not None else sys.stdin
        self._fd: int | None = None
        self._saved_mode: list[Any] | None = None
        self._eof = False

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self._joint_names

    @property
    def instructions(self) -> str:
        return f"keyboard jog keys:\n{KEY_MAP}"

    def connect(self) -> None:
        try:
            self._fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
            self._fd = None
        self._eof = False
        if self._fd is not None and self._stream.isatty():
            import termios
            import tty

            self._saved_mode = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)

    def read(self) -> FloatArray:
        for key in self._pending():
            self.press(key)
        pose: FloatArray = self.pose.copy()
        return pose

    def press(self, key: str) -> None:
        """Apply one key of `KEY_MAP`; any other key is ignored."""
        if key.isdigit() and 1 <= int(key) <= min(9, len(self.pose)):
            self.selected = int(key) - 1
        elif key in "+=":
            self.pose[self.selected] += self.step[self.selected]
        elif key in "-_":
            self.pose[self.selected] -= self.step[self.selected]
        elif key == "r":
            self.pose = self.start_pose.copy()

    def disconnect(self) -> None:
        if self._saved_mode is not None and self._fd is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved_mode)
            self._saved_mode = None

    def _pending(self) -> str:
        if self._eof:
            return ""
        if self._fd is None:
            text = self._stream.read()
            return text if isinstance(text, str) else ""
        chunks: list[bytes] = []
        # Raw os.read on the descriptor: the text wrapper's buffer would hide keys from select.
        while select.select([self._fd], [], [], 0.0)[0]:
            data = os.read(self._fd, 256)
            if not data:
                self._eof = True
                break
            chunks.append(data)
        return b"".join(chunks).decode("utf-8", errors="ignore")


def build_keyboard(config: TeleopConfig, parameters: Mapping[str, Any]) -> TeleopSource:
    keyboard = _subtree(parameters, "keyboard")
    _reject_unknown(keyboard, ("start_pose", "step"), "keyboard")
    names = config.joint_names
    if "start_pose" not in keyboard:
        raise TeleopConfigError(
            f"keyboard.start_pose is missing: give one position per joint ({', '.join(names)}), "
            "e.g. the arm's ready pose inside its limits"
        )
    start = _per_joint(keyboard["start_pose"], len(names), "keyboard.start_pose", names)
    step = _per_joint(keyboard.get("step", 0.02), len(names), "keyboard.step", names)
    if np.any(step <= 0.0):
        raise TeleopConfigError(f"keyboard.step must be > 0, got {list(step)}")
    return KeyboardJog(names, start, step)
