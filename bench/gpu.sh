#!/usr/bin/env bash
# Every GPU check in one go, everything written into one folder (about 5 minutes on an H100):
#   bash bench/gpu.sh OUT
# 1. set-up (PyPI's torch 2.13.0 on Linux is the CUDA build), 2. the tests and every CUDA
# benchmark once, untimed, 3. the agreement check on CUDA, 4. the CUDA benchmarks (saved run,
# report), 5. synchronized vs unsynchronized timing and the Triton kernel count.
set -uo pipefail
out=${1:?usage: bash bench/gpu.sh OUT}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
status=0
run() { echo "== $*" | tee -a "$out/log.txt"; "$@" 2>&1 | tee -a "$out/log.txt"; [ "${PIPESTATUS[0]}" = 0 ] || status=1; }

run python3 -m pip install -q -e ".[dev]" -c constraints.txt
# ONNX Runtime on CUDA needs onnxruntime-gpu in place of onnxruntime (see README); without it
# the onnxruntime CUDA rows are skipped with that reason.
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
run python3 -m pytest bench --benchmark-disable --devices cuda -q -p no:cacheprovider
run python3 -m bench.agreement --devices cuda --out "$out"
run python3 -m pytest bench --benchmark-only --devices cuda -q -p no:cacheprovider \
    --benchmark-storage="$out/benchmarks" --benchmark-max-time=0.5
run python3 -m bench.gpu_check --out "$out"
exit $status
