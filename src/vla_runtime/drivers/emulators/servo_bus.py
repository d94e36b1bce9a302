"""Serial servo buses on a pseudo-terminal pair, speaking the real wire protocols.

`ServoBusEmulator` answers Feetech protocol-0 packets the way a daisy chain of STS3215 servos
does (SO100/SO101); `DynamixelBusEmulator` answers Dynamixel protocol 2.0 the way the XL330/XL430
servos of a GELLO-style leader arm do. The real SDK (`scservo_sdk`, `dynamixel_sdk`) opens
`emulator.port`, the pty slave, exactly as it would open /dev/ttyACM0:

    with ServoBusEmulator(ids=[1, 2, 3, 4, 5, 6]) as bus:   # start() ... stop()
        driver = build(joint_names, {"port": bus.port, "ids": [1, 2, 3, 4, 5, 6]})

or as a separate process, with a stable path for configuration files:

    python -m vla_runtime.drivers.emulators.servo_bus --protocol feetech \
        --ids 1 2 3 4 5 6 --link /tmp/so100_follower

An emulator is composed of a `_PtyLink` (the pty and its reader thread), a `ServoProtocol`
(framing, checksum, control-table layout, position frame: the only part that differs between
Feetech and Dynamixel) and one `_Servo` per id (control table bytes plus first-order dynamics).
The protocols and control tables live in `servo_protocols`.

Motion: while torque is on, each servo's position follows its goal with first-order dynamics
(`time_constant_s`), limited to `max_speed_ticks_s`; an internal thread calls `step()` at
`physics_rate_hz`. A simulated world instead passes `physics_rate_hz=None`, reads
`goal_positions()` / `torque_enabled()`, and writes its joint positions back with
`set_positions()` (or calls `step()` itself). Positions in these hooks are raw encoder ticks,
before the servo's homing offset, like the magnet the servo's encoder sees.

Faults, settable at any time with `set_faults()`: `response_latency_s` (added before each
answer, on top of the servo's Return_Delay_Time register, 2 µs per unit), `drop_probability`
(one answer of an instruction goes missing), `corrupt_probability` (one answer has a bad
checksum), `missing_ids` (servos that never answer, as with a cut cable). Draws come from a
seeded generator, one set per instruction, so a test run is reproducible.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import select
import signal
import sys
import threading
import time
import tty
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from vla_runtime.drivers.emulators.servo_protocols import (
    BROADCAST_ID,
    MAX_SERVO_ID,
    ChecksumError,
    DynamixelProtocol,
    FeetechProtocol,
    Instruction,
    Packet,
    ServoProtocol,
    read_unsigned,
)


@dataclass(frozen=True)
class BusFaults:
    """Injected faults (see the module docstring); probabilities are per instruction."""

    response_latency_s: float = 0.0
    drop_probability: float = 0.0
    corrupt_probability: float = 0.0
    missing_ids: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if not self.response_latency_s >= 0.0:
            raise ValueError(f"response_latency_s must be >= 0, got {self.response_latency_s}")
        for name in ("drop_probability", "corrupt_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass
class BusStats:
    """Counters since start: instructions decoded, answers sent, faults injected."""

    instructions: int = 0
    answers: int = 0
    dropped: int = 0
    corrupted: int = 0
    bad_checksums: int = 0


class _Servo:
    __slots__ = ("id", "position", "registered", "table", "velocity")

    def __init__(self, servo_id: int, table: bytearray, position: float) -> None:
        self.id = servo_id
        self.table = table
        self.position = position  # raw encoder ticks, continuous
        self.velocity = 0.0  # ticks/s
        self.registered: tuple[int, bytes] | None = None  # a REG_WRITE awaiting ACTION


class _PtyLink:
    """A pty pair: clients open the slave (`port`); a thread reads the master side.

    The slave stays open here too, so a client closing and reopening the port (reconnect)
    never leaves the master in the hang-up state. Bytes that stop arriving halfway through a
    packet are handed to `on_idle` after `idle_s`, as a servo's byte timeout would drop them.
    Writes never block: answers nobody reads (the kernel's pty buffer is full) are dropped,
    as they would be on a wire.
    """

    def __init__(
        self, on_bytes: Callable[[bytes], None], on_idle: Callable[[], None], idle_s: float
    ) -> None:
        self._on_bytes, self._on_idle, self._idle_s = on_bytes, on_idle, idle_s
        self._fds: tuple[int, int, int, int] | None = None  # master, slave, wake read/write
        self._thread: threading.Thread | None = None
        self.port = ""

    def open(self) -> str:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        wake_read, wake_write = os.pipe()
        self._fds = (master, slave, wake_read, wake_write)
        self.port = os.ttyname(slave)
        self._thread = threading.Thread(target=self._run, name="servo-bus-pty", daemon=True)
        self._thread.start()
        return self.port

    def write(self, data: bytes) -> None:
        if self._fds is None:
            return
        # A full buffer (BlockingIOError) or a closing link: the answer is lost.
        with contextlib.suppress(OSError):
            os.write(self._fds[0], data)

    def close(self) -> None:
        if self._fds is None:
            return
        os.write(self._fds[3], b"x")
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        for fd in self._fds:
            os.close(fd)
        self._fds, self._thread, self.port = None, None, ""

    def _run(self) -> None:
        assert self._fds is not None
        master, _, wake, _ = self._fds
        while True:
            readable, _, _ = select.select([master, wake], [], [], self._idle_s)
            if wake in readable:
                return
            if not readable:
                self._on_idle()
                continue
            try:
                data = os.read(master, 4096)
            except BlockingIOError:
                continue
            except OSError:  # EIO: no slave open at this instant
                time.sleep(self._idle_s)
                continue
            self._on_bytes(data)


class ServoBusEmulator:
    """A chain of serial-bus servos behind a pty (Feetech STS3215 unless `protocol` says).

    Args:
        ids: servo ids on the bus (0..252).
        protocol: the servo family; `FeetechProtocol()` by default.
        initial_positions: raw ticks per id at power-on (default: 2048, mid-turn).
        time_constant_s: first-order time constant of the position response.
        max_speed_ticks_s: speed limit [ticks/s]; the protocol's unloaded speed by default.
        physics_rate_hz: rate of the internal thread calling `step()`; None when a simulated
            world drives the positions.
        response_latency_s, drop_probability, corrupt_probability, missing_ids: `BusFaults`.
        seed: seed of the fault generator.
    """

    def __init__(
        self,
        ids: Iterable[int],
        *,
        protocol: ServoProtocol | None = None,
        initial_positions: Mapping[int, float] | None = None,
        time_constant_s: float = 0.03,
        max_speed_ticks_s: float | None = None,
        physics_rate_hz: float | None = 1000.0,
        response_latency_s: float = 0.0,
        drop_probability: float = 0.0,
        corrupt_probability: float = 0.0,
        missing_ids: Iterable[int] = (),
        seed: int | None = 0,
    ) -> None:
        self._protocol = protocol or FeetechProtocol()
        id_list = list(ids)
        if not id_list or len(set(id_list)) != len(id_list):
            raise ValueError(f"ids must be distinct and non-empty, got {id_list}")
        if any(not 0 <= servo_id <= MAX_SERVO_ID for servo_id in id_list):
            raise ValueError(f"servo ids must be in 0..{MAX_SERVO_ID}, got {id_list}")
        if not time_constant_s > 0.0 or (physics_rate_hz is not None and physics_rate_hz <= 0):
            raise ValueError("time_constant_s and physics_rate_hz must be > 0")
        start = dict(initial_positions or {})
        self._servos = {
            servo_id: _Servo(
                servo_id,
                self._protocol.default_table(servo_id, start.get(servo_id, 2048.0)),
                float(start.get(servo_id, 2048.0)),
            )
            for servo_id in sorted(id_list)
        }
        self.time_constant_s = time_constant_s
        self.max_speed_ticks_s = max_speed_ticks_s or self._protocol.max_speed_ticks_s
        self._physics_rate_hz = physics_rate_hz
        self._faults = BusFaults(
            response_latency_s, drop_probability, corrupt_probability, frozenset(missing_ids)
        )
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._stats = BusStats()
        self._buffer = bytearray()
        self._link = _PtyLink(self._on_bytes, self._buffer.clear, idle_s=0.05)
        self._stop = threading.Event()
        self._physics: threading.Thread | None = None

    # lifecycle ---------------------------------------------------------------------------

    def start(self) -> ServoBusEmulator:
        """Open the pty and start answering (and moving, with `physics_rate_hz`)."""
        if self._link.port:
            return self
        self._link.open()
        self._stop.clear()
        if self._physics_rate_hz is not None:
            self._physics = threading.Thread(
                target=self._run_physics, name="servo-bus-physics", daemon=True
            )
            self._physics.start()
        return self

    def stop(self) -> None:
        """Close the pty (a client still attached sees the device vanish). Safe to repeat."""
        self._stop.set()
        if self._physics is not None:
            self._physics.join(timeout=2.0)
            self._physics = None
        self._link.close()

    def __enter__(self) -> ServoBusEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> str:
        """The pty slave path a driver opens (e.g. /dev/pts/7)."""
        if not self._link.port:
            raise RuntimeError("the emulator is not started; call start() first")
        return self._link.port

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(self._servos)

    @property
    def protocol(self) -> ServoProtocol:
        return self._protocol

    # faults and statistics ---------------------------------------------------------------

    @property
    def faults(self) -> BusFaults:
        return self._faults

    def set_faults(
        self,
        *,
        response_latency_s: float | None = None,
        drop_probability: float | None = None,
        corrupt_probability: float | None = None,
        missing_ids: Iterable[int] | None = None,
    ) -> None:
        """Change the injected faults; arguments left out keep their value."""
        changes: dict[str, Any] = {}
        if response_latency_s is not None:
            changes["response_latency_s"] = response_latency_s
        if drop_probability is not None:
            changes["drop_probability"] = drop_probability
        if corrupt_probability is not None:
            changes["corrupt_probability"] = corrupt_probability
        if missing_ids is not None:
            changes["missing_ids"] = frozenset(missing_ids)
        faults = replace(self._faults, **changes)
        with self._lock:
            self._faults = faults

    @property
    def stats(self) -> BusStats:
        with self._lock:
            return replace(self._stats)

    # world hooks -------------------------------------------------------------------------

    def step(self, dt_s: float) -> None:
        """Advance every torqued servo toward its goal by `dt_s` seconds."""
        if dt_s <= 0.0:
            return
        pull = 1.0 - math.exp(-dt_s / self.time_constant_s)
        limit = self.max_speed_ticks_s * dt_s
        with self._lock:
            for servo in self._servos.values():
                if not servo.table[self._protocol.torque_enable]:
                    servo.velocity = 0.0
                    continue
                goal = self._protocol.goal_ticks(servo.table)
                delta = max(-limit, min(limit, (goal - servo.position) * pull))
                servo.position += delta
                servo.velocity = delta / dt_s

    def positions(self) -> dict[int, float]:
        """Raw encoder ticks per id."""
        with self._lock:
            return {servo_id: servo.position for servo_id, servo in self._servos.items()}

    def set_positions(
        self, ticks: Mapping[int, float], velocities_ticks_s: Mapping[int, float] | None = None
    ) -> None:
        """Put servos where a simulated world (or an operator's hand) moved them [raw ticks]."""
        with self._lock:
            for servo_id, value in ticks.items():
                servo = self._servos[servo_id]
                servo.position = float(value)
                servo.velocity = float((velocities_ticks_s or {}).get(servo_id, 0.0))

    def goal_positions(self) -> dict[int, float]:
        """Commanded positions per id in raw ticks (limits and homing applied)."""
        with self._lock:
            return {i: self._protocol.goal_ticks(s.table) for i, s in self._servos.items()}

    def torque_enabled(self) -> dict[int, bool]:
        with self._lock:
            enable = self._protocol.torque_enable
            return {i: bool(s.table[enable]) for i, s in self._servos.items()}

    def read_register(self, servo_id: int, address: int, size: int) -> int:
        """A raw control-table value (unsigned, little-endian), as the servo would answer."""
        with self._lock:
            servo = self._servos[servo_id]
            self._refresh(servo)
            return read_unsigned(servo.table, address, size)

    # packet handling ---------------------------------------------------------------------

    def _run_physics(self) -> None:
        assert self._physics_rate_hz is not None
        period_s = 1.0 / self._physics_rate_hz
        last = time.monotonic()
        while not self._stop.wait(period_s):
            now = time.monotonic()
            self.step(now - last)
            last = now

    def _on_bytes(self, data: bytes) -> None:
        self._buffer.extend(data)
        while True:
            try:
                packet = self._protocol.decode_instruction(self._buffer)
            except ChecksumError:  # a real servo ignores such a packet: no answer
                with self._lock:
                    self._stats.bad_checksums += 1
                continue
            if packet is None:
                return
            self._answer(packet)

    def _answer(self, packet: Packet) -> None:
        with self._lock:
            self._stats.instructions += 1
            faults = self._faults
            answers = self._execute(packet, faults.missing_ids)
            # One set of draws per instruction whatever happens, so runs are reproducible.
            drop = self._random.random() < faults.drop_probability
            corrupt = self._random.random() < faults.corrupt_probability
            victim = self._random.randrange(len(answers)) if answers else 0
            frames: list[tuple[float, bytes]] = []
            for index, (servo, error, params) in enumerate(answers):
                frame = self._protocol.encode_status(servo.id, error, params)
                if index == victim and drop:
                    self._stats.dropped += 1
                    continue
                if index == victim and corrupt:
                    self._stats.corrupted += 1
                    frame = frame[:-1] + bytes((frame[-1] ^ 0xFF,))
                delay_s = 2e-6 * servo.table[self._protocol.return_delay_time]
                frames.append((delay_s, frame))
            self._stats.answers += len(frames)
        if frames and faults.response_latency_s > 0.0:
            time.sleep(faults.response_latency_s)
        pending = b""
        for delay_s, frame in frames:
            if delay_s > 0.0:
                self._link.write(pending)
                pending = b""
                time.sleep(delay_s)
            pending += frame
        self._link.write(pending)

    def _fields(self, params: bytes, count: int) -> tuple[list[int], bytes]:
        size = self._protocol.field_size
        values = [
            int.from_bytes(params[i * size : (i + 1) * size], "little") for i in range(count)
        ]
        return values, params[count * size :]

    def _execute(self, packet: Packet, missing: frozenset[int]) -> list[tuple[_Servo, int, bytes]]:
        """Apply one instruction; the answers to send as (servo, error, params)."""
        protocol, code = self._protocol, packet.code
        present = [s for i, s in self._servos.items() if i not in missing]
        broadcast = packet.servo_id == BROADCAST_ID
        targets = present if broadcast else [s for s in present if s.id == packet.servo_id]
        if code == Instruction.PING:
            return [(s, 0, protocol.ping_params(s.table)) for s in targets]
        if code == Instruction.SYNC_READ and broadcast:
            (address, length), rest = self._fields(packet.params, 2)
            by_id = {s.id: s for s in present}
            wanted = [by_id[i] for i in rest if i in by_id]
            return [self._read(s, address, length) for s in wanted]
        if code == Instruction.SYNC_WRITE and broadcast:
            (address, length), rest = self._fields(packet.params, 2)
            by_id = {s.id: s for s in present}
            for offset in range(0, len(rest) - length, length + 1):
                if rest[offset] in by_id:
                    self._write(
                        by_id[rest[offset]], address, rest[offset + 1 : offset + 1 + length]
                    )
            return []
        if code == Instruction.ACTION:
            for servo in targets:
                if servo.registered is not None:
                    self._write(servo, *servo.registered)
                    servo.registered = None
            return [] if broadcast else [(s, 0, b"") for s in targets]
        answers: list[tuple[_Servo, int, bytes]] = []
        for servo in targets:
            if code == Instruction.READ and not broadcast:
                (address, length), _ = self._fields(packet.params, 2)
                answers.append(self._read(servo, address, length))
            elif code in (Instruction.WRITE, Instruction.REG_WRITE):
                (address,), data = self._fields(packet.params, 1)
                if code == Instruction.REG_WRITE:
                    servo.registered = (address, data)
                    error = 0
                else:
                    error = self._write(servo, address, data)
                answers.append((servo, error, b""))
            elif protocol.access_error is not None:  # unknown instruction: Instruction error
                answers.append((servo, 2, b""))
        if broadcast:
            return []
        return [a for a in answers if protocol.answers(a[0].table, code)]

    def _read(self, servo: _Servo, address: int, length: int) -> tuple[_Servo, int, bytes]:
        if address + length > self._protocol.table_size:
            return (servo, self._protocol.access_error or 0, b"")
        self._refresh(servo)
        return (servo, 0, bytes(servo.table[address : address + length]))

    def _write(self, servo: _Servo, address: int, data: bytes) -> int:
        protocol = self._protocol
        if address + len(data) > protocol.table_size or protocol.write_refused(
            servo.table, address, len(data)
        ):
            return protocol.access_error or 0
        servo.table[address : address + len(data)] = data
        return 0

    def _refresh(self, servo: _Servo) -> None:
        goal = self._protocol.goal_ticks(servo.table)
        self._protocol.refresh(servo.table, servo.position, servo.velocity, goal)


class DynamixelBusEmulator(ServoBusEmulator):
    """`ServoBusEmulator` speaking Dynamixel protocol 2.0 (XL330-M288 servos by default)."""

    def __init__(self, ids: Iterable[int], *, model_number: int = 1200, **options: Any) -> None:
        super().__init__(ids, protocol=DynamixelProtocol(model_number), **options)


# --- process entry point -------------------------------------------------------------------

_PROTOCOLS: dict[str, Callable[[], ServoProtocol]] = {
    "feetech": FeetechProtocol,
    "dynamixel": DynamixelProtocol,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vla_runtime.drivers.emulators.servo_bus",
        description="Emulate a serial servo bus on a pseudo-terminal until Ctrl-C / SIGTERM.",
    )
    parser.add_argument("--protocol", choices=sorted(_PROTOCOLS), default="feetech")
    parser.add_argument("--ids", type=int, nargs="+", required=True, metavar="ID")
    parser.add_argument("--link", help="make a symlink at this path to the pty (e.g. /tmp/so100)")
    parser.add_argument("--time-constant-s", type=float, default=0.03)
    parser.add_argument("--response-latency-s", type=float, default=0.0)
    parser.add_argument("--drop-probability", type=float, default=0.0)
    parser.add_argument("--corrupt-probability", type=float, default=0.0)
    parser.add_argument("--missing-ids", type=int, nargs="*", default=[], metavar="ID")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        emulator = ServoBusEmulator(
            args.ids,
            protocol=_PROTOCOLS[args.protocol](),
            time_constant_s=args.time_constant_s,
            response_latency_s=args.response_latency_s,
            drop_probability=args.drop_probability,
            corrupt_probability=args.corrupt_probability,
            missing_ids=args.missing_ids,
            seed=args.seed,
        )
    except ValueError as exc:
        print(f"servo_bus: {exc}", file=sys.stderr)
        return 2
    if args.link and os.path.lexists(args.link) and not os.path.islink(args.link):
        print(
            f"servo_bus: {args.link} exists and is not a symlink; not replacing it",
            file=sys.stderr,
        )
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    emulator.start()
    try:
        if args.link:
            if os.path.islink(args.link):
                os.unlink(args.link)
            os.symlink(emulator.port, args.link)
        ids = " ".join(str(i) for i in emulator.ids)
        where = f"{args.link} -> {emulator.port}" if args.link else emulator.port
        print(f"{args.protocol} servo bus (ids {ids}) on {where}; Ctrl-C to stop", flush=True)
        stop.wait()
    finally:
        if args.link and os.path.islink(args.link):
            os.unlink(args.link)
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
