#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU: runs jboat's second-order checks, the
# few-shot example and the Conv4 benchmark on CUDA and prints their numbers.
#
#   bash tools/check_cuda.sh            # everything (tens of minutes: CUDA kernels compile)
#   QUICK=1 bash tools/check_cuda.sh    # shorter example and benchmark runs
#
# Jittor reads its flags from environment variables of the same name, so `use_cuda=1`
# puts every Python process started here (the benchmark's workers included) on the GPU;
# scripts that have a --cuda option get it as well. PYTHON selects the interpreter.
# Exit status: 0 when every step passed, 1 otherwise (every step runs regardless).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
QUICK=${QUICK:-0}
export use_cuda=1
status=0
failed=()

step() {   # step NAME COMMAND...: run, report, remember failures
    local name=$1
    shift
    echo
    echo "=== ${name}: $*"
    local start=$SECONDS
    if "$@"; then
        echo "=== ${name}: ok ($((SECONDS - start)) s)"
    else
        echo "=== ${name}: FAILED ($((SECONDS - start)) s)"
        status=1
        failed+=("$name")
    fi
}

with_cuda_flag() {   # add --cuda when the script has that option
    local script=$1
    shift
    if "$PY" "$script" --help 2>/dev/null | grep -q -- "--cuda"; then
        "$PY" "$script" --cuda "$@"
    else
        "$PY" "$script" "$@"
    fi
}

"$PY" - <<'EOF' || { echo "check_cuda: no usable CUDA; nothing run."; exit 1; }
import sys
import jboat  # noqa: F401  (environment defaults before Jittor)
import jittor as jt
if not jt.has_cuda:
    sys.exit("check_cuda: Jittor found no CUDA (driver + nvcc).")
jt.flags.use_cuda = 1
x = jt.array([1.0, 2.0])
print("check_cuda: Jittor", jt.__version__, "on CUDA:", (x * 2).numpy(), "use_cuda =", jt.flags.use_cuda)
EOF

# 1. the audit table on the GPU (CUDA-only code paths: fused softmax, depthwise conv, cuDNN)
step "second-order audit (CUDA)" "$PY" -m jboat.tools.second_order_audit --cuda

# 2. the second-order tests and the whole-architecture hyper-gradient checks (float64
#    finite differences) with use_cuda=1
step "second-order tests (CUDA)" "$PY" -m pytest -q -p no:cacheprovider \
    tests/test_second_order_models.py tests/higher_jit/test_second_order.py \
    tests/test_second_order_audit.py tests/test_darts_search.py

# 3. the few-shot example
if [ -f examples/few_shot.py ]; then
    if [ "$QUICK" = 1 ]; then
        step "few-shot example (CUDA)" with_cuda_flag examples/few_shot.py --iters 20 \
            --eval-tasks 20 --no-baselines
    else
        step "few-shot example (CUDA)" with_cuda_flag examples/few_shot.py
    fi
else
    echo "=== few-shot example: examples/few_shot.py not present, skipped"
fi

# 4. the Conv4 benchmark
if [ -f bench/bench_conv4.py ]; then
    if [ "$QUICK" = 1 ]; then
        step "Conv4 benchmark (CUDA)" with_cuda_flag bench/bench_conv4.py --iters 3 --rounds 1
    else
        step "Conv4 benchmark (CUDA)" with_cuda_flag bench/bench_conv4.py
    fi
else
    echo "=== Conv4 benchmark: bench/bench_conv4.py not present, skipped"
fi

echo
if [ "$status" = 0 ]; then
    echo "check_cuda: all steps passed"
else
    echo "check_cuda: failed steps: ${failed[*]}"
fi
exit "$status"
