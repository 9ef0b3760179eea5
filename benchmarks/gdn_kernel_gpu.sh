#!/usr/bin/env bash
# One GPU call: the compiled Pallas GPU kernel tests, then the kernel benchmark.
#
#   bash benchmarks/gdn_kernel_gpu.sh                 # in the repository root on the GPU machine
#   MODE=tests bash benchmarks/gdn_kernel_gpu.sh      # only the tests (MODE=bench: only timings)
#
# Needs benchmarks/wheels/*.whl (flash-linear-attention 0.6.0 + fla-core 0.6.0, and
# jax-linear-attention 0.1.0 (jla); pure Python, ~2.5 MB; git-ignored, fetched where pip has a
# network, then carried to the GPU machine: carry=["benchmarks/wheels"]):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       -d benchmarks/wheels flash-linear-attention==0.6.0 fla-core==0.6.0 \
#       jax-linear-attention==0.1.0
# Without them the fla and jla rows record an import error. (jla's own dependencies beyond JAX,
# such as equinox, are not needed by its kernels: --no-deps.)
# Writes under $OUT (default /tmp/gdn_out): pytest log, gdn_kernel.json/.log, the fla child's JSON.
# Time limits (seconds, each under `timeout` so one hang cannot eat the other):
#   TEST_TIMEOUT=220  the gpu-marked kernel tests (mostly compiles of new shapes); TEST_FILES
#                     picks test files or folders (default: the GPU kernel tests,
#                     tests/kernels/gated_delta_rule/gpu, and the packed-documents test)
#   BENCH_BUDGET=260  no benchmark cell starts after this; shapes go one at a time (XLA, jla
#                     and ours, then fla's child, which takes minutes; the per-kernel breakdown
#                     before the first), so a cut-short run still compares ours with jla on the
#                     first shape; cells not run are listed as skipped
#   BENCH_TIMEOUT=330 the benchmark is killed here (its JSON is saved after every cell)
# BENCH_ARGS: extra gdn_kernel.py arguments, e.g. "--no-breakdown --shape B=8,T=2048,H=8,K=128,V=128"
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gdn_out}
MODE=${MODE:-all}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
SITE=$(mktemp -d)  # per process: two of these may run at once, one per GPU
if ls benchmarks/wheels/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" benchmarks/wheels/*.whl || echo "benchmark wheel install failed"
fi
export PYTHONPATH=.:$SITE${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c 'import jax, torch, triton; print("jax", jax.__version__, jax.devices(), "| torch", torch.__version__, "| triton", triton.__version__)'

if [ "$MODE" != bench ]; then
  echo "=== GPU tests (compiled Pallas kernels) ==="
  t0=$(date +%s)
  timeout "${TEST_TIMEOUT:-220}" $PY -m pytest -p no:xdist -p no:cacheprovider -q -m gpu -rA \
    --durations=0 ${TEST_FILES:-tests/kernels/gated_delta_rule/gpu \
    tests/kernels/gated_delta_rule/test_segments.py} 2>&1 \
    | tee "$OUT/pytest_gpu.log" \
    | grep -E "passed|failed|PASSED|FAILED|ERROR|Error|error|errors:|s call" | tail -30
  echo "tests: exit ${PIPESTATUS[0]}, $(( $(date +%s) - t0 )) s"
fi

if [ "$MODE" != tests ]; then
  echo "=== benchmark ==="
  t0=$(date +%s)
  # shellcheck disable=SC2086  # BENCH_ARGS is a word list
  timeout "${BENCH_TIMEOUT:-330}" $PY benchmarks/gdn_kernel.py --budget-s "${BENCH_BUDGET:-260}" \
    ${BENCH_ARGS:-} --out "$OUT/gdn_kernel.json" 2>&1 | tee "$OUT/gdn_kernel.log" \
    | grep -v "^  File \|^    \|^Traceback\|Warning\|warn(" | tail -75
  echo "benchmark: exit ${PIPESTATUS[0]}, $(( $(date +%s) - t0 )) s"
fi
