#!/usr/bin/env bash
# Set up (idempotent) and run the main job: `vla-runtime demo`, a policy driving the simulated
# SO100 arm (the so100_sim graph) with a live status, an MCAP recording and an HTML latency
# report whose path it prints at the end. Arguments go to `vla-runtime demo` (e.g.
# `--duration 30`, `--policy tiny_recurrent`, `--embodiment franka`, `--gui`, `--output DIR`).
# Ctrl-C stops the whole graph cleanly and still writes the report.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLA_RUNTIME_VENV:-.venv}
bash scripts/setup.sh
exec "$VENV/bin/vla-runtime" demo "$@"
