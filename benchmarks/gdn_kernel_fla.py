"""The fla rows of `benchmarks/gdn_kernel.py`, run by it as a child process per shape, so that
torch and JAX never share a process (or the card's memory allocator).

    python benchmarks/gdn_kernel_fla.py --out rows.json --shape B=4,T=4096,H=16,K=128,V=128

Needs torch and flash-linear-attention 0.6 (see benchmarks/gdn_kernel_gpu.sh for the wheels).
Inputs, modes and the row format are gdn_kernel.py's; the rows are written after every cell.
Each mode gives two rows: "fla" (triton.testing.do_bench, host launches included) and
"fla_cudagraph" (the same call replayed from a CUDA graph: GPU time alone; `_graph_row`).
"""

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.gdn_kernel import MODES, parse_shape, print_row  # noqa: E402


def run_fla(shapes, args, save):
    import torch
    import triton
    import fla.ops.common.chunk_o as chunk_o
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule as fla_gdr

    # fla #640: Triton 3.4-3.7.0 on Hopper computes wrong gated dq/dk/dg; fla raises. We time
    # the kernels anyway and never use these gradients for correctness.
    chunk_o.TRITON_ABOVE_3_7_1 = True
    rows = []
    dev = "cuda"
    for s in shapes:
        B, T, H, HV, K, V = (s[x] for x in ("B", "T", "H", "HV", "K", "V"))
        gen = torch.Generator(device=dev).manual_seed(0)
        rnd = lambda *shape: torch.randn(*shape, device=dev, generator=gen)
        q = rnd(B, T, H, K).bfloat16()
        k = torch.nn.functional.normalize(rnd(B, T, H, K), dim=-1).bfloat16()
        v = rnd(B, T, HV, V).bfloat16()
        g = -0.5 * torch.rand(B, T, HV, device=dev, generator=gen)
        beta = (2 * torch.rand(B, T, HV, device=dev, generator=gen)).bfloat16()
        do = rnd(B, T, HV, V).bfloat16()
        leaves = [x.requires_grad_() for x in (q, k, v, g, beta)]
        for mode in MODES:
            row = {"shape": s, "impl": "fla", "mode": mode}
            try:
                if mode == "fwd":
                    def fn():
                        with torch.no_grad():
                            return fla_gdr(q, k, v, g, beta)[0]
                else:
                    def fn():
                        o = fla_gdr(q, k, v, g, beta)[0]
                        return torch.autograd.grad(o, leaves, do)
                t0 = time.perf_counter()
                fn()
                torch.cuda.synchronize()
                row["compile_s"] = time.perf_counter() - t0
                row["median_ms"] = triton.testing.do_bench(
                    fn, warmup=args.fla_warmup_ms, rep=args.fla_rep_ms, return_mode="median")
                row["min_ms"] = triton.testing.do_bench(
                    fn, warmup=5, rep=args.fla_rep_ms, return_mode="min")
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                fn()
                torch.cuda.synchronize()
                row["peak_bytes"] = torch.cuda.max_memory_allocated()
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"[:2000]
                traceback.print_exc()
            rows.append(row)
            print_row(row, flush=True)
            if "error" not in row:
                rows.append(_graph_row(fn, s, mode, args))
                print_row(rows[-1], flush=True)
            save(rows)
    return rows


def _graph_row(fn, s, mode, args):
    """The same call replayed from a CUDA graph (`triton.testing.do_bench_cudagraph`: fn
    captured a few dozen times, unrolled, into one graph): the GPU's time without the host's.
    The "fla" row (do_bench) launches fla's ~30 Triton kernels from Python on every call, so a
    slow or busy host leaves the GPU idle between them, and it flushes L2 before each call; our
    JAX rows dispatch one compiled program per call. fla's do_bench forward+backward moved
    between 2.2 and 3.1 ms from call to call at one shape."""
    import triton
    row = {"shape": s, "impl": "fla_cudagraph", "mode": mode}
    try:
        row["median_ms"] = triton.testing.do_bench_cudagraph(fn, rep=args.fla_graph_rep_ms,
                                                             return_mode="median")
    except Exception as exc:  # capture can fail (a host sync inside fn): say so, keep going
        row["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        traceback.print_exc()
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", action="append", required=True, help="B=..,T=..,H=..,K=..,V=..[,HV=..]")
    p.add_argument("--fla-warmup-ms", type=int, default=100)
    p.add_argument("--fla-rep-ms", type=int, default=300)
    p.add_argument("--fla-graph-rep-ms", type=int, default=100,
                   help="fla_cudagraph rows: about this many ms of calls in one graph")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    shapes = [parse_shape(x) for x in args.shape]
    run_fla(shapes, args, lambda rows: Path(args.out).write_text(json.dumps(rows)))


if __name__ == "__main__":
    main()
