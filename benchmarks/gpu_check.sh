#!/usr/bin/env bash
# GPU check (about 8 minutes on one H100): the kernel benchmark, the kernel tests on the real GPU,
# and training notebooks in the gpu profile. Runs from a plain checkout: the package is found
# through PYTHONPATH, nothing is installed. Optional tools (jupyter, liger-kernel) are skipped with
# a message when absent.
#
#   bash benchmarks/gpu_check.sh [results-dir]       # default results-dir: gpu_results
#   NOTEBOOKS="notebooks/05_instruction_tuning.ipynb notebooks/07_reward_models.ipynb" \
#   BENCH_ARGS="--sweep" bash benchmarks/gpu_check.sh
#
# The benchmark runs first with the GPU to itself. The kernel tests time nothing, so they run
# beside the notebooks.
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
OUT_DIR="$(mkdir -p "${1:-gpu_results}" && cd "${1:-gpu_results}" && pwd)"
NOTEBOOKS="${NOTEBOOKS-notebooks/05_instruction_tuning.ipynb}"  # set but empty: no notebook
BENCH_ARGS="${BENCH_ARGS:-}"
NOTEBOOK_SECONDS="${NOTEBOOK_SECONDS:-360}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET  # compiled kernels, not the CPU interpreter
status=0

step() { echo; echo "=== $* ==="; }

step "environment"
"$PYTHON" - <<'PY'
import torch
print("torch", torch.__version__, "| cuda", torch.version.cuda, "| gpu available:", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device:", torch.cuda.get_device_name())
try:
    import triton
    print("triton", triton.__version__)
except ImportError:
    print("triton: not installed")
PY
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv 2>/dev/null || true

step "1/3 benchmark"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of options
timeout 240 "$PYTHON" benchmarks/kernels.py --n 1024 4096 8192 16384 $BENCH_ARGS \
    --json "$OUT_DIR/kernels.json" 2>&1 | tee "$OUT_DIR/kernels_benchmark.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "benchmark FAILED"; status=1; }

step "2/3 kernel tests on the GPU, in the background (--noconftest: no shared fixtures needed)"
timeout 240 "$PYTHON" -m pytest -q -p no:cacheprovider --noconftest tests/test_kernels.py -rs \
    --junitxml="$OUT_DIR/test_kernels.xml" > "$OUT_DIR/test_kernels.log" 2>&1 &
tests_pid=$!

step "3/3 notebooks in the gpu profile: $NOTEBOOKS"
if "$PYTHON" -c "import nbclient, nbformat, ipykernel" 2>/dev/null; then
    for notebook in $NOTEBOOKS; do
        echo "--- $notebook"
        RLHF_MINI_PROFILE=gpu timeout "$NOTEBOOK_SECONDS" "$PYTHON" -m rlhf_mini.nbtools execute \
            "$notebook" --out-dir "$OUT_DIR/notebooks" || { echo "notebook $notebook FAILED"; status=1; }
    done
else
    echo "SKIP: nbclient/ipykernel not importable here (install jupyter to run this step)"
fi

wait "$tests_pid" || { echo "kernel tests FAILED"; status=1; }
echo "--- kernel tests"
tail -n 15 "$OUT_DIR/test_kernels.log"

echo
if [ "$status" -eq 0 ]; then echo "GPU CHECK: OK"; else echo "GPU CHECK: FAILED"; fi
exit "$status"
