#!/usr/bin/env bash
# The gated delta rule's precision on one GPU: the 100M-class hybrid of
# experiments/configs/hybrid_100m_precision.yaml (2,000 steps) at gdn_precision "highest" and
# "default", two seeds each, the four runs side by side on the one GPU (each its own process
# with a quarter of the memory; their step times say nothing, their losses are the point). Then
# experiments/scripts/compare_runs.py tabulates them. All four side by side on an H200: the
# "default" runs finish 2,000 steps in about 6 min (0.16 s a step), the "highest" ones need
# about 10 (0.28 s), more than one 10-minute call; so run each precision in its own call:
#
#   PRECISIONS=highest OUT=/tmp/out bash experiments/scripts/gdn_precision_gpu.sh
#   PRECISIONS=default OUT=/tmp/out bash experiments/scripts/gdn_precision_gpu.sh
#
# Needs no network: the byte-level pycode store is built from the installed Python packages.
# Writes OUT/precision.md, OUT/precision.json and each run's log; run directories stay in WORK.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python3}
OUT=${OUT:-/tmp/out}
WORK=${WORK:-/tmp/gdn_precision}
STEPS_OVERRIDE=${STEPS_OVERRIDE:-}   # e.g. "train.tokens=163840" for a smoke run
mkdir -p "$OUT" "$WORK"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
command -v nvidia-smi > /dev/null && nvidia-smi -L
$PY -m hybrid_jax.cli data build --source pycode --tokenizer byte --out "$WORK/pycode-byte" \
  2>&1 | tail -1
dirs=()
for precision in ${PRECISIONS:-highest default}; do
  for seed in ${SEEDS:-0 1}; do
    name="$precision-s$seed"
    dirs+=("$WORK/runs/$name")
    XLA_PYTHON_CLIENT_MEM_FRACTION=${MEM_FRACTION:-0.22} timeout "${RUN_TIMEOUT:-540}" \
      $PY -m hybrid_jax.cli train --config experiments/configs/hybrid_100m_precision.yaml \
      --quiet data.store="$WORK/pycode-byte" model.gdn_precision=$precision train.seed=$seed \
      data.seed=$seed train.run_dir="$WORK/runs/$name" $STEPS_OVERRIDE \
      > "$OUT/train_$name.log" 2>&1 &
  done
done
t0=$(date +%s)
wait
echo "${#dirs[@]} runs: $(( $(date +%s) - t0 )) s"
tail -n 2 "$OUT"/train_*.log
$PY experiments/scripts/compare_runs.py "${dirs[@]}" --json "$OUT/precision.json" \
  | tee "$OUT/precision.md"
# the runs' records (not their checkpoints), for compare_runs.py elsewhere
tar -C "$WORK" -czf "$OUT/runs.tgz" --exclude=checkpoints runs
