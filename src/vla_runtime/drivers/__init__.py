"""Arm drivers, one folder per embodiment, and emulators of their devices."""
