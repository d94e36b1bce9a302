"""SO100/SO101 arms: Feetech STS3215 servos on a serial bus (`FeetechBus`), the arm driver
(`So100Driver`, built by `driver.build`), per-arm calibration files (`calibration`) and the
`vla-runtime calibrate so100` procedure (`calibrate`). `DynamixelBus` serves Dynamixel-based
(GELLO-style) leader arms with the same bus surface.

Modules are imported on use, so reading a calibration file needs no servo SDK.
"""
