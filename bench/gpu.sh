#!/usr/bin/env bash
# Every GPU check in one go, on the machine as it stands (no download, no install), within 6 minutes:
#   bash bench/gpu.sh OUT
# Leaves two files directly in OUT: gpu-results.tar.gz (every output and the full log) and
# summary.txt (what each step did). The last lines printed are the CUDA training-step table.
#
# Steps, each under its own `timeout` so one slow step cannot eat the others' time:
#   1. preflight: versions, nvidia-smi; stops here (exit 2) when torch cannot use CUDA
#   2. smoke test: eager, torchscript and onnxruntime CUDA benchmarks once, untimed (nothing compiled)
#   3. agreement check on CUDA (bench.agreement, batch 8): compiles each compiled backend's batch-8 step
#   4. CUDA training-step benchmarks, batch 1, 64, 256: compile-step and compile-step-im2col-cudagraphs
#      compile one Inductor graph per batch size (default mode, Triton kernels, no autotuning); aotinductor builds
#      one library (dynamic batch; Inductor's cache makes steps 3 and 4 share their compilations)
#   5. bench.gpu_check: eager synchronized vs unsynchronized, Triton kernel count of
#      compile-step-im2col-cudagraphs' step
#   6. bench.ddp on CUDA: the NCCL row at world size 1 (eager and compiled step under DDP)
# compile-step-im2col and the compile-net, compile-net-opt and compile-iter loops are left out by default,
# to fit the budget below. GPU_BACKENDS=... overrides the list.
set -uo pipefail
out=${1:?usage: bash bench/gpu.sh OUT}
mkdir -p "$out" && out=$(cd "$out" && pwd) || { echo "gpu.sh: cannot create the folder $out" >&2; exit 2; }
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
backends=${GPU_BACKENDS:-eager,compile-step-im2col-cudagraphs,compile-step,aotinductor,torchscript,onnxruntime}
budget=345   # seconds for all steps; packing and the table take a few more
run_dir=$(mktemp -d "$out/.gpu-run.XXXXXX")
log=$run_dir/log.txt summary=$run_dir/summary.txt
status=0

note() { echo "$*" | tee -a "$summary"; }

# step NAME LIMIT CMD...: run CMD under `timeout`, at most LIMIT seconds and what is left of the budget.
step() {
    local name=$1 limit=$2 left rc start=$SECONDS
    shift 2
    left=$((budget - SECONDS))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 10 ]; then note "$name: not run (time budget spent)"; status=1; return 1; fi
    echo "== $name (limit ${limit}s): $*" | tee -a "$log"
    timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    case $rc in
        0) note "$name: ok ($((SECONDS - start)) s)" ;;
        124|137) note "$name: TIMED OUT after ${limit} s"; status=1 ;;
        *) note "$name: FAILED (exit $rc, $((SECONDS - start)) s; see log.txt)"; status=1 ;;
    esac
    return "$rc"
}

pack() {
    tar -czf "$out/gpu-results.tar.gz" -C "$run_dir" . && cp "$summary" "$out/summary.txt"
    rm -rf "$run_dir"
}

note "gpu.sh at $(git rev-parse --short HEAD 2>/dev/null || echo 'no git'), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
nvidia-smi > "$run_dir/nvidia-smi.txt" 2>&1 || note "nvidia-smi: failed or absent (see nvidia-smi.txt)"
if ! step preflight 60 python3 - <<'EOF'
import importlib.metadata as md
import sys

try:
    import torch
except ImportError as error:
    sys.exit(f"gpu.sh: cannot import torch ({error}); this script installs nothing")
for name in ("torch", "triton", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu", "pytest", "pytest-benchmark"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} not installed")
try:
    import pytest_benchmark  # noqa: F401
except ImportError:
    sys.exit("gpu.sh: pytest-benchmark is not installed; this script installs nothing")
print(f"torch built for CUDA {torch.version.cuda}")
if not torch.cuda.is_available():
    sys.exit(f"gpu.sh: torch {torch.__version__} cannot use CUDA here (no GPU visible, or a CPU-only "
             "build): every later step runs on CUDA, so it stops")
print(f"GPU: {torch.cuda.get_device_name()} (compute capability {torch.cuda.get_device_capability()})")
EOF
then
    note "stopped after preflight: $(grep '^gpu.sh:' "$log" | tail -1)"
    pack
    exit 2
fi
step "smoke test" 45 python3 -m pytest bench --benchmark-disable --devices cuda --modes train,forward \
    --backends eager,torchscript,onnxruntime --batch-sizes 1 -q -p no:cacheprovider
step "agreement check" 100 python3 -m bench.agreement --devices cuda --backends "$backends" \
    --out "$run_dir/agreement"
step "CUDA benchmarks" 140 python3 -m pytest bench --benchmark-only --devices cuda --modes train \
    --backends "$backends" -q -p no:cacheprovider --benchmark-storage="$run_dir/benchmarks" \
    --paired-seconds=1 --quick
step "gpu_check" 50 python3 -m bench.gpu_check --out "$run_dir" --backend compile-step-im2col-cudagraphs
step "DDP, NCCL, world size 1" 45 python3 -m bench.ddp --device cuda --world-sizes 1 --out "$run_dir/ddp"

table=$(python3 - "$run_dir/benchmarks" <<'EOF'
import glob
import json
import sys

runs = sorted(glob.glob(f"{sys.argv[1]}/**/*.json", recursive=True))
if not runs:
    sys.exit("no saved CUDA benchmark run")
times = {}
with open(runs[-1]) as f:
    for bench in json.load(f)["benchmarks"]:
        extra = bench["extra_info"]
        if extra.get("mode") == "train" and extra.get("device") == "cuda":
            times[extra["backend"], extra["batch_size"]] = bench["stats"]["median"] * 1e3
batches = sorted({b for _, b in times})
print("CUDA training step, median ms per step, from " + runs[-1].split("/")[-1])
print("| backend | " + " | ".join(f"batch {b}" for b in batches) + " |")
print("|---|" + "---|" * len(batches))
for backend in dict.fromkeys(k for k, _ in times):
    cells = [f"{times[backend, b]:.4g}" if (backend, b) in times else "-" for b in batches]
    print(f"| {backend} | " + " | ".join(cells) + " |")
EOF
) || status=1
echo "$table" >> "$summary"
pack
echo "gpu.sh: $( [ $status = 0 ] && echo 'every step ok' || echo 'some step failed' ); $out/gpu-results.tar.gz, $out/summary.txt"
echo "$table"
exit $status
