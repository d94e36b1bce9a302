"""The simulated world (MuJoCo) that moves the device emulators and renders the cameras."""
