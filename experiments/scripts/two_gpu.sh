#!/usr/bin/env bash
# benchmarks/two_gpu.py on a 2-GPU host lent in short calls (each phase fits one 10-minute
# call; make the next call while the machine is still held).
#
#   bash experiments/scripts/two_gpu.sh match      # ~5 min: one GPU, data=2 and fsdp=2 give
#                                                  # the same losses
#   bash experiments/scripts/two_gpu.sh scaling1   # ~6 min: one-GPU throughput + profile
#   bash experiments/scripts/two_gpu.sh scaling2   # ~7 min: data=2 and fsdp=2, efficiency
#
# Results live in WORK, outside the repository, because each call copies the working tree to
# the device and deletes untracked files there; scaling2 reads scaling1's one-GPU rows from
# WORK, so both must run on the same warm machine. Each phase tars its JSON and logs into OUT.
# Env: PY (python3), OUT (/tmp/out), WORK (/root/gpu_work).
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python3}
OUT=${OUT:-/tmp/out}
WORK=${WORK:-/root/gpu_work}
mkdir -p "$OUT" "$WORK"
command -v nvidia-smi > /dev/null && nvidia-smi -L
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}  # benchmarks/*.py import hybrid_jax from the tree

two_gpu() {  # two_gpu LOGNAME ARGS...: benchmarks/two_gpu.py under a 560 s limit
  local log=$1; shift
  timeout 560 $PY benchmarks/two_gpu.py --out "$WORK/two_gpu" "$@" 2>&1 | tee "$OUT/$log" \
    | tail -40
  tar czf "$OUT/two_gpu.tgz" -C "$WORK" $(cd "$WORK" && ls two_gpu/*.json two_gpu/*.log)
}

case "${1:-}" in
  match)
    [[ -f data_cache/pycode-byte/manifest.json ]] || \
      $PY -m hybrid_jax.cli data build --source pycode --tokenizer byte --out data_cache/pycode-byte
    two_gpu match.log --skip scaling ;;
  scaling1) two_gpu scaling1.log --skip match --scaling-runs 1gpu --families transformer,hybrid ;;
  scaling2) two_gpu scaling2.log --skip match --scaling-runs data2 fsdp2 ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
ls -la "$OUT"
