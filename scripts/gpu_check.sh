#!/usr/bin/env bash
# The GPU checks, for a machine with an NVIDIA GPU whose Python already has taskology importable
# (e.g. `pip install -e .[dev]` there, or the README's set-up with the CUDA build of torch):
#   0. one GPU per task: a local cluster whose workers are pinned one GPU each trains four tasks a few
#      steps; prints which GPU each task trained on (as its own process reports it) and fails when a
#      task is not on CUDA, not on its worker's GPU, or a GPU holds more than ceil(tasks/GPUs) of them;
#   1. the other tests marked `gpu` (CUDA twins of the geometry ops, compared with the CPU);
#   2. `taskology bench device`: steps/s per task and of a collective round on the CPU and the GPU,
#      CPU/GPU agreement of the losses, peak GPU memory (64x208 and 128x416);
#   3. the whole test suite with the GPU visible (train.device: auto then trains on it), in parallel
#      when pytest-xdist is installed, bounded by SUITE_TIMEOUT seconds (default 300).
# Usage: bash scripts/gpu_check.sh OUT_DIR [placement]   (PYTHON=... to pick the interpreter; default python3)
#        `placement` runs step 0 only (about a minute).
# Everything it prints also goes to OUT_DIR/*.log; the bench results go to OUT_DIR/device.{json,md}.
set -uo pipefail
out=${1:?usage: bash scripts/gpu_check.sh OUT_DIR [placement]}
only=${2:-all}
if [[ $only != all && $only != placement ]]; then
    echo "gpu_check.sh: second argument: expected 'placement' (step 0 only) or nothing, found '$only'" >&2
    exit 2
fi
py=${PYTHON:-python3}
mkdir -p "$out"
cd "$(dirname "$0")/.."
status=0

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/nvidia-smi.log" || status=1
"$py" -c 'import torch, sys; ok = torch.cuda.is_available(); print("torch", torch.__version__, "cuda", torch.version.cuda,
      torch.cuda.get_device_name(0) if ok else "NO CUDA DEVICE"); sys.exit(0 if ok else 1)' || exit 1

# tests that start `dask scheduler`, `dask worker` or `taskology` as processes need the console scripts
for tool in dask taskology; do
    command -v "$tool" >/dev/null || echo "warning: no '$tool' command on PATH: tests that start it will fail" \
        "(install with 'pip install -e .', not 'pip --target')" | tee -a "$out/nvidia-smi.log"
done

echo "== 0. one GPU per task"
"$py" -m pytest -q -s -p no:cacheprovider tests/cluster/test_placement_cuda.py 2>&1 | tee "$out/placement.log" \
    || status=1
if [[ $only == placement ]]; then exit $status; fi

echo "== 1. tests marked gpu"
"$py" -m pytest -q -m gpu -p no:cacheprovider --ignore=tests/cluster/test_placement_cuda.py 2>&1 \
    | tee "$out/gpu-tests.log" || status=1

echo "== 2. taskology bench device"
"$py" -m taskology bench device --out "$out" 2>&1 | tee "$out/bench-device.log" || status=1

echo "== 3. the whole test suite with the GPU visible"
parallel=()
# with xdist, -v names each test as it ends (a run stopped by the timeout still says which failed)
if "$py" -c 'import xdist' 2>/dev/null; then parallel=(-n "${JOBS:-8}" -v); fi
OMP_NUM_THREADS=1 timeout "${SUITE_TIMEOUT:-300}" "$py" -m pytest -q -rfE --tb=short -p no:cacheprovider -m "not gpu" \
    "${parallel[@]}" 2>&1 | tee "$out/suite.log" | grep -E "FAILED|ERROR|[0-9]+ (passed|failed)" || status=1
exit $status
