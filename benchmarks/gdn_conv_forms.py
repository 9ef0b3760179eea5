"""The GDN layer's short causal conv + SiLU written several ways in jnp, each differentiated by
XLA: forward+backward (dx and dw) timed in one process, samples interleaved.

    python benchmarks/gdn_conv_forms.py --out /tmp/conv                 # on a GPU

Why: in the 370M hybrid's step the conv's backward is the largest GDN cost outside the delta
rule's kernels, and most of it is the transpose of the pad that the model's form starts with
(experiments/LOG.md). Hand-written backwards and a Triton kernel lost to XLA's derivative, so
this asks whether another forward form gives XLA a cheaper derivative. Every form computes
y_t = SiLU(sum_j w_j x_{t-W+1+j}) with zeros before the first token. Writes
OUT/gdn_conv_forms.json: median and min ms per form and channel count, the ratio to "pad"
(the model's form), and each form's largest difference from "pad" in y, dx and dw.
`--interpret` (any host) checks the forms agree at a small shape; its timings mean nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from benchmarks.gdn_kernel_compare import interleaved_samples  # noqa: E402


def _pad(x, w):
    """The model's form: pad W - 1 zeros in front, then W shifted slices."""
    import jax.numpy as jnp
    W, T = w.shape[0], x.shape[1]
    x_pad = jnp.pad(x, ((0, 0), (W - 1, 0), (0, 0)))
    return sum(x_pad[:, j:j + T, :] * w[j] for j in range(W))


def _shifts(x, w):
    """Each tap its own shift: x's first T - s rows padded back to T (s = 0 needs none)."""
    import jax.numpy as jnp
    W, T = w.shape[0], x.shape[1]
    shift = lambda s: x if s == 0 else jnp.pad(x[:, :T - s], ((0, 0), (s, 0), (0, 0)))
    return sum(shift(W - 1 - j) * w[j] for j in range(W))


def _in_f32(form):
    """`form` with the products and sum in fp32 (rounded once, by `conv_silu`)."""
    def run(x, w):
        import jax.numpy as jnp
        return form(x.astype(jnp.float32), w.astype(jnp.float32))
    return run


FORMS = {"pad": _pad, "shifts": _shifts, "pad_f32": _in_f32(_pad),
         "shifts_f32": _in_f32(_shifts)}


def conv_silu(form, x, w):
    import jax
    return jax.nn.silu(FORMS[form](x, w.astype(x.dtype))).astype(x.dtype)


def fwd_bwd(form):
    """jit of (x, w, dy) -> (y, dx, dw) through jax.vjp."""
    import jax

    def run(x, w, dy):
        y, pull = jax.vjp(lambda x, w: conv_silu(form, x, w), x, w)
        return (y, *pull(dy))

    return jax.jit(run)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", type=int, nargs="+", default=[1056, 2112],
                   help="the 370M hybrid's q/k and v widths")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--width", type=int, default=4)
    p.add_argument("--forms", nargs="+", default=list(FORMS), choices=list(FORMS))
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--inner", type=int, default=10)
    p.add_argument("--interpret", action="store_true", help="a small shape on any host")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    import jax
    import jax.numpy as jnp
    import numpy as np
    if args.interpret:
        args.channels, args.batch, args.seq_len, args.iters, args.inner = [48], 2, 16, 2, 1
    rows = []
    for C in args.channels:
        kx, kw, kd = jax.random.split(jax.random.key(C), 3)
        shape = (args.batch, args.seq_len, C)
        x = jax.random.normal(kx, shape, jnp.bfloat16)
        w = jax.random.normal(kw, (args.width, C), jnp.float32) / args.width ** 0.5
        dy = jax.random.normal(kd, shape, jnp.bfloat16)
        fns = {f: fwd_bwd(f).lower(x, w, dy).compile() for f in args.forms}
        outs = {f: jax.block_until_ready(fn(x, w, dy)) for f, fn in fns.items()}
        samples = interleaved_samples(fns, (x, w, dy), args.iters, args.inner)
        base = statistics.median(samples[args.forms[0]])
        ref = dict(zip(("y", "dx", "dw"), (np.asarray(a, np.float32)
                                           for a in outs[args.forms[0]])))
        scale = {n: float(np.abs(r).max()) for n, r in ref.items()}
        for f in args.forms:
            diff = {n: float(np.abs(np.asarray(a, np.float32) - ref[n]).max())
                    for n, a in zip(ref, outs[f])}
            med = statistics.median(samples[f])
            rows.append(dict(channels=C, form=f, median_ms=med, min_ms=min(samples[f]),
                             ratio=med / base, max_abs_diff=diff, max_abs=scale))
            print(f"| C={C} | {f} | {med:.3f} ms | {med / base:.3f}x | "
                  f"dx {diff['dx']:.3g} dw {diff['dw']:.3g} |", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(device_kind=jax.devices()[0].device_kind, jax=jax.__version__,
                argv=sys.argv[1:], baseline=args.forms[0])
    (out / "gdn_conv_forms.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
