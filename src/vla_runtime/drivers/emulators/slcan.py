"""A USB-CAN adapter emulated on a pseudo-terminal, speaking SLCAN (the Lawicel ASCII protocol).

A CAN device emulator hands `SlcanPty` its frame handler; a driver in another process opens
the pty with python-can's `slcan` interface, exactly as it would open a real adapter:

    with SlcanPty(emulator.handle_frame, link_path="/tmp/can_follower_l") as adapter:
        ...  # elsewhere: can.Bus(interface="slcan", channel="/tmp/can_follower_l")

The adapter answers the ASCII commands itself (open, close, bitrate, version, ...). Each
standard data frame (`tIIILDD..`) that arrives while the channel is open goes to
`on_frame(arbitration_id, data, reply)`; `reply(arbitration_id, data)` sends a standard data
frame back to the driver, from any thread.
"""

from __future__ import annotations

import contextlib
import os
import select
import termios
import threading
import time
import tty
from collections.abc import Callable
from types import TracebackType

Reply = Callable[[int, bytes], None]
"""Sends one standard data frame (arbitration id, up to 8 data bytes) back to the driver."""
FrameHandler = Callable[[int, bytes, Reply], None]
"""Acts on one received frame (arbitration id, data); answers, if at all, through `Reply`."""

# SLCAN answers by command letter: version, serial number, status flags; extended (T) and
# remote (r, R) frames are acknowledged and ignored (standard data frames only); open, close
# and settings are acknowledged with CR. Anything else gets BELL (error).
_SLCAN_ANSWERS = {
    **{"V": b"V1013\r", "N": b"NDM01\r", "F": b"F00\r", "T": b"Z\r", "r": b"z\r", "R": b"z\r"},
    **dict.fromkeys(("", "O", "L", "C", "S", "s", "Y", "Z", "M", "m", "X", "W"), b"\r"),
}
_ERROR = b"\a"


class SlcanPty:
    """The adapter side of SLCAN on a pty: ASCII commands in, `t...` frames out.

    Nothing happens until `open()`, which makes the pty (and the optional symlink to it) and
    starts the reader thread; `close()` stops the thread and removes both.
    """

    def __init__(
        self,
        on_frame: FrameHandler,
        link_path: str | None = None,
        *,
        thread_name: str = "slcan-pty",
    ) -> None:
        """Prepares the adapter.

        Args:
            on_frame: called, on the reader thread, with each standard data frame received
                while the channel is open.
            link_path: also make this symlink to the pty (replaced if it is a symlink).
            thread_name: name of the reader thread.
        """
        self._on_frame = on_frame
        self._link = link_path
        self._thread_name = thread_name
        self._fds: tuple[int, int] | None = None  # master, slave
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._channel_open = False  # the driver sent O (or L) and no C since
        self._write_lock = threading.Lock()
        self.path = ""

    def open(self) -> str:
        """Make the pty and start serving it; returns the path a driver opens."""
        if self._fds is not None:
            return self.path
        master, slave = os.openpty()
        # Raw before anyone opens it: no echo, no CR/LF translation of the protocol bytes.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._fds = (master, slave)
        self.path = os.ttyname(slave)
        if self._link is not None:
            if os.path.lexists(self._link):
                if not os.path.islink(self._link):
                    self.close()
                    raise FileExistsError(f"{self._link} exists and is not a symlink")
                os.unlink(self._link)
            os.symlink(self.path, self._link)
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name=self._thread_name, daemon=True)
        self._thread.start()
        return self.path

    def close(self) -> None:
        """Stop serving, remove the symlink and close the pty; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._link is not None and os.path.islink(self._link):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._link)
        with self._write_lock:
            fds, self._fds = self._fds, None
        for fd in fds or ():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._channel_open = False
        self.path = ""

    def __enter__(self) -> SlcanPty:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def send(self, arbitration_id: int, data: bytes) -> None:
        """Send a standard data frame to the driver (dropped while its channel is closed)."""
        if self._channel_open:
            self._write(f"t{arbitration_id:03X}{len(data)}{data.hex().upper()}\r".encode())

    def _serve(self) -> None:
        assert self._fds is not None
        master = self._fds[0]
        buffer = b""
        while not self._stop.is_set():
            try:
                readable, _, _ = select.select([master], [], [], 0.05)
                if not readable:
                    continue
                chunk = os.read(master, 4096)
            except BlockingIOError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.01)  # EIO while nobody holds the slave; keep serving
                continue
            buffer += chunk
            *lines, buffer = buffer.split(b"\r")
            for line in lines:
                self._command(line.decode("ascii", errors="replace"))

    def _command(self, line: str) -> None:
        kind = line[:1]
        if kind in ("O", "L"):
            self._channel_open = True
        elif kind == "C":
            self._channel_open = False
            # Drop answers the closing driver never read, so the next one starts clean.
            if self._fds is not None:
                termios.tcflush(self._fds[1], termios.TCIFLUSH)
        elif kind == "t":
            self._frame(line)
            return
        self._write(_SLCAN_ANSWERS.get(kind, _ERROR))

    def _frame(self, line: str) -> None:
        try:
            arbitration_id = int(line[1:4], 16)
            length = int(line[4])
            data = bytes.fromhex(line[5 : 5 + 2 * length])
        except (ValueError, IndexError):  # malformed or truncated frame line
            self._write(_ERROR)
            return
        if len(data) != length or length > 8:
            self._write(_ERROR)
            return
        self._write(b"z\r")
        if self._channel_open:
            self._on_frame(arbitration_id, data, self.send)

    def _write(self, payload: bytes) -> None:
        with self._write_lock:
            if self._fds is None:
                return  # closed: nobody is listening
            view = memoryview(payload)
            while view:
                try:
                    written = os.write(self._fds[0], view)
                except BlockingIOError:
                    return  # the reader stopped reading: drop, like an adapter's full FIFO
                view = view[written:]
