#!/usr/bin/env bash
# Set up (idempotent) and run the main job. Arguments go to `vla-runtime launch`
# (e.g. `--duration 30`). Ctrl-C stops the whole graph cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLA_RUNTIME_VENV:-.venv}
bash scripts/setup.sh
if [ "$#" = 0 ]; then set -- --duration 10; fi
exec "$VENV/bin/vla-runtime" launch demo_talker_listener "$@"
