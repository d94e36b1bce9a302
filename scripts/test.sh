#!/usr/bin/env bash
# Set up (idempotent) and run every check CI runs: lint, types, ROS packaging, tests.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not integration"`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLA_RUNTIME_VENV:-.venv}
bash scripts/setup.sh

echo "[test] ruff"
"$VENV/bin/ruff" check src test benchmarks launch
echo "[test] mypy (strict on core/, policy/, drivers/)"
"$VENV/bin/mypy" --no-error-summary src/vla_runtime
"$VENV/bin/mypy" --no-error-summary --strict src/vla_runtime/core src/vla_runtime/policy \
  src/vla_runtime/drivers
echo "[test] colcon"
bash scripts/check-colcon.sh

echo "[test] pytest (inside a private network namespace when allowed)"
set +e
bash scripts/in-netns.sh "$VENV/bin/python" -m pytest "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
  echo "[test] pytest collected no tests: that is a failure, not a pass"
  exit 1
fi
exit "$status"
