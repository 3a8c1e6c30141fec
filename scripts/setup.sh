#!/usr/bin/env bash
# Set up the development environment: system packages, a virtualenv, torch, the project.
# Idempotent; runs from any working directory.
#
#   LISA_VENV   where the virtualenv lives (default: <repo>/.venv)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LISA_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"

log() { echo "[setup] $*"; }

# --- System packages ---------------------------------------------------------
# Debian packages the project needs. Later work extends this list
# (e.g. libusb-1.0-0 for open3d). Space-separated.
SYSTEM_PACKAGES=""

missing=()
for pkg in $SYSTEM_PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
# python3 -m venv needs python3-venv on Debian's own python; probe it in a scratch dir.
if [ ! -x "$VENV/bin/python" ]; then
    probe="$(mktemp -d)"
    if ! "$PYTHON" -m venv --without-pip "$probe/venv" >/dev/null 2>&1; then
        missing+=("python3-venv")
    fi
    rm -rf "$probe"
fi

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing system packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        log "WARNING: missing system packages (${missing[*]}); install them as root with apt-get" >&2
    fi
fi

# --- Virtualenv -----------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)
log "upgrading pip"
"${PIP[@]}" install -q --upgrade pip

# --- torch (must come before anything that depends on it) ---------------------
# A pinned CPU wheel lies on local disk; an unpinned torch would pull a
# multi-GB CUDA build. Installing it first makes `torch>=...` below a no-op.
installed_torch="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)"
if [ "${installed_torch%%+*}" = "$TORCH_VERSION" ]; then
    log "torch $installed_torch already installed"
else
    log "installing torch==$TORCH_VERSION (found: ${installed_torch:-none})"
    "${PIP[@]}" install -q "torch==$TORCH_VERSION"
fi

# --- The project ---------------------------------------------------------------
log "installing lisa-ros-model (editable, with dev extras)"
(cd "$ROOT" && "${PIP[@]}" install -q -e ".[dev]")

log "done: $VENV"
