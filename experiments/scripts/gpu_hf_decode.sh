#!/usr/bin/env bash
# One GPU call: Hugging Face live parity (both directions, fp32 and bf16, Pallas rows), then
# cached decoding of the 370M transformer and hybrid against context length (time per token
# and cache bytes). Results under $OUT (default /tmp/gpu-out).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
PYTHONPATH=. python tests/hf/live_parity.py --json "$OUT/parity.json" 2>&1 | tail -40 \
  | tee "$OUT/parity.txt"
echo "parity rc=${PIPESTATUS[0]}" | tee -a "$OUT/parity.txt"
PYTHONPATH=. python benchmarks/decode.py --size 370m --families transformer,hybrid --batch 8 \
  --prompt "${PROMPTS:-1024,4096,16384}" --new 64 --out "$OUT/decode.json" 2>&1 | tail -12 \
  | tee "$OUT/decode.txt"
