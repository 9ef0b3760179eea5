"""Where one gated delta rule call's device time goes: trace a few calls, list every kernel.

    python benchmarks/gdn_kernel_trace.py --shape B=4,T=4096,H=16,K=128,V=128 \
        --impl pallas_gpu_default pallas_gpu_default_c32 --out /tmp/gdn_trace

`gdn_kernel.py`'s breakdown times each Pallas kernel alone; this traces the whole jitted call
(`gdn_kernel.jax_fn`, the same inputs) under JAX's profiler and groups the device events by
kernel name (`profile_summary.summarize`), so the XLA glue between the kernels (layout copies,
casts, the decays' cumulative sums, padding) shows up next to them. Prints a table per
(shape, impl, mode) and writes every row to OUT/gdn_trace.json; the traces stay under OUT.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.gdn_kernel import MODES, jax_fn, jax_inputs, parse_shape, time_jax  # noqa: E402
from benchmarks.gdn_kernel_variants import JAX_IMPLS, PEER_IMPLS  # noqa: E402
from benchmarks.profile_summary import summarize, trace_calls  # noqa: E402


def trace_one(shape, impl, mode, args, log_dir):
    fn = jax_fn(impl, mode, interpret=args.interpret)
    inputs, do = jax_inputs(shape)
    call_args = inputs if mode == "fwd" else (*inputs, do)
    ms, _ = time_jax(fn, call_args, warmup=2, iters=args.iters, inner=args.calls)
    trace_calls(fn, call_args, args.calls, log_dir)
    s = summarize(log_dir, steps=args.calls, step_time_s=ms * 1e-3, top=args.top)
    return {"shape": shape, "impl": impl, "mode": mode, "median_ms": ms,
            "kernel_ms_per_call": 1e3 * s["kernel_s_per_step"], "by_kind": s["by_kind"],
            "kernels": s["top_kernels"], "trace": s["trace"]}


def format_row(row):
    head = (f"{row['impl']} {row['mode']} {row['shape']}: {row['median_ms']:.3f} ms a call, "
            f"kernels {row['kernel_ms_per_call']:.3f} ms")
    lines = [head] + [f"  {k['ms_per_step']:8.4f} ms {100 * k['share']:5.1f}%  {k['name'][:80]}"
                      for k in row["kernels"]]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", action="append", required=True,
                   help="B=..,T=..,H=..,K=..,V=..[,HV=..]")
    p.add_argument("--impl", nargs="+", required=True,
                   choices=[n for n in JAX_IMPLS if not n.startswith("xla")]
                   + list(PEER_IMPLS))
    p.add_argument("--mode", nargs="+", default=["fwd+bwd"], choices=MODES)
    p.add_argument("--calls", type=int, default=5, help="calls traced (and per timing sample)")
    p.add_argument("--iters", type=int, default=5, help="timing samples before the trace")
    p.add_argument("--top", type=int, default=30, help="kernels listed per call")
    p.add_argument("--interpret", action="store_true", help="Pallas interpret mode (CPU tests)")
    p.add_argument("--out", required=True, help="directory for the traces and gdn_trace.json")
    args = p.parse_args(argv)
    if args.calls < 1 or args.iters < 1:
        p.error(f"--calls and --iters must be >= 1, got {args.calls} and {args.iters}")
    out = Path(args.out)
    rows = []
    for text in args.shape:
        shape = parse_shape(text)
        for impl in args.impl:
            for mode in args.mode:
                log_dir = out / f"{text.replace('=', '').replace(',', '_')}_{impl}_{mode}"
                rows.append(trace_one(shape, impl, mode, args, log_dir))
                print(format_row(rows[-1]), flush=True)
                (out / "gdn_trace.json").write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
