#!/usr/bin/env bash
# One GPU call (about 9 minutes on an H100) that checks this tree's kernels against an earlier
# commit's: first this tree's gated delta rule against the other's, forward+backward and the
# forward alone at precision "default" through the API's "auto", on the four benchmark shapes,
# timed interleaved in one process (benchmarks/gdn_kernel_compare.py: table and JSON, with the
# largest difference of o and of every gradient); then each Mosaic kernel's registers and
# spills (benchmarks/gdn_kernel_ptxas.py); then every compiled GPU kernel test (`-m gpu` over
# tests/kernels/).
#
#   bash benchmarks/export_kernels.sh 5a705db build/gdr_before   # where git is; build/ is
#                                                                # git-ignored: carry it
#   OUT=/tmp/out bash benchmarks/gdn_kernel_check_gpu.sh           # on the GPU machine
#
# Needs no network, torch or fla. Writes under $OUT (default /tmp/gdn_check): gdn_compare.md,
# gdn_compare.json, compare.log, gdn_ptxas.md/.json, ptxas.log, pytest_gpu.log. Time limits in
# seconds: COMPARE_TIMEOUT=300 (compiles of 4 shapes x 2 modes x 2 trees dominate),
# PTXAS_TIMEOUT=120, TEST_TIMEOUT=320 (the 32 compiled tests ran past 250 s on an H100, 25 of
# them done by then: in a 600 s call run MODES=fwd+bwd, or give the tests a call of their own). BEFORE: the exported
# tree (default build/gdr_before). MODES: the compared modes (default "fwd+bwd fwd"). SHAPES:
# the compared shapes instead of the four benchmark shapes, e.g. "B=8,T=2048,H=22,K=48,V=96"
# (the 370M model's GDN layer; space-separated for several).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gdn_check}
BEFORE=${BEFORE:-build/gdr_before}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "before: $(cat "$BEFORE/COMMIT" 2>/dev/null || echo "no $BEFORE/COMMIT")"
$PY -c 'import jax; print("jax", jax.__version__, jax.devices())'

echo "=== this tree against $BEFORE: ${MODES:-fwd+bwd fwd}, auto at precision default ==="
t0=$(date +%s)
SHAPE_ARGS=""
for s in ${SHAPES:-}; do SHAPE_ARGS="$SHAPE_ARGS --shape $s"; done
# shellcheck disable=SC2086  # MODES and SHAPE_ARGS are word lists
timeout "${COMPARE_TIMEOUT:-300}" $PY benchmarks/gdn_kernel_compare.py --before-root "$BEFORE" \
  --mode ${MODES:-fwd+bwd fwd} $SHAPE_ARGS --out "$OUT" 2>&1 | tee "$OUT/compare.log" \
  | grep -E "^\||^implementation|^before|^after|Error" | tail -22
echo "compare: exit ${PIPESTATUS[0]}, $(( $(date +%s) - t0 )) s"

echo "=== registers and spills of each Mosaic kernel (ptxas) ==="
t0=$(date +%s)
# the two kernel configurations of the benchmark shapes: V = 128 (early loads) and V = 192
timeout "${PTXAS_TIMEOUT:-120}" $PY benchmarks/gdn_kernel_ptxas.py --out "$OUT" \
  --shape B=4,T=4096,H=16,K=128,V=128 --shape B=1,T=8192,H=30,K=96,V=192 2>&1 | tail -14
echo "ptxas: exit ${PIPESTATUS[0]}, $(( $(date +%s) - t0 )) s"

echo "=== GPU tests (compiled kernels) ==="
t0=$(date +%s)
timeout "${TEST_TIMEOUT:-320}" $PY -m pytest -p no:xdist -p no:cacheprovider -q -m gpu -rA \
  --durations=0 tests/kernels 2>&1 | tee "$OUT/pytest_gpu.log" \
  | grep -E "passed|failed|PASSED|FAILED|ERROR|errors:|s call" | tail -40
echo "tests: exit ${PIPESTATUS[0]}, $(( $(date +%s) - t0 )) s"
