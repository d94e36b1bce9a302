"""Pure-Python runtime logic: timing, chunk execution, safety, change detection, latency
statistics. Imports neither a middleware nor torch, so every piece is unit-testable."""
