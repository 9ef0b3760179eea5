#!/usr/bin/env bash
# GPU work for one 2-GPU lease (nvidia-h100-x2 / h200-x2, 30 device-minutes) driven by short
# calls. Each phase fits one 10-minute call; make the next call within 30 s, or the machine is
# gone. The runs are in experiments/LOG.md. (A change of the gated delta rule kernels against
# the commit before it: benchmarks/gdn_kernel_check_gpu.sh, one H200.)
#
#   bash experiments/scripts/gpu_open_work.sh sweep     # ~3 min: launch parameters of each
#                                                       # Triton kernel alone (warps, stages,
#                                                       # V tile)
#   bash experiments/scripts/gpu_open_work.sh check     # ~8 min: GPU 1 every GPU test; GPU 0
#                                                       # the 370M step, Pallas against XLA
#   bash experiments/scripts/gpu_open_work.sh trace     # ~3 min: every kernel and XLA op of
#                                                       # one call, each shape, from JAX's
#                                                       # profiler (gdn_kernel_trace.py)
#   bash experiments/scripts/gpu_open_work.sh final     # ~6.5 min: every shape (two a GPU),
#                                                       # the default against fla and XLA
#   bash experiments/scripts/gpu_open_work.sh train     # ~5 min: the hybrid's 370M training
#                                                       # step, Pallas kernel against XLA, at
#                                                       # "default" (GPU 0) and "highest" (GPU 1)
#   bash experiments/scripts/gpu_open_work.sh profile   # ~4 min: GPU 1 Nsight Compute on each
#                                                       # default kernel, prep bwd sweep, tests;
#                                                       # GPU 0 the headline, kernels alone
#   bash experiments/scripts/gpu_open_work.sh match     # ~5 min: two_gpu.py's loss match
#   bash experiments/scripts/gpu_open_work.sh scaling1  # ~6 min: one-GPU throughput + profile
#   bash experiments/scripts/gpu_open_work.sh scaling2  # ~7 min: data=2 and fsdp=2, efficiency
#
# Results live in $WORK, outside the repository: each call copies the working tree to the
# device and deletes untracked files there that git does not ignore (finished expressivity
# cells and a match.json were lost that way once). Each phase tars its results
# into $OUT (at most 8 files come back, 16 MiB each); the run directories and profile traces
# stay in $WORK. scaling2 reads scaling1's one-GPU rows from $WORK, so both must run on the
# same warm machine.
#
# Env: PY (python3), OUT (/tmp/out), WORK (/root/gpu_work). fla gets gdn_kernel.py's
# --fla-timeout (240 s) per shape.
# Carry benchmarks/wheels (fla 0.6; see gdn_kernel_gpu.sh's header) for the fla rows.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python3}
OUT=${OUT:-/tmp/out}
WORK=${WORK:-/root/gpu_work}
mkdir -p "$OUT" "$WORK"
command -v nvidia-smi > /dev/null && nvidia-smi -L

two_gpu() {  # two_gpu LOGNAME ARGS...: benchmarks/two_gpu.py under a 560 s limit
  local log=$1; shift
  timeout 560 $PY benchmarks/two_gpu.py --out "$WORK/two_gpu" "$@" 2>&1 | tee "$OUT/$log" \
    | tail -40
  tar czf "$OUT/two_gpu.tgz" -C "$WORK" $(cd "$WORK" && ls two_gpu/*.json two_gpu/*.log)
}

train_rows() {  # train_rows PRECISION: the hybrid at 370M, the Pallas kernel then XLA's
  tt() {
    local name=$1; shift
    $PY benchmarks/train_throughput.py --sizes 370m --steps 15 --out "$WORK/train_$name.json" \
      "$@" 2>&1 | tail -4
  }
  tt "pallas_$1" --families hybrid --gdn-implementation pallas_gpu --gdn-precision "$1"
  tt "chunked_$1" --families hybrid --gdn-implementation chunked --gdn-precision "$1"
}
export PY WORK
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}  # benchmarks/*.py import hybrid_jax from the tree
export PYTHON=$PY  # what gdn_kernel_gpu.sh runs

case "${1:-}" in
  check)
    # GPU 1 every compiled kernel test; GPU 0 the hybrid's 370M training step, the Pallas
    # kernel (its defaults) against XLA's chunked path, at "default".
    CUDA_VISIBLE_DEVICES=1 OUT="$WORK/check1" MODE=tests TEST_TIMEOUT=500 \
      bash benchmarks/gdn_kernel_gpu.sh > "$WORK/check1.out" 2>&1 &
    CUDA_VISIBLE_DEVICES=0 timeout 500 bash -c "$(declare -f train_rows); train_rows default"
    wait
    tail -8 "$WORK/check1.out"
    tar czf "$OUT/check.tgz" -C "$WORK" check1 check1.out \
      $(cd "$WORK" && ls train_*_default.json) ;;
  trace)
    # Where a call's time goes, glue included: GPU 0 the headline and B8, GPU 1 the 7B layer
    # and B1 T8192 H32 (the default), fwd and fwd+bwd.
    tr() {  # tr NAME ARGS...
      local name=$1; shift
      timeout 250 $PY benchmarks/gdn_kernel_trace.py --mode fwd fwd+bwd --out "$WORK/$name" \
        "$@" > "$WORK/$name.out" 2>&1; echo "trace $name: exit $?"
    }
    CUDA_VISIBLE_DEVICES=1 bash -c "$(declare -f tr); tr trace1 --shape B=1,T=8192,H=30,K=96,V=192 \
      --shape B=1,T=8192,H=32,K=128,V=128 --impl pallas_gpu_default" &
    CUDA_VISIBLE_DEVICES=0 tr trace0 --shape B=4,T=4096,H=16,K=128,V=128 \
      --shape B=8,T=2048,H=8,K=128,V=128 --impl pallas_gpu_default
    wait
    head -70 "$WORK/trace0.out"
    tar czf "$OUT/trace.tgz" -C "$WORK" trace0.out trace1.out trace0/gdn_trace.json \
      trace1/gdn_trace.json ;;
  final)
    # The goal's table: the default against fla and XLA, every shape, two a GPU so that fla's
    # cold autotune (~110 s a shape) fits: GPU 1 the headline and B8 (with XLA), GPU 0 B1
    # T8192 H32 and the 7B layer. (~6.5 min.)
    CUDA_VISIBLE_DEVICES=1 OUT="$WORK/final1" MODE=bench BENCH_BUDGET=330 BENCH_TIMEOUT=370 \
      BENCH_ARGS="--no-breakdown --shape B=4,T=4096,H=16,K=128,V=128
      --shape B=8,T=2048,H=8,K=128,V=128 --impl fla xla_chunked_default pallas_gpu_default" \
      bash benchmarks/gdn_kernel_gpu.sh > "$WORK/final1.out" 2>&1 &
    CUDA_VISIBLE_DEVICES=0 OUT="$WORK/final0" MODE=bench BENCH_BUDGET=330 BENCH_TIMEOUT=370 \
      BENCH_ARGS="--no-breakdown --shape B=1,T=8192,H=32,K=128,V=128
      --shape B=1,T=8192,H=30,K=96,V=192 --impl fla pallas_gpu_default" \
      bash benchmarks/gdn_kernel_gpu.sh > "$WORK/final0.out" 2>&1
    wait
    grep -E "^B|^  |exit" "$WORK/final0.out" "$WORK/final1.out" | sort -u | tail -40
    tar czf "$OUT/final.tgz" -C "$WORK" final0 final1 final0.out final1.out ;;
  train)
    # The hybrid's 370M training step with the Pallas kernel (its defaults) against XLA's
    # chunked path at the same precision, each pair on one GPU: "default" on GPU 0, "highest"
    # on GPU 1. (~2 min a row.)
    CUDA_VISIBLE_DEVICES=1 timeout 560 bash -c "$(declare -f train_rows); train_rows highest" \
      > "$WORK/train1.out" 2>&1 &
    CUDA_VISIBLE_DEVICES=0 timeout 560 bash -c "$(declare -f train_rows); train_rows default"
    wait
    cat "$WORK/train1.out"
    tar czf "$OUT/train.tgz" -C "$WORK" $(cd "$WORK" && ls train_*.json train1.out) ;;
  sweep)
    # Launch parameters of each Triton kernel alone: the state pass's (warps x stages x V tile)
    # at three shapes, each prep kernel (the forward saving T, the backward's three) by warps x
    # stages at the headline shape. Nothing end to end.
    state=()
    for bv in 32 64; do for nw in 4 8; do for ns in 1 2 3; do
      state+=("num_warps=$nw,num_warps_bwd=$nw,num_stages=$ns,block_v=$bv"); done; done; done
    state+=("num_warps=2,num_warps_bwd=2,num_stages=1,block_v=32"
            "num_warps=2,num_warps_bwd=2,num_stages=2,block_v=32")
    prep=()
    for nw in 2 4 8; do for ns in 1 2; do prep+=("num_warps_prep=$nw,num_stages=$ns"); done; done
    sweep() {  # sweep NAME SHAPE ONLY... -- LAUNCH...
      local name=$1 shape=$2; shift 2
      local only=(); while [[ $1 != -- ]]; do only+=("$1"); shift; done; shift
      timeout 260 $PY benchmarks/gdn_kernel.py --budget-s 235 --shape "$shape" --impl \
        --breakdown-precisions default --breakdown-only "${only[@]}" --breakdown-launch "$@" \
        --out "$WORK/sweep_$name.json" > "$WORK/sweep_$name.log" 2>&1
      grep -E "^  (state|prep)" "$WORK/sweep_$name.log" | tail -60
    }
    cells=("state fwd+save$" "state dh$" "state dqk$")
    ( export CUDA_VISIBLE_DEVICES=1
      sweep prep B=4,T=4096,H=16,K=128,V=128 "prep fwd save$" "prep bwd inverse" \
        "prep bwd decay" "prep bwd qk" -- "${prep[@]}"
      sweep 7b B=1,T=8192,H=30,K=96,V=192 "${cells[@]}" -- "${state[@]}"
    ) > "$WORK/sweep1.out" 2>&1 &
    export CUDA_VISIBLE_DEVICES=0
    sweep head B=4,T=4096,H=16,K=128,V=128 "${cells[@]}" -- "${state[@]}"
    sweep h32 B=1,T=8192,H=32,K=128,V=128 "${cells[@]}" -- "${state[@]}"
    wait
    cat "$WORK/sweep1.out"
    tar czf "$OUT/sweep.tgz" -C "$WORK" $(cd "$WORK" && ls sweep_*) ;;
  profile)
    # GPU 1: Nsight Compute on each Pallas kernel of the default path alone (breakdown cells,
    # one timed launch each; no preallocation, so ncu's replays save and restore only what the
    # program allocated), the prep backward's kernels by warps x stages, then the compiled
    # kernel tests. GPU 0: the headline shape (fla, the default) with every prep and state
    # kernel alone.
    NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    head_shape=B=4,T=4096,H=16,K=128,V=128
    cells=("prep fwd save mosaic" "prep bwd inverse" "prep bwd decay" "prep bwd qk"
           "state fwd+save mosaic" "state dh mosaic" "state dqk mosaic")
    ( export CUDA_VISIBLE_DEVICES=1
      mkdir -p "$WORK/ncu"
      XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 200 "$NCU" --clock-control none \
        --kernel-name regex:'gdr|kernel' --launch-count 40 --section SpeedOfLight \
        --section Occupancy --section LaunchStats --section WarpStateStats \
        --section SchedulerStats --section MemoryWorkloadAnalysis \
        --section ComputeWorkloadAnalysis -f -o "$WORK/ncu/kernels" \
        $PY benchmarks/gdn_kernel.py --shape $head_shape --impl --breakdown-precisions default \
        --breakdown-only "${cells[@]}" --warmup 0 --iters 1 --inner 1 \
        --out "$WORK/ncu/breakdown.json" > "$WORK/ncu/run.log" 2>&1
      echo "ncu exit $?"; tail -5 "$WORK/ncu/run.log"
      "$NCU" --import "$WORK/ncu/kernels.ncu-rep" --page details > "$WORK/ncu/details.txt"
      "$NCU" --import "$WORK/ncu/kernels.ncu-rep" --page details --csv > "$WORK/ncu/details.csv"
      keys="Duration|Registers Per|Achieved Occupancy|Theoretical Occ|Memory Thr|Block Limit"
      grep -E "^  [a-z_]|$keys|Compute \(SM\)|Stall" "$WORK/ncu/details.txt" | head -150
      prep=(); for nw in 4 8; do for ns in 1 2 3; do prep+=("num_warps_prep=$nw,num_stages=$ns")
      done; done
      timeout 120 $PY benchmarks/gdn_kernel.py --budget-s 100 --shape $head_shape --impl \
        --breakdown-precisions default --breakdown-only "prep bwd inverse" "prep bwd decay" \
        "prep bwd qk" --breakdown-launch "${prep[@]}" --out "$WORK/sweep_prepbwd.json" \
        > "$WORK/sweep_prepbwd.log" 2>&1
      grep -E "^  prep" "$WORK/sweep_prepbwd.log"
      OUT="$WORK/profile_tests" MODE=tests TEST_TIMEOUT=200 bash benchmarks/gdn_kernel_gpu.sh \
        | tail -8
    ) > "$WORK/profile1.out" 2>&1 &
    export CUDA_VISIBLE_DEVICES=0
    OUT="$WORK/profile_bench" MODE=bench BENCH_BUDGET=380 BENCH_TIMEOUT=450 \
      BENCH_ARGS="--shape $head_shape --breakdown-precisions default --breakdown-only prep state
      --impl fla pallas_gpu_default" bash benchmarks/gdn_kernel_gpu.sh \
      2>&1 | tail -40
    wait
    cat "$WORK/profile1.out"
    tar czf "$OUT/profile.tgz" -C "$WORK" profile_tests profile_bench ncu sweep_prepbwd.json \
      sweep_prepbwd.log profile1.out ;;
  match)
    [[ -f data_cache/pycode-byte/manifest.json ]] || \
      $PY -m hybrid_jax.cli data build --source pycode --tokenizer byte --out data_cache/pycode-byte
    two_gpu match.log --skip scaling ;;
  scaling1) two_gpu scaling1.log --skip match --scaling-runs 1gpu --families transformer,hybrid ;;
  scaling2) two_gpu scaling2.log --skip match --scaling-runs data2 fsdp2 ;;
  *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
ls -la "$OUT"
