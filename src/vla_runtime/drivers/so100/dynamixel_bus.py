"""Dynamixel X-series servos over protocol 2.0 through `dynamixel_sdk`, for leader arms.

GELLO-style leader arms (and some follower arms) use XL330/XL430 servos: the operator moves
the leader by hand with torque off (the gripper trigger may keep a little current-based
torque), and the teleop node reads Present_Position with one sync read per tick. The surface
is `FeetechBus`'s (`ServoBus`): open/ping, set_torque, sync_read_positions,
sync_write_positions, single registers for calibration.

Homing: Present_Position = raw + Homing_Offset (4 bytes, two's complement), positions are not
wrapped. EEPROM registers (below Torque_Enable, 64) only take writes while torque is off.
"""

from __future__ import annotations

from vla_runtime.drivers.so100.bus import Encoding, Register, ServoBus


class DynamixelBus(ServoBus):
    """Dynamixel X series (XL330-M077/M288, XL430-W250, ...) over protocol 2.0."""

    sdk_name = "dynamixel_sdk"
    protocol_version = 2.0
    # X-series control table (ROBOTIS e-Manual, "Control Table" of the XL330/XL430 pages).
    RETURN_DELAY_TIME = Register("Return_Delay_Time", 9, 1)  # 2 µs per unit
    OPERATING_MODE = Register("Operating_Mode", 11, 1)
    homing_offset = Register("Homing_Offset", 20, 4, Encoding.TWOS_COMPLEMENT)
    max_position_limit = Register("Max_Position_Limit", 48, 4, Encoding.TWOS_COMPLEMENT)
    min_position_limit = Register("Min_Position_Limit", 52, 4, Encoding.TWOS_COMPLEMENT)
    torque_enable = Register("Torque_Enable", 64, 1)
    goal_position = Register("Goal_Position", 116, 4, Encoding.TWOS_COMPLEMENT)
    present_position = Register("Present_Position", 132, 4, Encoding.TWOS_COMPLEMENT)
    MODEL_NUMBERS = {1190: "XL330-M077", 1200: "XL330-M288", 1060: "XL430-W250"}
    POSITION_CONTROL_MODE = 3
    # Homing_Offset range of the X series (±256 turns).
    MAX_HOMING_OFFSET_TICKS = 1_044_479

    def configure(self) -> None:
        """Answer at once (factory Return_Delay_Time is 250 = 500 µs per servo)."""
        for servo_id in self.ids:
            self.write_register(servo_id, self.RETURN_DELAY_TIME, 0)

    def homing_offset_for(self, present_ticks: int, target_ticks: int) -> int:
        offset = target_ticks - present_ticks  # present = raw + offset
        return max(-self.MAX_HOMING_OFFSET_TICKS, min(self.MAX_HOMING_OFFSET_TICKS, offset))
