#!/usr/bin/env bash
# One GPU call (about 9 minutes on an H100) that checks this tree's kernels against an earlier
# commit's, in three parts:
#   compare  this tree's gated delta rule against the other's, forward+backward and the forward
#            alone at precision "default" through the API's "auto", on the four benchmark
#            shapes, timed interleaved in one process (benchmarks/gdn_kernel_compare.py: table
#            and JSON, with the largest difference of o and of every gradient);
#   ptxas    each Mosaic kernel's registers and spills (benchmarks/gdn_kernel_ptxas.py);
#   tests    the compiled GPU kernel tests (`-m gpu` over tests/kernels/).
#
#   bash benchmarks/export_kernels.sh 5a705db build/gdr_before   # where git is; build/ is
#                                                                # git-ignored: carry it
#   OUT=/tmp/out bash benchmarks/gdn_kernel_check_gpu.sh           # on the GPU machine
#
# The ladder models' heads (K 48, V 96), tests first, since a full run does not fit one call:
#   PARTS="tests compare ptxas" TEST_ARGS='-k "K48 or whole or v96"' QK_L2NORM=1 \
#   SHAPES="B=8,T=2048,H=22,K=48,V=96 B=16,T=2048,H=16,K=48,V=96" OUT=/tmp/out \
#   bash benchmarks/gdn_kernel_check_gpu.sh
#
# Needs no network, torch or fla. Writes under $OUT (default /tmp/gdn_check): gdn_compare.md,
# gdn_compare.json, compare.log, gdn_ptxas.md/.json, ptxas.log, pytest_gpu.log.
# PARTS: which parts, in order (default "compare ptxas tests").
# Time limits in seconds: COMPARE_TIMEOUT=300 (compiles of 4 shapes x 2 modes x 2 trees
# dominate), PTXAS_TIMEOUT=120, TEST_TIMEOUT=320 (the 33 compiled tests ran past 250 s on an
# H100, 18-25 of them done by then: in a 600 s call run MODES=fwd+bwd, filter the tests with
# TEST_ARGS, or give them a call of their own).
# BEFORE: the exported tree (default build/gdr_before). MODES: the compared modes (default
# "fwd+bwd fwd"). SHAPES: the compared shapes instead of the four benchmark shapes (space-
# separated), and the ptxas part's too. QK_L2NORM=1: compare with use_qk_l2norm, as the
# models call it. TEST_ARGS: extra pytest arguments for the tests part.
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
SHAPE_ARGS=""
for s in ${SHAPES:-}; do SHAPE_ARGS="$SHAPE_ARGS --shape $s"; done

compare() {
  echo "=== this tree against $BEFORE: ${MODES:-fwd+bwd fwd}, auto at precision default ==="
  local t0
  t0=$(date +%s)
  # shellcheck disable=SC2086  # MODES and SHAPE_ARGS are word lists
  timeout "${COMPARE_TIMEOUT:-300}" $PY benchmarks/gdn_kernel_compare.py --before-root "$BEFORE" \
    --mode ${MODES:-fwd+bwd fwd} $SHAPE_ARGS ${QK_L2NORM:+--qk-l2norm} --out "$OUT" 2>&1 \
    | tee "$OUT/compare.log" | grep -E "^\||^implementation|^before|^after|Error" | tail -22
  echo "compare: exit ${PIPESTATUS[0]}, $(( $(date +%s) - t0 )) s"
}

ptxas() {
  echo "=== registers and spills of each Mosaic kernel (ptxas) ==="
  local t0
  t0=$(date +%s)
  # by default the two kernel configurations of the benchmark shapes: V = 128 (early loads)
  # and V = 192
  # shellcheck disable=SC2086  # SHAPE_ARGS is a word list
  timeout "${PTXAS_TIMEOUT:-120}" $PY benchmarks/gdn_kernel_ptxas.py --out "$OUT" \
    ${SHAPE_ARGS:---shape B=4,T=4096,H=16,K=128,V=128 --shape B=1,T=8192,H=30,K=96,V=192} \
    2>&1 | tail -14
  echo "ptxas: exit ${PIPESTATUS[0]}, $(( $(date +%s) - t0 )) s"
}

tests() {
  echo "=== GPU tests (compiled kernels) ==="
  local t0
  t0=$(date +%s)
  # TEST_ARGS may hold a quoted -k expression: eval keeps its quotes
  eval "timeout ${TEST_TIMEOUT:-320} $PY -m pytest -p no:xdist -p no:cacheprovider -q -m gpu \
    -rA --durations=0 ${TEST_ARGS:-} tests/kernels" 2>&1 | tee "$OUT/pytest_gpu.log" \
    | grep -E "passed|failed|PASSED|FAILED|ERROR|errors:|s call" | tail -40
  echo "tests: exit ${PIPESTATUS[0]}, $(( $(date +%s) - t0 )) s"
}

for part in ${PARTS:-compare ptxas tests}; do
  case "$part" in
    compare|ptxas|tests) "$part" ;;
    *) echo "PARTS: unknown part '$part' (compare, ptxas, tests)" >&2; exit 2 ;;
  esac
done
