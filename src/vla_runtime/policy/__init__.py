"""Policy interface, reference models, backends and per-embodiment transforms."""
