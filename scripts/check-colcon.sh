#!/usr/bin/env bash
# The ROS packaging, checked for real without ROS: catkin_pkg parses package.xml without
# warnings, and `colcon build` installs executables under lib/vla_runtime and launch/config
# under share/vla_runtime, as `ros2 run`/`ros2 launch` expect.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLA_RUNTIME_VENV:-.venv}
PY="$VENV/bin/python"

"$PY" - <<'PY'
import warnings
from catkin_pkg.package import parse_package
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    package = parse_package("package.xml")
    package.validate()
problems = [str(w.message) for w in caught]
if problems:
    raise SystemExit("package.xml warnings:\n  " + "\n  ".join(problems))
print(f"[colcon] package.xml OK: {package.name} {package.version}, format {package.package_format}")
PY

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log="$work/colcon.log"
if ! PATH="$VENV/bin:$PATH" "$VENV/bin/colcon" --log-base "$work/log" build \
    --base-paths . --build-base "$work/build" --install-base "$work/install" \
    --packages-select vla_runtime >"$log" 2>&1; then
  cat "$log"; echo "[colcon] colcon build failed"; exit 1
fi
if grep -iE "warning|deprecat" "$log" | grep -viE "SetuptoolsDeprecationWarning|byte-compiling is disabled|^$" ; then
  echo "[colcon] (warnings above are informational)"
fi
prefix="$work/install/vla_runtime"
missing=0
for path in lib/vla_runtime/vla-runtime lib/vla_runtime/talker_node lib/vla_runtime/listener_node \
    lib/vla_runtime/driver_node lib/vla_runtime/teleop_node lib/vla_runtime/policy_node \
    lib/vla_runtime/latency_monitor lib/vla_runtime/camera_node lib/vla_runtime/think_node \
    share/vla_runtime/package.xml \
    share/vla_runtime/launch/bringup.launch.py \
    share/vla_runtime/config/graphs/demo_talker_listener.yaml \
    share/vla_runtime/config/graphs/so100_sim.yaml \
    share/vla_runtime/models/tiny_so100/model.safetensors \
    share/ament_index/resource_index/packages/vla_runtime; do
  if [ ! -e "$prefix/$path" ]; then echo "[colcon] missing from the install: $path"; missing=1; fi
done
[ "$missing" = 0 ] || exit 1
echo "[colcon] colcon build OK: executables in lib/vla_runtime, launch + config in share/vla_runtime"
