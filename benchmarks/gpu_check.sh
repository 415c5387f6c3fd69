#!/usr/bin/env bash
# GPU check: proves the gpu profile on one GPU machine in one command. In order:
#   1. the kernel benchmark (with the GPU to itself), against Liger-Kernel when it is installed;
#   2. the kernel tests on the real GPU (in the background: they time nothing);
#   3. the training chapters (instruction tuning, reward models, PPO, DPO, and verifiable rewards
#      when the course has that chapter) in the gpu profile, sharing one model cache, each under
#      its own time limit: the first alone (it builds what the others load), the rest side by side.
# It runs from a plain checkout: the package is found through PYTHONPATH, nothing is installed.
# Chapters run through Jupyter (nbclient) when it is installed, else as plain Python
# (`python -m rlhf_mini.nbtools run-plain`), which needs only the course's libraries.
#
#   bash benchmarks/gpu_check.sh [results-dir]       # default results-dir: gpu_results
#   NOTEBOOKS="notebooks/05_instruction_tuning.ipynb" CHAPTER_SECONDS=400 BENCH_ARGS="--sweep" \
#       bash benchmarks/gpu_check.sh
#   BENCH=0 PROFILE=cpu NOTEBOOKS="notebooks/01_rl_basics.ipynb notebooks/02_utility_and_preferences.ipynb" \
#       bash benchmarks/gpu_check.sh     # the script's own plumbing, on a machine without a GPU
#
# The summary at the end lists each chapter's wall-clock time and verdict.
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
OUT_DIR="$(mkdir -p "${1:-gpu_results}" && cd "${1:-gpu_results}" && pwd)"
TRAINING_CHAPTERS="$(ls notebooks/05_*.ipynb notebooks/07_*.ipynb notebooks/09_*.ipynb \
    notebooks/11_*.ipynb notebooks/*verifiable*.ipynb 2>/dev/null | sort -u | tr '\n' ' ')"
NOTEBOOKS="${NOTEBOOKS-$TRAINING_CHAPTERS}"  # set but empty: no chapter
BENCH="${BENCH:-1}"  # 0: skip the kernel benchmark and tests
BENCH_ARGS="${BENCH_ARGS:-}"
CHAPTER_SECONDS="${CHAPTER_SECONDS:-480}"
PARALLEL="${PARALLEL:-1}"
PROFILE="${PROFILE:-gpu}"  # PROFILE=cpu tries this script on a machine without a GPU
# One cache for every chapter, so a chapter loads the stages the previous ones trained.
export RLHF_MINI_CACHE="${RLHF_MINI_CACHE:-$OUT_DIR/cache}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET  # compiled kernels, not the CPU interpreter
status=0

step() { echo; echo "=== $* ==="; }

step "environment"
"$PYTHON" - <<'PY'
import torch
import transformers
print("torch", torch.__version__, "| cuda", torch.version.cuda, "| gpu available:", torch.cuda.is_available())
print("transformers", transformers.__version__)
if torch.cuda.is_available():
    print("device:", torch.cuda.get_device_name())
try:
    import triton
    print("triton", triton.__version__)
except ImportError:
    print("triton: not installed")
PY
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv 2>/dev/null || true

# The chapters need the course's libraries; GPU images often lack some (datasets, say). Say which,
# up front, instead of failing each chapter at its first import.
missing="$("$PYTHON" - <<'PY'
import importlib.util
needed = ["torch", "transformers", "tokenizers", "datasets", "numpy", "pandas", "matplotlib", "tqdm"]
print(" ".join(name for name in needed if importlib.util.find_spec(name) is None))
PY
)"
if [ -n "$missing" ]; then
    echo "MISSING for the chapters: $missing (pip install them, or carry their wheels); chapters skipped"
    NOTEBOOKS=""
    status=1
fi

if [ "$BENCH" = 1 ]; then
step "1/3 benchmark"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of options
timeout 240 "$PYTHON" benchmarks/kernels.py --n 1024 4096 8192 16384 $BENCH_ARGS \
    --json "$OUT_DIR/kernels.json" 2>&1 | tee "$OUT_DIR/kernels_benchmark.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "benchmark FAILED"; status=1; }

step "2/3 kernel tests on the GPU, in the background (--noconftest: no shared fixtures needed)"
timeout 240 "$PYTHON" -m pytest -q -p no:cacheprovider --noconftest tests/test_kernels.py -rs \
    --junitxml="$OUT_DIR/test_kernels.xml" > "$OUT_DIR/test_kernels.log" 2>&1 &
tests_pid=$!
else
    tests_pid=""
fi

step "3/3 training chapters in the $PROFILE profile, at most ${CHAPTER_SECONDS} s each: $NOTEBOOKS"
if "$PYTHON" -c "import nbclient, nbformat, ipykernel" 2>/dev/null; then
    runner=(-m rlhf_mini.nbtools execute --out-dir "$OUT_DIR/notebooks")
else
    echo "(no Jupyter here: each chapter runs as plain Python, python -m rlhf_mini.nbtools run-plain)"
    runner=(-m rlhf_mini.nbtools run-plain --out-dir "$OUT_DIR/notebooks")
fi
# The first chapter runs alone: it builds the base model and the SFT policy that every later one
# loads. The others then run side by side (PARALLEL=0: one after another). A stage two of them
# need (the reward model, say) is built once: the cache takes a file lock, and the second waits.
summary=()
run_chapter() {  # notebook -> its log; prints "<seconds> <exit code>" last
    local started=$SECONDS code
    RLHF_MINI_PROFILE="$PROFILE" timeout "$CHAPTER_SECONDS" "$PYTHON" "${runner[@]}" "$1"
    code=$?
    echo "$((SECONDS - started)) $code"
}
record() {  # notebook, log file
    local seconds code verdict
    read -r seconds code < <(tail -n 1 "$2")
    case $code in
        0) verdict="ok" ;;
        124) verdict="TIME LIMIT"; status=1 ;;
        *) verdict="FAILED (see $2)"; status=1 ;;
    esac
    summary+=("$(printf '%-45s %5d s  %s' "$(basename "$1")" "$seconds" "$verdict")")
}
mkdir -p "$OUT_DIR/logs"
set -- $NOTEBOOKS
if [ $# -gt 0 ]; then
    first="$1"; shift
    echo "--- $first (alone)"
    run_chapter "$first" 2>&1 | tee "$OUT_DIR/logs/$(basename "$first" .ipynb).log"
    record "$first" "$OUT_DIR/logs/$(basename "$first" .ipynb).log"
    pids=()
    for notebook in "$@"; do
        log="$OUT_DIR/logs/$(basename "$notebook" .ipynb).log"
        if [ "$PARALLEL" = 1 ]; then
            echo "--- $notebook (in the background: $log)"
            run_chapter "$notebook" > "$log" 2>&1 &
            pids+=($!)
        else
            echo "--- $notebook"
            run_chapter "$notebook" 2>&1 | tee "$log"
        fi
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
    for notebook in "$@"; do
        record "$notebook" "$OUT_DIR/logs/$(basename "$notebook" .ipynb).log"
    done
fi

if [ -n "$tests_pid" ]; then
    wait "$tests_pid" || { echo "kernel tests FAILED"; status=1; }
    echo "--- kernel tests"
    tail -n 15 "$OUT_DIR/test_kernels.log"
fi

echo
echo "--- chapters ($PROFILE profile)"
printf '%s\n' "${summary[@]}" | tee "$OUT_DIR/chapters.txt"
echo
if [ "$status" -eq 0 ]; then echo "GPU CHECK: OK"; else echo "GPU CHECK: FAILED"; fi
exit "$status"
