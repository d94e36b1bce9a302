#!/usr/bin/env bash
# Idempotent setup for a fresh Debian/Ubuntu machine: system packages (when root), a virtual
# environment in .venv, and vla_runtime installed editable with its dev and benchmark extras.
# Re-running only reinstalls when pyproject.toml or setup.py changed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VLA_RUNTIME_VENV:-.venv}
PYTHON=${PYTHON:-python3}

log() { printf '[setup] %s\n' "$*"; }

need_system=()
command -v "$PYTHON" >/dev/null 2>&1 || need_system+=(python3)
if command -v "$PYTHON" >/dev/null 2>&1 && ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  need_system+=(python3-venv python3-pip)
fi
command -v ip >/dev/null 2>&1 || need_system+=(iproute2)       # `ip link set lo up` in test namespaces
command -v unshare >/dev/null 2>&1 || need_system+=(util-linux)
command -v git >/dev/null 2>&1 || need_system+=(git)
# MuJoCo's offscreen rendering (sim/) without a display or GPU: EGL on Mesa's llvmpipe
compgen -G '/usr/lib*/libEGL_mesa.so.0' >/dev/null || compgen -G '/usr/lib*/*/libEGL_mesa.so.0' \
  >/dev/null || need_system+=(libegl1 libegl-mesa0 libgl1-mesa-dri)
# pyrealsense2 (cameras/realsense_source.py) loads libusb-1.0 at import
compgen -G '/usr/lib*/libusb-1.0.so.0' >/dev/null || compgen -G '/usr/lib*/*/libusb-1.0.so.0' \
  >/dev/null || need_system+=(libusb-1.0-0)
if ((${#need_system[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing system packages: ${need_system[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_system[@]}" >/dev/null
  else
    log "missing system packages: ${need_system[*]}"
    log "install them with: sudo apt-get install -y ${need_system[*]}"
    exit 1
  fi
fi

"$PYTHON" - <<'PY' || { log "vla_runtime needs Python >= 3.10"; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi

stamp="$VENV/.vla_runtime-installed"
want=$(cat pyproject.toml setup.py | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing vla_runtime and its dependencies into $VENV (first run takes a minute)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # torch first and pinned: an unpinned torch would resolve to the newest CUDA build (GBs).
  # A torch that is already installed (e.g. a CUDA build on a robot PC) is kept.
  if ! "$VENV/bin/python" -c 'import torch' >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install --quiet "torch==${VLA_RUNTIME_TORCH_VERSION:-2.13.0}"
  fi
  "$VENV/bin/python" -m pip install --quiet -e ".[dev,bench]"
  echo "$want" > "$stamp"
else
  log "environment up to date ($VENV)"
fi
