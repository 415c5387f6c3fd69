#!/usr/bin/env bash
# GPU check (about 8 minutes on one H100): kernel tests on the real GPU, the kernel benchmark, and
# one training notebook in the gpu profile. Runs from a plain checkout: the package is found
# through PYTHONPATH, nothing is installed. Optional tools (nbval, liger-kernel) are skipped with
# a message when absent.
#
#   bash benchmarks/gpu_check.sh [results-dir]       # default results-dir: gpu_results
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
OUT_DIR="${1:-gpu_results}"
NOTEBOOK="${NOTEBOOK:-notebooks/05_instruction_tuning.ipynb}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET  # compiled kernels, not the CPU interpreter
status=0

step() { echo; echo "=== $* ==="; }

step "environment"
"$PYTHON" - <<'EOF'
import torch
print("torch", torch.__version__, "| cuda", torch.version.cuda, "| gpu available:", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device:", torch.cuda.get_device_name())
try:
    import triton
    print("triton", triton.__version__)
except ImportError:
    print("triton: not installed")
EOF
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv 2>/dev/null || true

step "1/3 kernel tests on the GPU (--noconftest: they need none of the shared fixtures)"
timeout 240 "$PYTHON" -m pytest -q -p no:cacheprovider --noconftest tests/test_kernels.py -rs \
    --junitxml="$OUT_DIR/test_kernels.xml" 2>&1 | tee "$OUT_DIR/test_kernels.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "kernel tests FAILED"; status=1; }

step "2/3 benchmark"
timeout 240 "$PYTHON" benchmarks/kernels.py --n 1024 4096 8192 16384 --json "$OUT_DIR/kernels.json" 2>&1 \
    | tee "$OUT_DIR/kernels_benchmark.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "benchmark FAILED"; status=1; }

step "3/3 notebook $NOTEBOOK (gpu profile)"
if ! [ -f "$NOTEBOOK" ]; then
    echo "SKIP: $NOTEBOOK not found"
elif "$PYTHON" -c "import nbval, jupyter_client, ipykernel" 2>/dev/null; then
    RLHF_MINI_PROFILE=gpu timeout 360 "$PYTHON" -m pytest -q -p no:cacheprovider --nbval-lax \
        --nbval-current-env "$NOTEBOOK" 2>&1 | tee "$OUT_DIR/notebook.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "notebook FAILED"; status=1; }
else
    echo "SKIP: nbval/jupyter not importable here (install nbval and ipykernel to run this step)"
fi

echo
if [ "$status" -eq 0 ]; then echo "GPU CHECK: OK"; else echo "GPU CHECK: FAILED"; fi
exit "$status"
