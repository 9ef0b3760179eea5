"""Gated delta rule kernels on one GPU: ours (Pallas), flash-linear-attention 0.6, our XLA path.

    python benchmarks/gdn_kernel.py --out results.json           # the four benchmark shapes
    python benchmarks/gdn_kernel.py --shape B=1,T=512,H=2,K=64,V=64 --impl pallas_gpu xla_chunked

Implementations: `gdn_kernel_variants.py` (ours, by name, with what each changes), plus
    xla_chunked         reference.chunked through the API (Precision.HIGHEST)
    xla_chunked_default the same at precision="default" (bf16 matmul operands): the XLA row at
                        the precision of our "default" variants and of fla
    fla                 fla.ops.gated_delta_rule.chunk_gated_delta_rule (torch + Triton), run in
                        a child process (gdn_kernel_fla.py) so that torch and JAX never share a process.
                        On Hopper with Triton < 3.7.1 fla refuses its gated backward (fla #640);
                        the check is patched out at run time for timing only.
    jla                 jax-linear-attention 0.1.0's Mosaic GPU kernels
                        (jla.ops.mosaic_gpu.gated_delta_rule.gated_delta_rule), in this process:
                        Hopper only, K and V in {64, 128} (or K = 256); other shapes record its
                        refusal. Installed from benchmarks/wheels like fla.
Every cell: bf16 q, k (unit rows), v, beta in (0, 2), fp32 g in (-0.5, 0); no initial state;
fwd = o; fwd+bwd = gradients of sum(o * dO) w.r.t. q, k, v, g, beta. Time = median over --iters
samples after --warmup calls (JAX: each sample is --inner back-to-back calls ended by
block_until_ready; fla: triton.testing.do_bench median, host launches included, and
fla_cudagraph: the same calls replayed from a CUDA graph, GPU time alone). TFLOP/s counts the
chunk algorithm's matmul FLOPs (hybrid_jax/flops.py: 6CK + 4CV + 6KV + 2C^2/3 per token-head;
x3 for fwd+bwd).
"x floor" = time / max(FLOPs / 790 TFLOP/s, bytes / 3.0 TB/s), the H100 ceilings measured here.
GB/s counts the fewest bytes: fwd reads q, k, v, g, beta and writes o; fwd+bwd reads them twice,
reads o and dO, and writes o and the five gradients. Peak memory: JAX = XLA's compiled
argument (dO included) + output + temp bytes; fla =
torch.cuda.max_memory_allocated over the call.
Errors: every fwd row records rel_err_vs_xla (max |o - o_xla| / max |o_xla|, o_xla from
xla_chunked at "highest") and rel_err_vs_f64 (the same against the recurrence in float64 on the
host, from the same bf16-rounded inputs; `--no-f64` skips it).
A cell that fails is recorded with its error and the run goes on.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

# fla's child process for a later shape starts after JAX holds the card: without this JAX
# would have preallocated 75% of its memory. (Peak memory is XLA's compiled figure either way.)
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from benchmarks.gdn_kernel_breakdown import run_breakdown  # noqa: E402
from tests.helpers.gdr import np_gated_delta_rule  # noqa: E402  (the float64 oracle)
from benchmarks.gdn_kernel_variants import (ALL_IMPLS, DEFAULT_IMPLS, FLA_IMPLS,  # noqa: E402
                                            JAX_IMPLS, PEER_IMPLS, SHAPES, XLA_IMPLS)

MODES = ("fwd", "fwd+bwd")
LAUNCH_KEYS = ("num_warps", "num_warps_bwd", "num_warps_prep", "num_stages", "block_v",
               "block_d")  # KernelConfig's fields


def parse_shape(text):
    s = {k: int(v) for k, v in (p.split("=") for p in text.split(","))}
    s.setdefault("HV", s["H"])
    return s


def parse_launch(text):
    """'num_warps_bwd=4,block_v=32' -> {'num_warps_bwd': 4, 'block_v': 32} ('' -> {})."""
    launch = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in LAUNCH_KEYS or not value.isdigit():
            raise ValueError(f"--breakdown-launch item {item!r}: expected K=INT with K in "
                             f"{LAUNCH_KEYS}")
        launch[key] = int(value)
    return launch


def label(s):
    return f"B{s['B']} T{s['T']} H{s['H']}" + (f" HV{s['HV']}" if s["HV"] != s["H"] else "") \
        + f" K{s['K']} V{s['V']}"


def flops(s, mode, C=64):
    K, V = s["K"], s["V"]
    f = s["B"] * s["T"] * s["HV"] * (6 * C * K + 4 * C * V + 6 * K * V + 2 * C * C / 3)
    return f * (3 if mode == "fwd+bwd" else 1)


def min_bytes(s, mode):
    B, T, H, HV, K, V = (s[x] for x in ("B", "T", "H", "HV", "K", "V"))
    inputs = 2 * (2 * B * T * H * K + B * T * HV * V) + 4 * B * T * HV + 2 * B * T * HV
    o = 2 * B * T * HV * V
    return inputs + o if mode == "fwd" else 2 * inputs + 3 * o + o + inputs


# Ceilings measured on this workplace's H100 (KINDS.md): bf16 matmul ~790 TFLOP/s, device copy
# ~3.0 TB/s. The floor is the larger of FLOPs / rate and bytes / bandwidth.
PEAK_FLOPS, PEAK_BW = 790e12, 3.0e12


def floor_ms(s, mode):
    return max(flops(s, mode) / PEAK_FLOPS, min_bytes(s, mode) / PEAK_BW) * 1e3


# ------------------------------------------------------------------------------------------- JAX

def jax_inputs(s, seed=0):
    import jax
    import jax.numpy as jnp
    B, T, H, HV, K, V = (s[x] for x in ("B", "T", "H", "HV", "K", "V"))
    ks = jax.random.split(jax.random.key(seed), 6)
    q = jax.random.normal(ks[0], (B, T, H, K), jnp.bfloat16)
    k = jax.random.normal(ks[1], (B, T, H, K), jnp.float32)
    k = (k / jnp.linalg.norm(k, axis=-1, keepdims=True)).astype(jnp.bfloat16)
    v = jax.random.normal(ks[2], (B, T, HV, V), jnp.bfloat16)
    g = -jax.random.uniform(ks[3], (B, T, HV), jnp.float32, 0.0, 0.5)
    beta = jax.random.uniform(ks[4], (B, T, HV), jnp.float32, 0.0, 2.0).astype(jnp.bfloat16)
    do = jax.random.normal(ks[5], (B, T, HV, V), jnp.bfloat16)
    return (q, k, v, g, beta), do


def jax_fn(impl, mode, interpret=False):
    """Jitted fwd(q, k, v, g, beta) -> o, or fwd+bwd(q, k, v, g, beta, dO) -> the five
    gradients. dO is an argument, not a closed-over constant: as a constant, XLA spent seconds
    of every cell's compile folding it (slow_operation_alarm on an H200)."""
    import functools
    import jax
    import jax.numpy as jnp
    from kernels.gated_delta_rule import chunk_gated_delta_rule
    from kernels.gated_delta_rule.gpu.chunk import chunk_gated_delta_rule_pallas_gpu
    from kernels.gated_delta_rule.gpu.config import KernelConfig

    if impl in XLA_IMPLS:
        fwd = functools.partial(chunk_gated_delta_rule, **JAX_IMPLS[impl])
    elif impl == "jla":
        from jla.ops.mosaic_gpu.gated_delta_rule import gated_delta_rule
        fwd = lambda q, k, v, g, b: gated_delta_rule(q, k, v, g, b.astype(jnp.float32))
    else:
        kw = dict(JAX_IMPLS[impl])
        qkv_dtype = kw.pop("qkv_dtype", None)
        fwd = functools.partial(chunk_gated_delta_rule_pallas_gpu, interpret=interpret,
                                config=KernelConfig(**kw.pop("config", {})), **kw)
        if qkv_dtype:
            call = fwd
            fwd = lambda q, k, v, g, b: call(*(x.astype(qkv_dtype) for x in (q, k, v)), g, b)
    if mode == "fwd":
        return jax.jit(lambda *a: fwd(*a)[0])
    loss = lambda *a: jnp.sum(fwd(*a[:5])[0].astype(jnp.float32) * a[5].astype(jnp.float32))
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4)))


def time_jax(fn, args, warmup, iters, inner):
    import jax
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        for _ in range(inner):
            out = fn(*args)
        jax.block_until_ready(out)
        samples.append((time.perf_counter() - t0) * 1e3 / inner)
    return statistics.median(samples), min(samples)


def jax_peak_bytes(compiled):
    ma = compiled.memory_analysis()
    if ma is None:
        return None
    return (ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes
            - ma.alias_size_in_bytes)


def past_budget(args):
    """The skip reason for a cell that would start after --budget-s, else None."""
    if time.perf_counter() - args.t_start > args.budget_s:
        return f"skipped: past --budget-s {args.budget_s}"
    return None


def run_jax(shapes, impls, args, rows, save):
    import jax
    import numpy as np
    for s in shapes:
        inputs, do = jax_inputs(s)
        ref_o = None
        t0 = time.perf_counter()
        f64_o = None if args.no_f64 else np_gated_delta_rule(*inputs)[0]
        if f64_o is not None:
            print(f"float64 reference for {label(s)}: {time.perf_counter() - t0:.1f} s",
                  flush=True)
        for impl in impls:
            for mode in MODES:
                row = {"shape": s, "impl": impl, "mode": mode}
                if past_budget(args):
                    row["error"] = past_budget(args)
                    rows.append(row)
                    print_row(row, flush=True)
                    continue
                try:
                    t0 = time.perf_counter()
                    call_args = inputs if mode == "fwd" else (*inputs, do)
                    fn = jax_fn(impl, mode, args.interpret).lower(*call_args).compile()
                    row["compile_s"] = time.perf_counter() - t0
                    row["peak_bytes"] = jax_peak_bytes(fn)
                    out = jax.block_until_ready(fn(*call_args))
                    if mode == "fwd":  # agreement with the XLA path (computed first)
                        o = np.asarray(out, np.float32)
                        if impl == "xla_chunked":
                            ref_o = o
                        elif ref_o is not None:
                            row["rel_err_vs_xla"] = float(np.abs(o - ref_o).max()
                                                          / np.abs(ref_o).max())
                        if f64_o is not None:
                            row["rel_err_vs_f64"] = float(np.abs(o - f64_o).max()
                                                          / np.abs(f64_o).max())
                        row["finite"] = bool(np.isfinite(o).all())
                    row["median_ms"], row["min_ms"] = time_jax(fn, call_args, args.warmup,
                                                               args.iters, args.inner)
                except Exception as exc:  # recorded, printed, and the run goes on
                    row["error"] = f"{type(exc).__name__}: {exc}"[:2000]
                    traceback.print_exc()
                rows.append(row)
                print_row(row, flush=True)
                save(rows)


# ------------------------------------------------------------------------------------------- fla

def run_fla_child(s, args):
    """fla's rows for shape s from a child process (torch and JAX never share a process);
    skipped past --budget-s, and given at most --fla-timeout seconds."""
    def failed(reason, rows=()):  # rows, plus an error row for each fla cell not among them
        done = {(r["impl"], r["mode"]) for r in rows}
        return list(rows) + [{"shape": s, "impl": i, "mode": m, "error": reason}
                             for i in FLA_IMPLS for m in MODES if (i, m) not in done]

    if past_budget(args):
        return failed(past_budget(args))
    child_out = Path(args.out).with_suffix(".fla.json")
    child_out.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).with_name("gdn_kernel_fla.py")), "--out", str(child_out),
           "--fla-warmup-ms", str(args.fla_warmup_ms), "--fla-rep-ms", str(args.fla_rep_ms),
           "--fla-graph-rep-ms", str(args.fla_graph_rep_ms),
           "--shape", ",".join(f"{k}={v}" for k, v in s.items())]
    try:
        rc = subprocess.run(cmd, timeout=args.fla_timeout).returncode
    except subprocess.TimeoutExpired:
        rc = f"timeout after {args.fla_timeout} s"
    # the child saves after every cell: keep what it wrote, name the cells it did not reach
    rows = json.loads(child_out.read_text()) if child_out.exists() else []
    if not rows:
        print(f"fla child process failed ({rc}); no fla rows for {label(s)}")
    return failed(f"fla child failed: {rc}", rows)


# ----------------------------------------------------------------------------------------- table

HEADER = (f"{'shape':<28} {'impl':<24} {'mode':<8} {'median ms':>10} {'TFLOP/s':>8} "
          f"{'GB/s':>7} {'peak MiB':>9}  note")


def print_row(row, flush=False):
    s, mode = row["shape"], row["mode"]
    if "error" in row:
        print(f"{label(s):<28} {row['impl']:<24} {mode:<8} FAILED: {row['error'][:150]}",
              flush=flush)
        return
    ms = row["median_ms"]
    row["tflops"] = flops(s, mode) / ms / 1e9
    row["gbps"] = min_bytes(s, mode) / ms / 1e6
    peak = row.get("peak_bytes")
    row["x_floor"] = ms / floor_ms(s, mode)
    note = f"{row['x_floor']:.0f}x floor"
    if "rel_err_vs_xla" in row:
        note += f", err vs xla {row['rel_err_vs_xla']:.1e}"
    if "rel_err_vs_f64" in row:
        note += f", vs f64 {row['rel_err_vs_f64']:.1e}"
    if row.get("finite") is False:
        note += " NON-FINITE"
    print(f"{label(s):<28} {row['impl']:<24} {mode:<8} {ms:>10.3f} {row['tflops']:>8.1f} "
          f"{row['gbps']:>7.0f} {(peak or 0) / 2**20:>9.0f}  {note}", flush=flush)


def summary(rows):
    by = {(label(r["shape"]), r["impl"], r["mode"]): r.get("median_ms") for r in rows
          if "error" not in r}
    print("\nSpeed-up of each Pallas variant over fla, jla and the XLA rows, fwd+bwd [fwd]:")
    for lab in dict.fromkeys(label(r["shape"]) for r in rows):
        for ours in [i for i in JAX_IMPLS if i not in XLA_IMPLS
                     and any(r["impl"] == i for r in rows)]:
            parts = []
            for other in (*FLA_IMPLS, *PEER_IMPLS, *XLA_IMPLS):
                vals = []
                for mode in ("fwd+bwd", "fwd"):
                    a, b = by.get((lab, ours, mode)), by.get((lab, other, mode))
                    vals.append(f"{b / a:.2f}x" if a and b else "n/a")
                parts.append(f"vs {other} {vals[0]} [{vals[1]}]")
            print(f"  {lab:<28} {ours:<24} " + "   ".join(parts))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", action="append", help="B=..,T=..,H=..,K=..,V=..[,HV=..]")
    p.add_argument("--impl", nargs="*", default=list(DEFAULT_IMPLS), choices=ALL_IMPLS)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--inner", type=int, default=3)
    p.add_argument("--fla-warmup-ms", type=int, default=100)
    p.add_argument("--fla-rep-ms", type=int, default=300)
    p.add_argument("--fla-graph-rep-ms", type=int, default=100)
    p.add_argument("--fla-timeout", type=int, default=240,
                   help="seconds for one shape's fla cells (Triton compiles and autotunes; "
                        "150 cut the headline's cold fwd+bwd short)")
    p.add_argument("--out", default=str(REPO_ROOT / "benchmarks/results/gdn_kernel.json"))
    p.add_argument("--no-f64", action="store_true",
                   help="skip the float64 host reference (seconds per shape at the benchmark "
                        "shapes)")
    p.add_argument("--interpret", action="store_true",
                   help="Pallas interpret mode (a CPU smoke test of this script, not a timing)")
    p.add_argument("--budget-s", type=float, default=290,
                   help="cells not started by then are recorded as skipped; the table still prints")
    p.add_argument("--no-breakdown", action="store_true",
                   help="skip timing each Pallas kernel alone on the first shape")
    p.add_argument("--breakdown-precisions", nargs="+", default=["default", "highest"],
                   choices=["default", "highest"], help="the breakdown's kernel precisions")
    p.add_argument("--breakdown-only", nargs="+", default=[""],
                   help="only the breakdown's cells whose names start with one of these, e.g. "
                        "prep; a trailing $ asks for that exact name ('state bwd$'); _ stands "
                        "for a space (prep_bwd_split)")
    p.add_argument("--breakdown-launch", nargs="+", default=[""], metavar="K=V,...",
                   help="run the breakdown once per launch configuration of the Triton "
                        "kernels, e.g. num_warps_bwd=4,num_stages=2,block_v=32 (KernelConfig's "
                        "fields; '' is the default configuration)")
    args = p.parse_args(argv)
    args.t_start = time.perf_counter()  # --budget-s counts from here, not from import
    shapes = [parse_shape(x) for x in (args.shape or SHAPES)]

    rows = []
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"benchmark": "gdn_kernel", "argv": sys.argv[1:], "time": time.time()}
    try:
        meta["git_sha"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT,
                                         capture_output=True, text=True).stdout.strip()
    except OSError:
        pass

    def save(rows):  # after every cell, so a run cut short still leaves its numbers
        out_path.write_text(json.dumps({**meta, "rows": rows}, indent=1))

    print(HEADER, flush=True)
    jax_impls = [i for i in args.impl if i in JAX_IMPLS or i in PEER_IMPLS]
    if "xla_chunked" in jax_impls:  # first, so the others report their error against it
        jax_impls = ["xla_chunked"] + [i for i in jax_impls if i != "xla_chunked"]
    # The per-kernel breakdown first (our kernels only, no autotuning: the cheapest and most
    # telling cells), then shape by shape, each shape's every implementation before the next:
    # a run cut short by --budget-s keeps the breakdown and a complete comparison on the
    # headline shape.
    if jax_impls or not args.no_breakdown:
        import jax
        dev = jax.devices()[0]
        print(f"jax {jax.__version__} on {dev.device_kind}", flush=True)
        meta.update(jax_version=jax.__version__, device_kind=dev.device_kind)
    if not args.no_breakdown:
        print(f"Per-kernel times on {label(shapes[0])} (each pallas_call alone):")
        for precision in args.breakdown_precisions:
            for launch in map(parse_launch, args.breakdown_launch):
                meta.setdefault("kernel_breakdown", []).extend(run_breakdown(
                    shapes[0], precision, args, skip_reason=lambda: past_budget(args),
                    time_fn=time_jax, launch=launch))
                save(rows)
        print()
    for s in shapes:  # the JAX rows first: fla's child (torch, Triton autotuning) takes minutes
        if jax_impls:
            run_jax([s], jax_impls, args, rows, save)
        if "fla" in args.impl:
            rows += run_fla_child(s, args)
            save(rows)

    print("\n" + HEADER)
    order = {i: n for n, i in enumerate((*JAX_IMPLS, *PEER_IMPLS, *FLA_IMPLS))}
    labels = [label(s) for s in shapes]
    for r in sorted(rows, key=lambda r: (labels.index(label(r["shape"])), order[r["impl"]],
                                         r["mode"])):
        print_row(r)
    summary(rows)
    for r in meta.get("kernel_breakdown", []):
        ms = f"{r['median_ms']:.3f} ms" if "median_ms" in r else r.get("error", "?")[:80]
        print(f"  {r['impl']:<32} {ms}")
    save(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
