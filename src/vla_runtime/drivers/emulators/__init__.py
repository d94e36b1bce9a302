"""Emulators of the devices our drivers talk to, speaking their real protocols (DESIGN §8)."""
