#!/usr/bin/env bash
# Issue 17's latency numbers on a machine with one NVIDIA GPU, in one command (see bench/gpu_check.py).
#   bench/gpu_check.sh                          # 7b and 13b, bf16/int8/int4, eager and compiled
#   bench/gpu_check.sh --size tiny --device cpu # smoke run
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
# The script keeps its own budget and watchdog; this outer limit only catches a stuck interpreter.
exec timeout --kill-after=20 540 "$PYTHON" -m bench.gpu_check "$@"
