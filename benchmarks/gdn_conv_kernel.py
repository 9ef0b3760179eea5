"""The GDN layer's causal conv + SiLU: the Pallas (Triton) kernels of `kernels.causal_conv`
against XLA's forward and derivative, in one process, samples interleaved.

    python benchmarks/gdn_conv_kernel.py --out /tmp/conv --sweep       # on a GPU

Rows "api": forward+backward (z, dx, dw) through `jax.vjp` at the 370M hybrid's conv widths
(B8 T2048, C = 1056 for q and k, 2112 for v), for "xla" (the reference, differentiated by
JAX), "pallas_gpu" (both kernels) and "xla_fwd" (XLA's forward with the Triton backward: is
either kernel alone the win?). Each has its wall time (interleaved samples), its GPU time (a
profiler trace) and its largest error against fp32 math on the same operands, relative to the
largest value. `--sweep` then takes each kernel's GPU time alone at each launch of `LAUNCHES`
against XLA's forward or pullback alone (rows "sweep"): how the default launch was chosen, and
how to check it on another card. Writes OUT/gdn_conv_kernel.json.
`--interpret` runs a small shape in Pallas' interpreter on any host; its timings mean nothing.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from benchmarks.gdn_kernel_compare import interleaved_samples  # noqa: E402
from benchmarks.profile_summary import device_ms  # noqa: E402

# The last two give a thread 4 and 8 channels (8- and 16-byte loads) at few registers (sm_90,
# pip Triton 3.6.0: forward 64 and 100, backward 96 and 250); the others 2 or 4. On an H100 they
# were 1.3-2.1x slower forward than the default (docs/kernels-gpu.md).
LAUNCHES = [dict(seg=s, unroll=u, cb=c, warps=n) for s, u, c, n in (
    (128, 8, 64, 1), (128, 4, 64, 1), (128, 16, 64, 1), (64, 8, 64, 1), (256, 8, 64, 1),
    (128, 8, 32, 1), (128, 8, 128, 1), (128, 8, 128, 2), (128, 8, 256, 2), (256, 16, 128, 2),
    (128, 4, 128, 2), (64, 4, 64, 1), (128, 4, 128, 1), (128, 4, 256, 1))]


def implementations(interpret: bool):
    """{name: fn(x, w) -> z} whose derivative is that implementation's backward."""
    import jax

    from kernels.causal_conv import gpu
    from kernels.causal_conv.reference import conv_silu

    @jax.custom_vjp
    def xla_fwd(x, w):
        return conv_silu(x, w)

    xla_fwd.defvjp(lambda x, w: (conv_silu(x, w), (x, w)),
                   lambda res, dz: gpu.conv_silu_bwd(*res, dz, interpret=interpret))
    return {"xla": conv_silu, "pallas_gpu": functools.partial(gpu.conv_silu_gpu,
                                                              interpret=interpret),
            "xla_fwd": xla_fwd}


def fwd_bwd(fn):
    """jit of (x, w, dz) -> (z, dx, dw) through jax.vjp."""
    import jax

    def run(x, w, dz):
        z, pull = jax.vjp(fn, x, w)
        return (z, *pull(dz))

    return jax.jit(run)


def _ratio(a, b):
    return a / b if b == b and b > 0 else float("nan")


def operands(B, T, C, W, seed=0):
    import jax
    import jax.numpy as jnp
    kx, kw, kd = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(kx, (B, T, C), jnp.bfloat16)
    w = jax.random.normal(kw, (W, C), jnp.float32) / W ** 0.5
    return x, w, jax.random.normal(kd, (B, T, C), jnp.bfloat16)


def errors(outs, x, w, dz):
    """Each output's largest error against fp32 math on the same (rounded) operands, relative
    to the reference's largest value."""
    import jax.numpy as jnp
    import numpy as np

    from kernels.causal_conv.reference import conv_silu
    want = fwd_bwd(conv_silu)(x.astype(jnp.float32), w.astype(x.dtype).astype(jnp.float32),
                              dz.astype(jnp.float32))
    return {n: float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max()
                     / np.abs(np.asarray(b, np.float64)).max())
            for n, a, b in zip(("z", "dx", "dw"), outs, want)}


def sweep(args, C, ops):
    """Each kernel alone at each launch against XLA's forward or pullback alone; every fn
    takes (x, w, dz)."""
    import jax

    from kernels.causal_conv import gpu
    from kernels.causal_conv.reference import conv_silu
    parts = {"forward": (lambda x, w, dz: conv_silu(x, w),
                         lambda launch: lambda x, w, dz: gpu.conv_silu_fwd(
                             x, w, interpret=args.interpret, launch=launch)),
             "backward": (lambda x, w, dz: jax.vjp(conv_silu, x, w)[1](dz),
                          lambda launch: lambda x, w, dz: gpu.conv_silu_bwd(
                              x, w, dz, interpret=args.interpret, launch=launch))}
    rows = []
    for part, (xla, kernel) in parts.items():
        fns = {"xla": jax.jit(xla), **{i: jax.jit(kernel(launch))
                                       for i, launch in enumerate(LAUNCHES)}}
        times = {k: device_ms(f, ops, args.calls) for k, f in fns.items()}
        ref = times.pop("xla")
        for i, ms in times.items():
            rows.append(dict(channels=C, part=part, launch=LAUNCHES[i], device_ms=ms,
                             xla_device_ms=ref, ratio=_ratio(ms, ref)))
            print(f"| sweep C={C} | {part} | {LAUNCHES[i]} | {ms:.4f} ms | xla {ref:.4f} | "
                  f"{_ratio(ms, ref):.3f}x |", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", type=int, nargs="+", default=[1056, 2112],
                   help="the 370M hybrid's q/k and v widths")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--width", type=int, default=4)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--inner", type=int, default=10)
    p.add_argument("--calls", type=int, default=20, help="calls a profiler trace covers")
    p.add_argument("--sweep", action="store_true", help="time each launch of LAUNCHES")
    p.add_argument("--interpret", action="store_true", help="a small shape on any host")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    import jax
    if args.interpret:
        args.channels, args.batch, args.seq_len = [40], 2, 21
        args.iters, args.inner, args.calls = 2, 1, 1
    impls = implementations(args.interpret)
    rows = []
    for C in args.channels:
        ops = operands(args.batch, args.seq_len, C, args.width, seed=C)
        fns = {n: fwd_bwd(f) for n, f in impls.items()}
        outs = {n: jax.block_until_ready(f(*ops)) for n, f in fns.items()}
        samples = interleaved_samples(fns, ops, args.iters, args.inner)
        base = statistics.median(samples["xla"])
        dev = {n: device_ms(f, ops, args.calls) for n, f in fns.items()}
        for n in fns:
            med, err = statistics.median(samples[n]), errors(outs[n], *ops)
            rows.append(dict(kind="api", channels=C, implementation=n, median_ms=med,
                             min_ms=min(samples[n]), ratio=med / base, device_ms=dev[n],
                             device_ratio=_ratio(dev[n], dev["xla"]), rel_error=err))
            print(f"| C={C} | {n} | {med:.3f} ms | {med / base:.3f}x | device {dev[n]:.4f} ms "
                  f"{_ratio(dev[n], dev['xla']):.3f}x | error z {err['z']:.2g} dx {err['dx']:.2g} "
                  f"dw {err['dw']:.2g} |", flush=True)
        if args.sweep:
            rows += [dict(kind="sweep", **r) for r in sweep(args, C, ops)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(device_kind=jax.devices()[0].device_kind, jax=jax.__version__,
                argv=sys.argv[1:], shape=dict(B=args.batch, T=args.seq_len, W=args.width))
    (out / "gdn_conv_kernel.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
