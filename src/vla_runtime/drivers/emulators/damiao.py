"""Damiao DM-J motors on a CAN bus, emulated: the MIT-mode protocol and a simple joint model.

    python -m vla_runtime.drivers.emulators.damiao --slcan-link /tmp/can_follower_l \\
        --ids 1 2 3 4 5 6 7 --models DM4340 DM4340 DM4340 DM4310 DM4310 DM4310 DM4310

What a `DamiaoMotorSet` does, per motor (see `vla_runtime.drivers.yam.damiao` for the frames):

- answers every frame addressed to it (MIT command, enable FC, disable FD, save zero FE, clear
  error FB, refresh on 0x7FF) with one feedback frame on its feedback (master) id;
- while enabled, applies the last MIT command, `tau = kp (p_des - p) + kd (v_des - v) + t_ff`
  clamped to the model's T_MAX, to an inertia with viscous friction (positions and velocities
  clamped to P_MAX / V_MAX);
- the factory watchdog: an enabled motor that gets no MIT command for 400 ms drops kp, v_des
  and t_ff to zero (it keeps damping with the last kd), reports state 0xD (communication lost)
  in every feedback and ignores MIT commands until cleared (FB) and enabled (FC) again.

Where the frames come from: `attach(bus)` serves any python-can bus (the `virtual` interface in
one process, socketcan `vcan0` where the kernel has it); `serve_slcan()` opens a pseudo-terminal
speaking the SLCAN (Lawicel) ASCII protocol (`slcan.SlcanPty`), so a driver in another process
connects with `can.Bus(interface="slcan", channel=<pty>)`.

Who moves the joints: by default an internal thread integrates the model at 1 kHz. A simulated
world passes `internal_physics=False` and either calls `step(dt_s)` to advance the built-in
model, or runs its own dynamics: it reads `torques()` (the MIT law on the current state),
integrates, and writes back `set_state(positions, velocities)` (or `set_positions()`).

Faults to inject: `response_latency_s`, `drop_probability` (per answer), `missing_ids` (those
motors neither act nor answer), `bus_off` (nothing is received or answered). In the process,
SIGUSR1 toggles `bus_off`; SIGINT/SIGTERM stop it cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import logging
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any

import can
import numpy as np

from vla_runtime.drivers.base import FloatArray
from vla_runtime.drivers.emulators.slcan import Reply as Reply  # re-export: handle_frame's type
from vla_runtime.drivers.emulators.slcan import SlcanPty
from vla_runtime.drivers.yam.damiao import (
    DEFAULT_FEEDBACK_ID_OFFSET,
    REFRESH_CAN_ID,
    MitCommand,
    MotorFeedback,
    MotorModel,
    MotorState,
    SpecialCommand,
    decode_mit,
    encode_feedback,
    motor_model,
    parse_refresh,
    parse_special,
)

LOG = logging.getLogger(__name__)

WATCHDOG_S = 0.4  # i2rt: a motor damps after 400 ms without a command
# Output-side inertia a joint presents [kg·m²] (arm links plus reflected rotor): rough, chosen
# so the YAM default gains settle in a few hundred ms like the real arm.
_DEFAULT_INERTIA_KG_M2 = {"DM4340": 0.02, "DM6248": 0.05, "DM8009": 0.05}
_FALLBACK_INERTIA_KG_M2 = 0.005
_MOS_TEMPERATURE_C = 32
_ROTOR_TEMPERATURE_C = 35


@dataclass(frozen=True)
class EmulatedMotor:
    """One emulated motor.

    Attributes:
        motor_id: CAN id it listens on.
        model: Damiao model name (sets the frame ranges).
        feedback_id: CAN id it answers on; None = motor id + 0x10 (i2rt's YAM).
        inertia_kg_m2: inertia of the joint; None = a default per model.
        friction_nm_s_rad: viscous friction [N·m·s/rad].
        initial_position_rad: position at start.
    """

    motor_id: int
    model: str
    feedback_id: int | None = None
    inertia_kg_m2: float | None = None
    friction_nm_s_rad: float = 0.05
    initial_position_rad: float = 0.0


@dataclass(frozen=True)
class MotorSnapshot:
    """What an emulated motor is doing now (for tests and worlds)."""

    motor_id: int
    state: int
    damping: bool  # the 400 ms watchdog fired
    position_rad: float
    velocity_rad_s: float
    torque_nm: float
    command: MitCommand | None
    commands_received: int


class _Motor:
    def __init__(self, spec: EmulatedMotor) -> None:
        self.id = spec.motor_id
        self.model: MotorModel = motor_model(spec.model)
        self.feedback_id = (
            spec.motor_id + DEFAULT_FEEDBACK_ID_OFFSET
            if spec.feedback_id is None
            else spec.feedback_id
        )
        self.inertia = (
            _DEFAULT_INERTIA_KG_M2.get(spec.model, _FALLBACK_INERTIA_KG_M2)
            if spec.inertia_kg_m2 is None
            else spec.inertia_kg_m2
        )
        if self.inertia <= 0.0:
            raise ValueError(f"motor {self.id}: inertia_kg_m2 must be > 0")
        self.friction = spec.friction_nm_s_rad
        self.position = spec.initial_position_rad
        self.velocity = 0.0
        self.torque = 0.0
        self.state = MotorState.DISABLED
        self.command: MitCommand | None = None
        self.last_command_s = 0.0
        self.commands_received = 0

    def _drive(self) -> tuple[float, float]:
        """The active law as (kp (p_des - p) + kd v_des + t_ff, kd); torque = drive - kd v."""
        command = self.command
        if command is None or self.state not in (
            MotorState.ENABLED,
            MotorState.COMMUNICATION_LOST,
        ):
            return 0.0, 0.0
        if self.state == MotorState.COMMUNICATION_LOST:
            return 0.0, command.kd  # watchdog damping: kp, v_des and t_ff dropped
        stiff = command.kp * (command.position_rad - self.position)
        return stiff + command.kd * command.velocity_rad_s + command.torque_nm, command.kd

    def commanded_torque(self) -> float:
        drive, kd = self._drive()
        limit = self.model.torque_max_nm
        return min(max(drive - kd * self.velocity, -limit), limit)

    def step(self, dt_s: float) -> None:
        drive, kd = self._drive()
        limit = self.model.torque_max_nm
        torque = drive - kd * self.velocity
        if abs(torque) <= limit:
            # Damping implicit, so any gain the MIT fields allow stays stable at 1 ms.
            velocity = (self.velocity + dt_s * drive / self.inertia) / (
                1.0 + dt_s * (kd + self.friction) / self.inertia
            )
        else:
            torque = math.copysign(limit, torque)
            velocity = (self.velocity + dt_s * torque / self.inertia) / (
                1.0 + dt_s * self.friction / self.inertia
            )
        v_max = self.model.velocity_max_rad_s
        self.velocity = min(max(velocity, -v_max), v_max)
        self.torque = torque
        p_max = self.model.position_max_rad
        position = self.position + self.velocity * dt_s
        if abs(position) > p_max:
            position, self.velocity = math.copysign(p_max, position), 0.0
        self.position = position

    def feedback(self) -> bytes:
        return encode_feedback(
            MotorFeedback(
                motor_id_nibble=self.id & 0xF,
                state=int(self.state),
                position_rad=self.position,
                velocity_rad_s=self.velocity,
                torque_nm=self.torque,
                mos_temperature_c=_MOS_TEMPERATURE_C,
                rotor_temperature_c=_ROTOR_TEMPERATURE_C,
            ),
            self.model,
        )


class DamiaoMotorSet:
    """A set of emulated Damiao motors serving one or more CAN transports."""

    def __init__(
        self,
        motors: Sequence[EmulatedMotor],
        *,
        response_latency_s: float = 0.0,
        drop_probability: float = 0.0,
        missing_ids: Iterable[int] = (),
        internal_physics: bool = True,
        physics_rate_hz: float = 1000.0,
        watchdog_s: float = WATCHDOG_S,
        seed: int | None = None,
    ) -> None:
        if not motors:
            raise ValueError("DamiaoMotorSet needs at least one motor")
        self._motors = {spec.motor_id: _Motor(spec) for spec in motors}
        if len(self._motors) != len(motors):
            raise ValueError("DamiaoMotorSet: motor ids repeat")
        self._order = tuple(spec.motor_id for spec in motors)
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self.response_latency_s = response_latency_s
        self.drop_probability = drop_probability
        self.missing_ids = frozenset(missing_ids)
        self.bus_off = False
        self._internal_physics = internal_physics
        self._physics_period_s = 1.0 / physics_rate_hz
        self._watchdog_s = watchdog_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._closers: list[Callable[[], None]] = []
        self._outbox: list[tuple[float, int, Reply, int, bytes]] = []
        self._outbox_ready = threading.Condition()
        self._sequence = 0
        self._started = False

    @classmethod
    def from_models(
        cls, ids: Sequence[int], models: Sequence[str], **options: Any
    ) -> DamiaoMotorSet:
        """Motors with default inertia and feedback ids; `options` as for the constructor."""
        if len(ids) != len(models):
            raise ValueError(f"{len(ids)} ids but {len(models)} models")
        specs = [
            EmulatedMotor(motor_id, model) for motor_id, model in zip(ids, models, strict=True)
        ]
        return cls(specs, **options)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the physics thread (if internal) and the answer scheduler."""
        if self._started:
            return
        self._started = True
        if self._internal_physics:
            self._spawn(self._physics_loop, "damiao-physics")
        self._spawn(self._outbox_loop, "damiao-outbox")

    def close(self) -> None:
        """Stop every thread and transport; safe to call twice."""
        self._stop.set()
        with self._outbox_ready:
            self._outbox_ready.notify_all()
        for thread in self._threads:
            thread.join(timeout=2.0)
        self._threads.clear()
        for closer in reversed(self._closers):
            with contextlib.suppress(OSError, can.CanError):
                closer()
        self._closers.clear()

    def __enter__(self) -> DamiaoMotorSet:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- transports -----------------------------------------------------------------------

    def attach(self, bus: can.BusABC) -> None:
        """Serve frames from `bus` (any python-can interface); the set shuts it down on close."""
        self.start()

        def reply(arbitration_id: int, data: bytes) -> None:
            bus.send(can.Message(arbitration_id=arbitration_id, data=data, is_extended_id=False))

        def serve() -> None:
            while not self._stop.is_set():
                try:
                    message = bus.recv(timeout=0.05)
                except can.CanError as error:
                    LOG.error("bus %s failed: %s", bus.channel_info, error)
                    return
                if (
                    message is not None
                    and not message.is_error_frame
                    and not message.is_extended_id
                    and not message.is_remote_frame
                ):
                    self.handle_frame(message.arbitration_id, bytes(message.data), reply)

        self._closers.append(bus.shutdown)
        self._spawn(serve, "damiao-bus")

    def serve_slcan(self, link_path: str | None = None) -> str:
        """Speak SLCAN on a new pseudo-terminal; returns the path a driver opens.

        Args:
            link_path: also make this symlink to the pty (replaced if it is a symlink).
        """
        self.start()
        # Damiao uses standard data frames only; the adapter acknowledges and drops the rest.
        adapter = SlcanPty(self.handle_frame, link_path, thread_name="damiao-slcan")
        path = adapter.open()
        self._closers.append(adapter.close)
        return path

    # -- protocol -------------------------------------------------------------------------

    def handle_frame(self, arbitration_id: int, data: bytes, reply: Reply) -> None:
        """Act on one received frame and schedule the feedback it provokes through `reply`."""
        if self.bus_off:
            return
        now = time.monotonic()
        with self._lock:
            if arbitration_id == REFRESH_CAN_ID:
                target = parse_refresh(data)
                motor = self._motors.get(target) if target is not None else None
            else:
                motor = self._motors.get(arbitration_id)
            if motor is None or motor.id in self.missing_ids:
                return
            # The watchdog first: a command after 400 ms of silence finds the motor damping.
            self._check_watchdog(now)
            if arbitration_id != REFRESH_CAN_ID and len(data) == 8:
                self._apply(motor, data, now)
            answer = (motor.feedback_id, motor.feedback())
        if self._random.random() < self.drop_probability:
            return
        self._send(reply, *answer)

    def _apply(self, motor: _Motor, data: bytes, now: float) -> None:
        special = parse_special(data)
        faulted = motor.state not in (MotorState.DISABLED, MotorState.ENABLED)
        if special is SpecialCommand.ENABLE:
            if not faulted:
                if motor.state != MotorState.ENABLED:
                    motor.command = None  # enabled with no command: zero torque
                motor.state = MotorState.ENABLED
                motor.last_command_s = now
        elif special is SpecialCommand.DISABLE:
            if not faulted:
                motor.state = MotorState.DISABLED
                motor.command = None
        elif special is SpecialCommand.CLEAR_ERROR:
            if faulted:
                motor.state = MotorState.DISABLED
                motor.command = None
        elif special is SpecialCommand.SAVE_ZERO:
            motor.position = 0.0
        elif motor.state == MotorState.ENABLED:
            motor.command = decode_mit(data, motor.model)
            motor.last_command_s = now
            motor.commands_received += 1

    def _check_watchdog(self, now: float) -> None:
        for motor in self._motors.values():
            if (
                motor.state == MotorState.ENABLED
                and now - motor.last_command_s >= self._watchdog_s
            ):
                motor.state = MotorState.COMMUNICATION_LOST
                LOG.warning(
                    "motor %d: no command for %.0f ms, damping (state 0xD, communication lost)",
                    motor.id,
                    (now - motor.last_command_s) * 1e3,
                )

    def _send(self, reply: Reply, arbitration_id: int, data: bytes) -> None:
        if self.response_latency_s <= 0.0:
            reply(arbitration_id, data)
            return
        with self._outbox_ready:
            self._sequence += 1
            due = time.monotonic() + self.response_latency_s
            heapq.heappush(self._outbox, (due, self._sequence, reply, arbitration_id, data))
            self._outbox_ready.notify()

    def _outbox_loop(self) -> None:
        while not self._stop.is_set():
            with self._outbox_ready:
                if not self._outbox:
                    self._outbox_ready.wait(timeout=0.1)
                    continue
                wait_s = self._outbox[0][0] - time.monotonic()
                if wait_s > 0:
                    self._outbox_ready.wait(timeout=wait_s)
                    continue
                _, _, reply, arbitration_id, data = heapq.heappop(self._outbox)
            with contextlib.suppress(OSError, can.CanError):
                reply(arbitration_id, data)

    # -- the joints, for tests and simulated worlds ----------------------------------------

    @property
    def motor_ids(self) -> tuple[int, ...]:
        return self._order

    def step(self, dt_s: float) -> None:
        """Advance the built-in joint model by `dt_s` (in steps of at most 1 ms).

        The watchdog keeps running on the wall clock, as the motor firmware's does.
        """
        steps = max(1, int(np.ceil(dt_s / self._physics_period_s - 1e-9)))
        with self._lock:
            for _ in range(steps):
                for motor in self._motors.values():
                    motor.step(dt_s / steps)
            self._check_watchdog(time.monotonic())

    def positions(self) -> FloatArray:
        """(motors,) positions [rad] in `motor_ids` order."""
        with self._lock:
            return np.array([self._motors[i].position for i in self._order])

    def velocities(self) -> FloatArray:
        """(motors,) velocities [rad/s] in `motor_ids` order."""
        with self._lock:
            return np.array([self._motors[i].velocity for i in self._order])

    def torques(self) -> FloatArray:
        """(motors,) torque each motor applies now [N·m] (MIT law, clamped), for a world."""
        with self._lock:
            self._check_watchdog(time.monotonic())
            return np.array([self._motors[i].commanded_torque() for i in self._order])

    def set_positions(self, positions: Sequence[float] | FloatArray) -> None:
        """Overwrite positions [rad] in `motor_ids` order (a world moved the joints)."""
        self.set_state(positions)

    def set_state(
        self,
        positions: Sequence[float] | FloatArray,
        velocities: Sequence[float] | FloatArray | None = None,
    ) -> None:
        """Overwrite positions [rad] and optionally velocities [rad/s] in `motor_ids` order."""
        if len(positions) != len(self._order):
            raise ValueError(f"{len(positions)} positions for {len(self._order)} motors")
        with self._lock:
            for index, motor_id in enumerate(self._order):
                motor = self._motors[motor_id]
                motor.position = float(positions[index])
                if velocities is not None:
                    motor.velocity = float(velocities[index])
                motor.torque = motor.commanded_torque()

    def snapshot(self, motor_id: int) -> MotorSnapshot:
        """State of one motor now."""
        with self._lock:
            self._check_watchdog(time.monotonic())
            motor = self._motors[motor_id]
            return MotorSnapshot(
                motor_id=motor.id,
                state=int(motor.state),
                damping=motor.state == MotorState.COMMUNICATION_LOST,
                position_rad=motor.position,
                velocity_rad_s=motor.velocity,
                torque_nm=motor.torque,
                command=motor.command,
                commands_received=motor.commands_received,
            )

    # -- threads --------------------------------------------------------------------------

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _physics_loop(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self._physics_period_s):
            now = time.monotonic()
            # Integrate the time that really passed, so sim time tracks the wall clock.
            self.step(min(now - last, 0.05))
            last = now


def main(argv: Sequence[str] | None = None) -> int:
    """Run one arm's motors as a process until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m vla_runtime.drivers.emulators.damiao", description=__doc__.split("\n")[0]
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--slcan-link", help="symlink to create to the SLCAN pty")
    where.add_argument("--channel", help="python-can channel to serve (with --interface)")
    parser.add_argument("--interface", default="socketcan", help="python-can interface")
    parser.add_argument("--ids", type=int, nargs="+", required=True)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--feedback-id-offset", type=int, default=DEFAULT_FEEDBACK_ID_OFFSET)
    parser.add_argument("--positions", type=float, nargs="+", help="initial positions [rad]")
    parser.add_argument("--response-latency-s", type=float, default=0.0)
    parser.add_argument("--drop-probability", type=float, default=0.0)
    parser.add_argument("--missing-ids", type=int, nargs="*", default=[])
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)
    if len(args.ids) != len(args.models):
        parser.error(f"{len(args.ids)} --ids but {len(args.models)} --models")
    positions = args.positions or [0.0] * len(args.ids)
    if len(positions) != len(args.ids):
        parser.error(f"{len(positions)} --positions for {len(args.ids)} motors")
    if args.channel is not None and args.interface == "udp_multicast":
        parser.error("udp_multicast leaves the machine; use slcan, virtual or socketcan vcan")
    logging.basicConfig(level=logging.INFO, format="damiao emulator: %(message)s")

    specs = [
        EmulatedMotor(
            motor_id,
            model,
            feedback_id=motor_id + args.feedback_id_offset,
            initial_position_rad=position,
        )
        for motor_id, model, position in zip(args.ids, args.models, positions, strict=True)
    ]
    motors = DamiaoMotorSet(
        specs,
        response_latency_s=args.response_latency_s,
        drop_probability=args.drop_probability,
        missing_ids=args.missing_ids,
        seed=args.seed,
    )
    stop = threading.Event()

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def on_toggle(signum: int, frame: FrameType | None) -> None:
        motors.bus_off = not motors.bus_off
        LOG.info("bus %s", "off: not answering" if motors.bus_off else "on again")

    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGUSR1, on_toggle)
    with motors:
        try:
            if args.slcan_link is not None:
                path = motors.serve_slcan(args.slcan_link)
                where_text = f"slcan {path} (link {args.slcan_link})"
            else:
                motors.attach(can.Bus(interface=args.interface, channel=args.channel))
                where_text = f"{args.interface}:{args.channel}"
        except (OSError, can.CanError) as error:
            print(f"damiao emulator: cannot serve: {error}", file=sys.stderr)
            return 1
        ids = " ".join(str(i) for i in args.ids)
        print(f"damiao emulator: motors {ids} ready on {where_text}", flush=True)
        while not stop.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
