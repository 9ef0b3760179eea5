#!/usr/bin/env bash
# One family of the long-context comparison on one GPU (experiments/configs/long_context_100m.yaml):
# build the two byte-level stores, train, then run the long-context suite from 1k to 32k. One
# family per call (a 10-minute call holds one ~100M run of this size):
#
#   FAMILY=transformer OUT=$OUT bash experiments/scripts/long_context_gpu.sh
#   FAMILY=hybrid OUT=$OUT bash experiments/scripts/long_context_gpu.sh
#   FAMILY=hybrid-rope OUT=$OUT bash ...   # the ladder's hybrid: RoPE in its attention layers
#
# Training stops at TRAIN_BUDGET seconds if it has not finished (SIGTERM: the loop saves a
# checkpoint and exits 75), and the suite then scores that checkpoint; the log says which step.
# Needs no network. Writes OUT/FAMILY/{train.log,metrics.jsonl,lc.json,lc.txt}. The suite also
# scores the answers teacher-forced (the model's knowledge, apart from decoding).
# SMOKE="..." adds overrides (a CPU smoke run: CONFIG=a tiny config, few tokens).
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python3}
FAMILY=${FAMILY:?set FAMILY=transformer, hybrid or hybrid-rope}
# The ladder's transformer_100m and hybrid_100m differ only in model.family.
case $FAMILY in
  transformer) model=() ;;
  hybrid) model=(model.family=hybrid 'model.rope_layers=""') ;;
  hybrid-rope) model=(model.family=hybrid) ;;
  *) echo "FAMILY must be transformer, hybrid or hybrid-rope, got $FAMILY" >&2; exit 2 ;;
esac
OUT=${OUT:-/tmp/out}/$FAMILY
WORK=${WORK:-/tmp/long_context}
LENGTHS=${LENGTHS:-1k,2k,4k,8k,16k,32k}
SAMPLES=${SAMPLES:-16}
TASK_DOCS=${TASK_DOCS:-24000}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu.txt"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$OUT/timeline.txt"; }

# The two stores, side by side: Python source, and the suite's tasks as training documents.
if [ ! -f "$WORK/code-byte/manifest.json" ]; then
  $PY -m hybrid_jax.cli data build --source pycode --distributions ${DISTRIBUTIONS:-all-permissive} \
    --tokenizer byte --out "$WORK/code-byte" > "$OUT/build_code.log" 2>&1 &
fi
if [ ! -f "$WORK/tasks-byte/manifest.json" ]; then
  ( $PY -m hybrid_jax.cli eval long-context-data --out "$WORK/tasks.jsonl" --docs "$TASK_DOCS" \
      --chars 128-2048 --seed 0 \
    && $PY -m hybrid_jax.cli data build --source jsonl --input "$WORK/tasks.jsonl" \
      --tokenizer byte --out "$WORK/tasks-byte" ) > "$OUT/build_tasks.log" 2>&1 &
fi
wait
tail -n 1 "$OUT"/build_*.log 2>/dev/null
stamp "stores built"

run="$WORK/runs/$FAMILY"
# ("${model[@]}" is empty for the transformer: the config's own preset.)
timeout -s TERM "${TRAIN_BUDGET:-330}" $PY -m hybrid_jax.cli train \
  --config "${CONFIG:-experiments/configs/long_context_100m.yaml}" --quiet "${model[@]}" \
  "data.stores={code: $WORK/code-byte, tasks: $WORK/tasks-byte}" \
  train.run_dir="$run" ${SMOKE:-} > "$OUT/train.log" 2>&1
echo "train rc=$?" | tee -a "$OUT/train.log"
tail -n 4 "$OUT/train.log"
cp "$run/metrics.jsonl" "$OUT/" 2>/dev/null
stamp "trained"

timeout "${EVAL_BUDGET:-200}" $PY -m hybrid_jax.cli eval long-context "$run" \
  --lengths "$LENGTHS" --samples "$SAMPLES" --batch-size "$SAMPLES" --teacher-forced \
  --out "$OUT/lc.json" \
  2>&1 | tee "$OUT/lc.txt" | tail -n 24
stamp "suite done"
