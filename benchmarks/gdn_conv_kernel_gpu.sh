#!/usr/bin/env bash
# One GPU call (about 8 minutes on an H100) that checks the causal conv's kernels: each against
# XLA at the 370M dims with a launch sweep (benchmarks/gdn_conv_kernel.py), the 370M pair's
# training step with this tree (transformer and hybrid in one process, for the ratio), the
# hybrid's with an earlier tree (BEFORE, a whole exported tree), and the compiled tests.
#
#   d=build/tree_before; rm -rf $d; mkdir -p $d                     # where git is; build/ is
#   git archive <rev> hybrid_jax kernels benchmarks | tar -x -C $d    # git-ignored: carry it
#   OUT=/tmp/out bash benchmarks/gdn_conv_kernel_gpu.sh             # on the GPU machine
#
# Writes under $OUT (default /tmp/conv_check): conv/gdn_conv_kernel.json and conv.log, pair.json
# and hybrid_before.json (train_throughput.py), and their logs. Runs in order of importance,
# each with a time limit in seconds (SWEEP_TIMEOUT=150, PAIR_TIMEOUT=280, STEP_TIMEOUT=170,
# TEST_TIMEOUT=60), so a short call loses the tail only.
set -u
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${OUT:-/tmp/conv_check}")
BEFORE=${BEFORE:-build/tree_before}
PY=${PYTHON:-python3}  # made absolute, links kept: the earlier tree runs from its own folder
[[ $PY == */* ]] && PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
t0=$(date +%s)
say() { echo "=== $1 ($(( $(date +%s) - t0 )) s)"; }

say "the conv's kernels against XLA, with the launch sweep"
timeout "${SWEEP_TIMEOUT:-150}" $PY benchmarks/gdn_conv_kernel.py --sweep --iters 10 \
  --out "$OUT/conv" > "$OUT/conv.log" 2>&1
grep -E "^\||Error" "$OUT/conv.log" | tail -50

TT="benchmarks/train_throughput.py --sizes 370m --steps 8 --warmup 2 \
  --gdn-implementation pallas_gpu --gdn-precision default"
step() {  # step NAME DIR FAMILIES LIMIT: one 370M run in DIR
  say "370M $3 ($1)"
  (cd "$2" && timeout "$4" $PY $TT --families "$3" --out "$OUT/$1.json") > "$OUT/$1.log" 2>&1
  grep -E "_370m  |Error" "$OUT/$1.log" | head -3
}
step pair . transformer,hybrid "${PAIR_TIMEOUT:-280}"
if [ -d "$BEFORE/hybrid_jax" ]; then step hybrid_before "$BEFORE" hybrid "${STEP_TIMEOUT:-170}"
else echo "no tree at $BEFORE: the earlier hybrid step is not timed"; fi

say "compiled tests"
timeout "${TEST_TIMEOUT:-60}" $PY -m pytest -q -p no:cacheprovider -m gpu \
  tests/kernels/causal_conv 2>&1 | tail -3
say "done"
