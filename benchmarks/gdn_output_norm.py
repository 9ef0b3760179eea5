"""The GDN layer's output norm (`kernels.gated_rmsnorm`): XLA (and its derivative) against the
Pallas kernels, forward+backward at a size preset's GDN dims (o and gate [B, T, HV, V]), in
one process.

    python benchmarks/gdn_output_norm.py --size 370m --out /tmp/norm        # on a GPU

Each implementation runs as `jax.vjp` with a cotangent that depends on y, jitted; timing
samples alternate between the implementations (as gdn_kernel_compare.py does). Prints a table
and writes OUT/gdn_output_norm.json: median and min ms of each, the ratio to "xla", and the
largest difference of each gradient from "xla"'s. `--implementations xla` (or --interpret)
runs on a CPU host, for the tests; its timings mean nothing.

`--sweep-launch` then times each Triton kernel alone (forward, backward) at each launch of
`LAUNCHES` against XLA's forward or pullback alone (rows "sweep" of the JSON): how the default
launches were chosen, and how to check them on another card.
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
from benchmarks.gdn_kernel_compare import interleaved_samples, sample_ms  # noqa: E402

# (rows, warps) the sweep times: fewer rows a thread hold fewer registers (a [64, 128] fp32 tile
# is 64 registers a thread at 4 warps, and the backward holds several).
LAUNCHES = [dict(rows=r, warps=w) for r, w in ((32, 8), (64, 8), (32, 4), (16, 8), (64, 16))]


def operands(size: str, B: int, T: int):
    """(o, gate, scale) at the preset's GDN dims, random."""
    import jax
    import jax.numpy as jnp

    from hybrid_jax.presets import get_preset

    cfg = get_preset(f"hybrid_{size}")
    HV, V = cfg.gdn_v_heads, cfg.gdn_v_dim
    dt = jnp.dtype(cfg.compute_dtype)
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    o, g = (jax.random.normal(k, (B, T, HV, V), dt) for k in (k1, k2))
    return o, g, 1 + 0.1 * jax.random.normal(k3, (V,), jnp.float32)


def api(size: str):
    """(fn(o, gate, scale, implementation, interpret), reference fn(o, gate, scale),
    {"forward" | "backward": the Triton kernel, fn(o, gate, scale[, dy], interpret, **launch)})."""
    from hybrid_jax.presets import get_preset
    from kernels.gated_rmsnorm import gated_rmsnorm, gpu, reference

    cfg = get_preset(f"hybrid_{size}")
    eps, dt = cfg.gdn_norm_eps, cfg.compute_dtype
    return (functools.partial(gated_rmsnorm, eps=eps, out_dtype=dt),
            functools.partial(reference.gated_rmsnorm, eps=eps, out_dtype=dt),
            {"forward": lambda o, g, s, **kw: gpu.gated_rmsnorm_fwd(o, g, s, eps, dt, **kw),
             "backward": lambda o, g, s, dy, **kw: gpu.gated_rmsnorm_bwd(o, g, s, dy, eps, **kw)})


def max_abs_diffs(got, ref):
    import numpy as np
    return [float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))
            for a, b in zip(got, ref)]


def compare(args, fn, ops):
    """The row of forward+backward times, implementations interleaved."""
    import jax
    import jax.numpy as jnp

    def fwd_bwd(impl):
        def run(*ops):
            y, vjp = jax.vjp(lambda *a: fn(*a, implementation=impl, interpret=args.interpret),
                             *ops)
            return vjp(jnp.ones_like(y) * 0.01 + y * 0.5)
        return jax.jit(run)

    order = args.implementations
    fns = {i: fwd_bwd(i) for i in order}
    grads = {i: jax.block_until_ready(fns[i](*ops)) for i in order}
    samples = interleaved_samples(fns, ops, args.iters, args.inner)
    base = order[0]
    row = {"shape": list(ops[0].shape),
           "ms": {i: statistics.median(v) for i, v in samples.items()},
           "min_ms": {i: min(v) for i, v in samples.items()}}
    row["ratio_to_" + base] = {i: row["ms"][i] / row["ms"][base] for i in order}
    row["max_abs_diff_to_" + base] = {i: max_abs_diffs(grads[i], grads[base]) for i in order}
    print(f"| norm {tuple(ops[0].shape)} | "
          + " | ".join(f"{i} {row['ms'][i]:.3f} ms" for i in order) + " | "
          + " | ".join(f"{row['ratio_to_' + base][i]:.3f}x" for i in order[1:]) + " |",
          flush=True)
    return row


def sweep(args, ref_fn, kernels, ops):
    """Each Triton kernel alone at each launch of LAUNCHES against XLA's forward or pullback
    alone."""
    import jax

    rows = []
    for which, kernel in kernels.items():
        if which == "forward":
            xla, call = jax.jit(ref_fn), ops
        else:
            y = jax.eval_shape(ref_fn, *ops)
            dy = jax.random.normal(jax.random.key(1), y.shape, y.dtype)
            xla, call = jax.jit(lambda *a: jax.vjp(ref_fn, *a[:-1])[1](a[-1])), (*ops, dy)
        ref = jax.block_until_ready(xla(*call))
        base = statistics.median(sample_ms(xla, call, args.inner) for _ in range(args.iters))
        for launch in LAUNCHES:
            fn = jax.jit(functools.partial(kernel, interpret=args.interpret, **launch))
            got = jax.block_until_ready(fn(*call))
            ms = statistics.median(sample_ms(fn, call, args.inner) for _ in range(args.iters))
            name = ", ".join(f"{k}={v}" for k, v in launch.items())
            rows.append({"kernel": which, "launch": name, "ms": ms,
                         "xla_ms": base, "ratio_to_xla": ms / base,
                         "max_abs_diff_to_xla": max_abs_diffs(
                             got if which == "backward" else (got,),
                             ref if which == "backward" else (ref,))})
            print(f"| {which} | {name} | {ms:.3f} ms | xla {base:.3f} ms | "
                  f"{ms / base:.3f}x |", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="370m")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--implementations", nargs="+", default=["xla", "pallas_gpu"],
                   choices=("xla", "pallas_gpu"))
    p.add_argument("--interpret", action="store_true",
                   help="pallas_gpu's kernels in the interpreter (CPU tests)")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--inner", type=int, default=3)
    p.add_argument("--sweep-launch", action="store_true",
                   help="also time each Triton kernel alone at each launch of LAUNCHES")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    import jax

    fn, ref_fn, kernels = api(args.size)
    ops = operands(args.size, args.batch, args.seq_len)
    result = {"row": compare(args, fn, ops),
              "sweep": sweep(args, ref_fn, kernels, ops) if args.sweep_launch else []}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"device_kind": jax.devices()[0].device_kind, "jax": jax.__version__,
            "argv": sys.argv[1:] if argv is None else argv}
    (out / "gdn_output_norm.json").write_text(json.dumps({**meta, **result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
