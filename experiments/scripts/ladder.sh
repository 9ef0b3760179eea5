#!/usr/bin/env bash
# One command for a whole ladder on one machine: corpus, lr check, ladder, fits. Resumable:
# every step skips what is already done, so rerunning after a kill (or on a fresh machine with
# the sweep roots copied back) trains nothing twice.
#
#   make ladder-gpu                       # = this script with the defaults below
#   PY=python3 PARALLEL=4 bash experiments/scripts/ladder.sh    # a machine without our venv
#
# Steps:
#   1. SentencePiece tokenizer and token store from every permissively licensed Python
#      distribution installed here (`--distributions all-permissive`; the list and versions
#      are in the store's manifest, so record which image built it).
#   2. `sweep lr-check`: the smallest size of every family at lr x {0.5, 1, 2}, one decay at
#      D/N = 5; writes the ladder with each family's best multiplier applied.
#   3. `sweep run` of that tuned ladder.
#   4. `fit`: laws, CIs, figures and REPORT.md in $FIT_OUT, with the result rows, the lr check
#      and the corpus record (store manifest, tokenizer settings) beside them.
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=${PY:-.venv/bin/python}
LADDER=${LADDER:-gpu-small}
CHECK_SIZE=${CHECK_SIZE:-d224}
SWEEPS=${SWEEPS:-sweeps}
TOKENIZER=${TOKENIZER:-data_cache/pycode-big-8k.model}
STORE=${STORE:-data_cache/pycode-big-sp8k}
VAL_FRACTION=${VAL_FRACTION:-0.05}
PARALLEL=${PARALLEL:-4}
FIT_OUT=${FIT_OUT:-results/$LADDER}
THREADS=${THREADS:-$(nproc)}
HJ=("$PY" -m hybrid_jax.cli)
stamp() { echo "[ladder.sh $(date -u +%H:%M:%S)] $*"; }

if [[ "$TOKENIZER" != byte && ! -f "$TOKENIZER" ]]; then
  stamp "training tokenizer $TOKENIZER"
  "${HJ[@]}" data tokenizer --source pycode --distributions all-permissive --vocab-size 8192 \
      --val-fraction "$VAL_FRACTION" --threads "$THREADS" --out "$TOKENIZER"
fi
if [[ ! -f "$STORE/manifest.json" ]]; then
  stamp "building store $STORE"
  "${HJ[@]}" data build --source pycode --distributions all-permissive --tokenizer "$TOKENIZER" \
      --val-fraction "$VAL_FRACTION" --threads "$THREADS" --out "$STORE"
fi
"${HJ[@]}" data info "$STORE"
stamp "plan"
"${HJ[@]}" sweep plan "$LADDER" --parallel "$PARALLEL"
stamp "lr check"
TUNED="$SWEEPS/$LADDER-lr/$LADDER.yaml"
"${HJ[@]}" sweep lr-check "$LADDER" --size "$CHECK_SIZE" --multipliers 0.5 1 2 --ratio 5 \
    --root "$SWEEPS/$LADDER-lr" --parallel "$PARALLEL" --write-ladder "$TUNED"
stamp "ladder"
"${HJ[@]}" sweep run "$TUNED" --root "$SWEEPS/$LADDER" --parallel "$PARALLEL"
stamp "fit"
"${HJ[@]}" fit "$SWEEPS/$LADDER/results.jsonl" --val-set mean --out "$FIT_OUT"
cp "$SWEEPS/$LADDER/results.jsonl" "$FIT_OUT/results.jsonl"
cp "$SWEEPS/$LADDER-lr/lr_check.md" "$SWEEPS/$LADDER-lr/lr_check.json" "$TUNED" "$FIT_OUT/"
# The corpus record: which distributions (with versions and licenses) and which tokenizer.
cp "$STORE/manifest.json" "$FIT_OUT/store_manifest.json"
[[ "$TOKENIZER" == byte ]] || cp "$TOKENIZER.json" "$FIT_OUT/tokenizer.json"
stamp "done: $FIT_OUT"
