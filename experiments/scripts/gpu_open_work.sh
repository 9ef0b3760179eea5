#!/usr/bin/env bash
# The GPU work of issues 3 and 6, for one 2-GPU lease (nvidia-h100-x2 / h200-x2, 30
# device-minutes) driven by short calls. Each phase fits one 10-minute call; make the next call
# within 30 s, or the machine is gone. Earlier sessions' runs are in experiments/LOG.md.
#
#   bash experiments/scripts/gpu_open_work.sh sweep     # ~3 min: launch parameters of each
#                                                       # kernel alone (warps, stages, V tile)
#   bash experiments/scripts/gpu_open_work.sh kernel    # ~9 min: GPU 0 the kernel gpu tests,
#                                                       # the kernels alone, the headline
#                                                       # shape; GPU 1 the 7B layer, B1
#                                                       # T8192 H32 and B8 T2048 H8
#   bash experiments/scripts/gpu_open_work.sh adopt     # ~9 min: every shape (two a GPU),
#                                                       # the default against the one before
#                                                       # and fla; GPU 0 then the API's GPU
#                                                       # tests
#   bash experiments/scripts/gpu_open_work.sh check     # ~8 min: GPU 1 every GPU test; GPU 0
#                                                       # the 370M step, Pallas against XLA
#   bash experiments/scripts/gpu_open_work.sh trace     # ~3 min: every kernel and XLA op of
#                                                       # one call, each shape, from JAX's
#                                                       # profiler (gdn_kernel_trace.py)
#   bash experiments/scripts/gpu_open_work.sh layout    # ~9 min: caller_layout and
#                                                       # mosaic_dqk against the default,
#                                                       # every shape, fla at two; GPU 0 the
#                                                       # GPU tests, then traces
#   bash experiments/scripts/gpu_open_work.sh confirm   # ~9 min: GPU 1 the 7B layer with its
#                                                       # kernels alone, the headline again;
#                                                       # GPU 0 the tests, the 370M step
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
# device and deletes untracked files there that git does not ignore, which took 11 finished
# expressivity cells and a match.json from the fourth session. Each phase tars its results
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
  kernel)
    # Two benchmark processes, one per GPU, so that every shape gets timed in one call. GPU 0:
    # the compiled kernel tests (~200 s; the first compiles of the Mosaic sequential backward
    # kernel, state_pass="mosaic_dh", of the Mosaic prep forward and of decays_in_xla are among
    # them), then the headline shape with the prep and state-backward kernels alone (each decay
    # mode's prep cells, the Mosaic prep and dh kernels) and the tenth session's untimed
    # variants: mosaic_prep, mosaic_dh, xladecays (G and logF from XLA), decay8w3s (the prep
    # backward's decay kernel at 8 warps, 3 stages). GPU 1: the 7B layer, B1 T8192 H32 and B8
    # T2048 H8 with the default, mosaic_prep, mosaic_dh, xladecays and fla (do_bench and
    # CUDA-graph rows). The breakdown runs first: only the default path's
    # prep and split-backward cells (and their decay-mode variants) and the Mosaic dh kernel.
    shapes_rest=(--shape B=1,T=8192,H=30,K=96,V=192 --shape B=1,T=8192,H=32,K=128,V=128
                 --shape B=8,T=2048,H=8,K=128,V=128)
    ours="pallas_gpu_default pallas_gpu_mosaic_prep pallas_gpu_mosaic_dh
          pallas_gpu_default_xladecays"
    $PY -c 'import jax; print("SMs (core_count):", getattr(jax.devices()[0], "core_count", None))'
    CUDA_VISIBLE_DEVICES=1 OUT="$WORK/kernel1" MODE=bench BENCH_BUDGET=470 BENCH_TIMEOUT=540 \
      BENCH_ARGS="--no-breakdown ${shapes_rest[*]} --impl fla $ours" \
      bash benchmarks/gdn_kernel_gpu.sh \
      > "$WORK/kernel1.out" 2>&1 &
    CUDA_VISIBLE_DEVICES=0 OUT="$WORK/kernel0" \
      TEST_TIMEOUT=270 BENCH_BUDGET=235 BENCH_TIMEOUT=275 \
      BENCH_ARGS="--shape B=4,T=4096,H=16,K=128,V=128 --breakdown-precisions default
      --breakdown-only prep_fwd_save prep_bwd_split prep_bwd_inverse prep_bwd_decay
      prep_bwd_qk state_fwd+delta_mosaic state_bwd_split state_dh_mosaic
      --impl fla xla_chunked_default $ours pallas_gpu_default_decay8w3s" \
      bash benchmarks/gdn_kernel_gpu.sh \
      2>&1 | tail -40
    wait
    tail -40 "$WORK/kernel1.out"
    tar czf "$OUT/kernel.tgz" -C "$WORK" kernel0 kernel1 kernel1.out ;;
  adopt)
    # The default against the one before it (the twelfth session's, mosaic_dqk with caller
    # layout, against the eleventh's, pallas_gpu_default_v11) and fla, every shape. fla's cold
    # autotune costs ~110 s a shape, so two shapes a GPU: GPU 1 the headline and B8 with XLA;
    # GPU 0 the 7B layer and B1 T8192 H32, then the API's GPU tests (its auto path runs every
    # default kernel). The whole GPU test set and the 370M step are the `check` phase.
    ours="pallas_gpu_default pallas_gpu_default_v11"
    CUDA_VISIBLE_DEVICES=1 OUT="$WORK/adopt1" MODE=bench BENCH_BUDGET=470 BENCH_TIMEOUT=545 \
      BENCH_ARGS="--no-breakdown --shape B=4,T=4096,H=16,K=128,V=128
      --shape B=8,T=2048,H=8,K=128,V=128 --impl fla xla_chunked_default $ours" \
      bash benchmarks/gdn_kernel_gpu.sh > "$WORK/adopt1.out" 2>&1 &
    CUDA_VISIBLE_DEVICES=0 OUT="$WORK/adopt0" MODE=bench BENCH_BUDGET=280 BENCH_TIMEOUT=300 \
      BENCH_ARGS="--no-breakdown --shape B=1,T=8192,H=30,K=96,V=192
      --shape B=1,T=8192,H=32,K=128,V=128 --impl fla $ours" \
      bash benchmarks/gdn_kernel_gpu.sh 2>&1 | grep -E "^B|^  |exit" | tail -20
    CUDA_VISIBLE_DEVICES=0 OUT="$WORK/adopt0t" MODE=tests TEST_TIMEOUT=230 \
      TEST_FILES=tests/test_kernels_gdr_pallas_gpu_api.py bash benchmarks/gdn_kernel_gpu.sh \
      | tail -4
    wait
    grep -E "^B|^  |exit" "$WORK/adopt1.out" | tail -30
    tar czf "$OUT/adopt.tgz" -C "$WORK" adopt0 adopt0t adopt1 adopt1.out ;;
  check)
    # After `adopt`: GPU 1 every compiled kernel test; GPU 0 the hybrid's 370M training step,
    # the Pallas kernel (its defaults) against XLA's chunked path, at "default".
    CUDA_VISIBLE_DEVICES=1 OUT="$WORK/check1" MODE=tests TEST_TIMEOUT=500 \
      bash benchmarks/gdn_kernel_gpu.sh > "$WORK/check1.out" 2>&1 &
    CUDA_VISIBLE_DEVICES=0 timeout 500 bash -c "$(declare -f train_rows); train_rows default"
    wait
    tail -8 "$WORK/check1.out"
    tar czf "$OUT/check.tgz" -C "$WORK" check1 check1.out \
      $(cd "$WORK" && ls train_*_default.json) ;;
  layout)
    # The eleventh session's untimed work against its default: caller_layout (no XLA
    # transposes of q, k, v, o, dO, dq, dk, dv) and state_pass="mosaic_dqk" (the split
    # backward's parallel kernel in Mosaic GPU), each alone and together. GPU 1: the headline
    # and B8 with fla, then the 7B layer and B1 T8192 H32 without (fla's cold autotune costs
    # ~110 s a shape; fla at those two is in the LOG). GPU 0: the compiled kernel tests (the
    # caller_layout and mosaic_dqk GPU tests among them), then the traces at the headline.
    ours="pallas_gpu_default pallas_gpu_default_callerlayout pallas_gpu_mosaic_dqk
          pallas_gpu_mosaic_dqk_callerlayout"
    ( export CUDA_VISIBLE_DEVICES=1
      OUT="$WORK/layout1" MODE=bench BENCH_BUDGET=330 BENCH_TIMEOUT=370 \
        BENCH_ARGS="--no-breakdown --shape B=4,T=4096,H=16,K=128,V=128
        --shape B=8,T=2048,H=8,K=128,V=128 --impl fla $ours" bash benchmarks/gdn_kernel_gpu.sh
      OUT="$WORK/layout1b" MODE=bench BENCH_BUDGET=150 BENCH_TIMEOUT=170 \
        BENCH_ARGS="--no-breakdown --shape B=1,T=8192,H=30,K=96,V=192
        --shape B=1,T=8192,H=32,K=128,V=128 --impl $ours" bash benchmarks/gdn_kernel_gpu.sh
    ) > "$WORK/layout1.out" 2>&1 &
    export CUDA_VISIBLE_DEVICES=0
    OUT="$WORK/layout0" MODE=tests TEST_TIMEOUT=290 bash benchmarks/gdn_kernel_gpu.sh | tail -4
    timeout 180 $PY benchmarks/gdn_kernel_trace.py --mode fwd+bwd --out "$WORK/layout0" \
      --shape B=4,T=4096,H=16,K=128,V=128 --impl $ours > "$WORK/layout0/trace.out" 2>&1
    echo "trace: exit $?"; grep -E "a call" "$WORK/layout0/trace.out"
    wait
    grep -E "^B|^  |exit" "$WORK/layout1.out" | tail -50
    tar czf "$OUT/layout.tgz" -C "$WORK" layout0/pytest_gpu.log layout0/trace.out \
      layout0/gdn_trace.json layout1 layout1b layout1.out ;;
  trace)
    # Where a call's time goes, glue included: GPU 0 the headline and B8 (the default and the
    # ninth session's), GPU 1 the 7B layer and B1 T8192 H32 (the default), fwd and fwd+bwd.
    tr() {  # tr NAME ARGS...
      local name=$1; shift
      timeout 250 $PY benchmarks/gdn_kernel_trace.py --mode fwd fwd+bwd --out "$WORK/$name" \
        "$@" > "$WORK/$name.out" 2>&1; echo "trace $name: exit $?"
    }
    CUDA_VISIBLE_DEVICES=1 bash -c "$(declare -f tr); tr trace1 --shape B=1,T=8192,H=30,K=96,V=192 \
      --shape B=1,T=8192,H=32,K=128,V=128 --impl pallas_gpu_default" &
    CUDA_VISIBLE_DEVICES=0 tr trace0 --shape B=4,T=4096,H=16,K=128,V=128 \
      --shape B=8,T=2048,H=8,K=128,V=128 --impl pallas_gpu_default pallas_gpu_default_v9
    wait
    head -70 "$WORK/trace0.out"
    tar czf "$OUT/trace.tgz" -C "$WORK" trace0.out trace1.out trace0/gdn_trace.json \
      trace1/gdn_trace.json ;;
  confirm)
    # GPU 1: the 7B layer (V = 192 now three prep tiles of 64, not four) with its prep and
    # state kernels alone, then the headline shape again: the default (outer-difference
    # decays) against the exact decays, the Mosaic forward and the split pass. GPU 0: the
    # compiled kernel tests, then the 370M hybrid's training step at "default".
    CUDA_VISIBLE_DEVICES=1 OUT="$WORK/confirm1" MODE=bench BENCH_BUDGET=430 BENCH_TIMEOUT=520 \
      BENCH_ARGS="--shape B=1,T=8192,H=30,K=96,V=192 --shape B=4,T=4096,H=16,K=128,V=128
      --breakdown-precisions default --breakdown-only prep state --impl fla pallas_gpu_default
      pallas_gpu_default_exactdecays pallas_gpu_mosaic_splitbwd pallas_gpu_split" \
      bash benchmarks/gdn_kernel_gpu.sh > "$WORK/confirm1.out" 2>&1 &
    export CUDA_VISIBLE_DEVICES=0
    OUT="$WORK/confirm0" MODE=tests TEST_TIMEOUT=200 bash benchmarks/gdn_kernel_gpu.sh | tail -8
    timeout 330 $PY benchmarks/train_throughput.py --sizes 370m --steps 15 --families hybrid \
      --gdn-implementation pallas_gpu --gdn-precision default \
      --out "$WORK/confirm0/train_pallas_default.json" 2>&1 | tail -4
    wait
    grep -E "^B|^  |kernel:" "$WORK/confirm1.out" | tail -60
    tar czf "$OUT/confirm.tgz" -C "$WORK" confirm0 confirm1 confirm1.out ;;
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
    # Launch parameters of each kernel alone: the default state pass's kernels (warps x stages
    # x V tile) at three shapes, each prep kernel of the default (the fused forward saving T,
    # the backward's three) by warps x stages at the headline shape. Nothing end to end: the
    # seventh session ran this first, then `kernel` with the defaults it chose.
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
    cells=("state fwd+delta$" "state bwd split$")
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
    # kernel tests. GPU 0: the headline shape (fla, the default,
    # mosaic_splitbwd) with every prep and state kernel alone, among them the prep forward
    # without its inverse (an ablation).
    NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    head_shape=B=4,T=4096,H=16,K=128,V=128
    cells=("prep fwd save$" "prep bwd inverse" "prep bwd decay" "prep bwd qk"
           "state fwd+delta$" "state bwd split$")
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
      --impl fla pallas_gpu_default pallas_gpu_mosaic_splitbwd" bash benchmarks/gdn_kernel_gpu.sh \
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
