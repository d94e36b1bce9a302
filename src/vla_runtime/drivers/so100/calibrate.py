"""`vla-runtime calibrate so100`: record an arm's homing offsets and ranges into a file.

    vla-runtime calibrate so100 --port /dev/ttyACM0 --output ~/.config/vla_runtime/so100.yaml

The procedure (LeRobot's SO100 calibration):

1. Torque off, so the operator can move the arm by hand; homing offsets reset to 0.
2. The operator puts every joint in the middle of its range and presses Enter: each servo's
   homing offset is written so that this pose reads 2048 ticks.
3. The operator sweeps every joint through its whole range; the minimum and maximum of each are
   recorded until Enter. Full-turn joints (wrist_roll) get the whole turn, 0..4095.
4. The ranges go to the servos' position limits, and the file is written.

`--leader` marks a leader arm (role: leader); `--bus dynamixel` calibrates a Dynamixel-based
leader through `DynamixelBus`. `--signs` / `--offsets-rad` set the joint convention (see
`calibration.py`); without them a recalibration keeps the convention of the existing file.

For tests and other front ends, `CalibrationProcedure` takes the prompt as an `ask` callable
(`input` by default) and the sweep as a function given the procedure: it moves the joints
however it likes and calls `sample()` (read the bus) or `record(positions)` as it goes.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from vla_runtime.drivers.base import DriverError
from vla_runtime.drivers.so100.bus import FeetechBus, ServoBus
from vla_runtime.drivers.so100.calibration import (
    CENTRE_TICKS,
    TICKS_PER_TURN,
    ArmCalibration,
    CalibrationError,
    JointCalibration,
)
from vla_runtime.drivers.so100.dynamixel_bus import DynamixelBus

IntArray = npt.NDArray[np.int64]
Sweep = Callable[["CalibrationProcedure"], None]

DEFAULT_JOINTS = (
    "shoulder_pan",
    "shoulder_lift",
    "elbow_flex",
    "wrist_flex",
    "wrist_roll",
    "gripper",
)
# A joint whose recorded range is narrower than this was not swept (≈ 9°).
MIN_SWEEP_TICKS = 100


class CalibrationProcedure:
    """Steps 1–4 of the module docstring over an open bus (ids in joint order)."""

    def __init__(
        self,
        bus: ServoBus,
        joint_names: Sequence[str],
        *,
        full_turn_joints: Sequence[str] = ("wrist_roll",),
        role: str = "follower",
        ask: Callable[[str], str] = input,
        say: Callable[[str], None] = print,
        sample_period_s: float = 0.02,
    ) -> None:
        if len(joint_names) != len(bus.ids):
            raise CalibrationError(
                f"{len(joint_names)} joint names for {len(bus.ids)} servo ids {list(bus.ids)}"
            )
        unknown = [name for name in full_turn_joints if name not in joint_names]
        if unknown:
            raise CalibrationError(f"full-turn joints {unknown} are not among {list(joint_names)}")
        self.bus = bus
        self.joint_names = tuple(joint_names)
        self.full_turn = tuple(name in full_turn_joints for name in joint_names)
        self.role = role
        self._ask, self._say = ask, say
        self._sample_period_s = sample_period_s
        self._offsets: list[int] = []
        self._low: IntArray | None = None
        self._high: IntArray | None = None

    def run(self, sweep: Sweep | None = None) -> ArmCalibration:
        """Home, sweep (interactively unless `sweep` is given), and finish."""
        self.home()
        (sweep or CalibrationProcedure.sweep_interactively)(self)
        return self.finish()

    def home(self) -> None:
        """Steps 1 and 2: torque off, and homing offsets that put the mid pose at 2048."""
        bus = self.bus
        bus.set_torque(False)
        for servo_id in bus.ids:
            bus.write_register(servo_id, bus.homing_offset, 0)
        self._ask("Move every joint to the middle of its range, then press Enter... ")
        raw = bus.sync_read_positions()
        self._offsets = [bus.homing_offset_for(int(p), CENTRE_TICKS) for p in raw]
        for servo_id, offset in zip(bus.ids, self._offsets, strict=True):
            bus.write_register(servo_id, bus.homing_offset, offset)
        homed = bus.sync_read_positions()
        self._low, self._high = homed.copy(), homed.copy()

    def record(self, positions: Sequence[int] | IntArray) -> None:
        """Widen the recorded ranges with one sample of positions [ticks after homing]."""
        if self._low is None or self._high is None:
            raise RuntimeError("call home() before recording the sweep")
        sample = np.asarray(positions, dtype=np.int64)
        if sample.shape != self._low.shape:
            raise ValueError(f"need {len(self._low)} positions, got {sample.shape}")
        np.minimum(self._low, sample, out=self._low)
        np.maximum(self._high, sample, out=self._high)

    def sample(self) -> IntArray:
        """Read the bus once and record it; the positions read."""
        positions = self.bus.sync_read_positions()
        self.record(positions)
        return positions

    def sweep_interactively(self) -> None:
        """Step 3 with an operator: sample the bus until `ask` returns (Enter)."""
        done = threading.Event()

        def wait_for_enter() -> None:
            try:
                self._ask("Move every joint through its whole range, then press Enter... ")
            finally:
                done.set()

        threading.Thread(target=wait_for_enter, name="calibrate-enter", daemon=True).start()
        shown = time.monotonic()
        while not done.is_set():
            self.sample()
            if time.monotonic() - shown > 1.0:
                self._say(self._ranges_text())
                shown = time.monotonic()
            done.wait(self._sample_period_s)

    def finish(
        self,
        signs: Sequence[int] | None = None,
        offsets_rad: Sequence[float] | None = None,
    ) -> ArmCalibration:
        """Step 4: check the sweep, write the position limits, return the calibration."""
        if self._low is None or self._high is None:
            raise RuntimeError("call home() and sweep before finish()")
        narrow = [
            f"{name} ({low}..{high})"
            for name, low, high, full in zip(
                self.joint_names, self._low, self._high, self.full_turn, strict=True
            )
            if not full and high - low < MIN_SWEEP_TICKS
        ]
        if narrow:
            raise CalibrationError(
                f"these joints barely moved during the sweep: {', '.join(narrow)} ticks; "
                f"move every joint from one end of its range to the other, then calibrate again"
            )
        joints = []
        for index, servo_id in enumerate(self.bus.ids):
            low, high = int(self._low[index]), int(self._high[index])
            if self.full_turn[index]:
                low, high = 0, TICKS_PER_TURN - 1
            joints.append(JointCalibration(servo_id, self._offsets[index], low, high))
            self.bus.write_position_limits(servo_id, low, high)
        bus = "dynamixel" if isinstance(self.bus, DynamixelBus) else "feetech"
        calibration = ArmCalibration(self.joint_names, tuple(joints), bus=bus, role=self.role)
        if signs is not None or offsets_rad is not None:
            calibration = calibration.with_convention(signs, offsets_rad)
        self._say(self._ranges_text())
        return calibration

    def _ranges_text(self) -> str:
        assert self._low is not None and self._high is not None
        return "  ".join(
            f"{name} {low}..{high}"
            for name, low, high in zip(self.joint_names, self._low, self._high, strict=True)
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyACM0")
    parser.add_argument(
        "--ids", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6], metavar="ID",
        help="servo ids in joint order (default: 1 2 3 4 5 6)",
    )  # fmt: skip
    parser.add_argument(
        "--joints", nargs="+", default=list(DEFAULT_JOINTS), metavar="NAME",
        help="joint names in the same order (default: the SO100/SO101 URDF's)",
    )  # fmt: skip
    parser.add_argument("--output", required=True, metavar="FILE", help="calibration YAML")
    parser.add_argument("--leader", action="store_true", help="calibrate a leader arm")
    parser.add_argument(
        "--bus", choices=("feetech", "dynamixel"), default="feetech",
        help="servo family: feetech (STS3215, default) or dynamixel (X-series leader)",
    )  # fmt: skip
    parser.add_argument("--baudrate", type=int, default=1_000_000, help="[bit/s]")
    parser.add_argument(
        "--packet-timeout-ms", type=float, default=10.0, metavar="MS",
        help="wait for a status packet beyond its wire time (> 32 for an FTDI adapter at its "
        "default 16 ms latency timer)",
    )  # fmt: skip
    parser.add_argument(
        "--full-turn", nargs="*", default=["wrist_roll"], metavar="NAME",
        help="joints that turn all the way round (default: wrist_roll)",
    )  # fmt: skip
    parser.add_argument(
        "--signs", type=int, nargs="+", metavar="S",
        help="joint convention: +1/-1 per joint (default: keep the existing file's, or +1)",
    )  # fmt: skip
    parser.add_argument(
        "--offsets-rad", type=float, nargs="+", metavar="RAD",
        help="joint convention: joint position at 2048 ticks per joint [rad]",
    )  # fmt: skip


def run(
    args: argparse.Namespace,
    *,
    ask: Callable[[str], str] = input,
    say: Callable[[str], None] = print,
    sweep: Sweep | None = None,
) -> int:
    """Run the procedure on `args` (from `add_arguments`); 0 on success, 1 on an error."""
    signs, offsets = args.signs, args.offsets_rad
    if signs is None and offsets is None:
        signs, offsets = _existing_convention(args.output, args.joints)
    bus_class: type[ServoBus] = DynamixelBus if args.bus == "dynamixel" else FeetechBus
    try:
        bus = bus_class(
            args.port, args.ids, baudrate=args.baudrate, packet_timeout_ms=args.packet_timeout_ms
        )
        procedure = CalibrationProcedure(
            bus,
            args.joints,
            full_turn_joints=args.full_turn,
            role="leader" if args.leader else "follower",
            ask=ask,
            say=say,
        )
    except (ValueError, CalibrationError) as exc:
        print(f"vla-runtime calibrate so100: {exc}", file=sys.stderr)
        return 1
    try:
        bus.open()
        calibration = procedure.run(sweep).with_convention(signs, offsets)
        calibration.save(args.output)
    except (DriverError, CalibrationError, OSError) as exc:
        print(f"vla-runtime calibrate so100: {exc}", file=sys.stderr)
        return 1
    finally:
        bus.close()
    say(f"calibration of {len(args.ids)} joints on {args.port} written to {args.output}")
    return 0


def _existing_convention(
    path: str, joint_names: Sequence[str]
) -> tuple[list[int] | None, list[float] | None]:
    """The sign/offset convention of an earlier file for the same joints, if there is one."""
    try:
        earlier = ArmCalibration.load(path)
    except CalibrationError:
        return None, None
    if earlier.joint_names != tuple(joint_names):
        return None, None
    return [j.sign for j in earlier.joints], [j.offset_rad for j in earlier.joints]
