"""One Gated DeltaNet layer (`hybrid_jax.models.gdn.GatedDeltaNet`) at a size preset's dims,
forward+backward, timed on this tree: a cheaper check of a layer-level change than the 370M
training step (one layer compiles in seconds).

    python benchmarks/gdn_layer.py --size 370m --out /tmp/layer        # on a GPU

The loss is sum(y * c) for a fixed random c; gradients of every parameter and of x, jitted.
Reports the median wall ms of `--iters` samples of `--inner` calls and the GPU time a call
from a profiler trace (NaN without a GPU), and writes OUT/gdn_layer.json. To compare two trees,
run it in each (export one with `git archive`) on the same machine. `--profile N` also lists
the N costliest kernels and source lines of ours (XLA's kernels traced to the line that built
them through the compiled HLO: `profile_summary.summarize`), the XLA glue between the kernels
included.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from benchmarks.gdn_kernel_compare import sample_ms  # noqa: E402
from benchmarks.profile_summary import device_ms, summarize, trace_calls  # noqa: E402


def layer_step(size: str, batch: int, seq_len: int):
    """(jitted fn(params, x) -> (loss, grads), params, x)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from hybrid_jax.models.gdn import GatedDeltaNet
    from hybrid_jax.presets import get_preset

    cfg = get_preset(f"hybrid_{size}")
    graph, params = nnx.split(GatedDeltaNet(cfg, rngs=nnx.Rngs(0)))
    dt = jnp.dtype(cfg.compute_dtype)
    kx, kc = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (batch, seq_len, cfg.d_model), dt)
    c = jax.random.normal(kc, x.shape, jnp.float32)

    def loss(params, x):
        y = nnx.merge(graph, params)(x)
        return jnp.sum(y.astype(jnp.float32) * c)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))), params, x


def profile(fn, args, calls, top, log_dir, ms):
    """The kernels and source lines of `calls` traced calls, the costliest `top` of each,
    printed and returned (per call)."""
    hlo_text = fn.lower(*args).compile().as_text()
    trace_calls(fn, args, calls, log_dir)
    s = summarize(log_dir, calls, ms * 1e-3, top=top, hlo_text=hlo_text, root=f"{REPO_ROOT}/")
    print(f"kernels {1e3 * s['kernel_s_per_step']:.3f} ms a call")
    for r in s["top_kernels"]:
        print(f"  {r['ms_per_step']:8.4f} ms {100 * r['share']:5.1f}%  {r['name'][:100]}")
    for r in s["top_lines"]:
        print(f"  {r['ms_per_step']:8.4f} ms {100 * r['share']:5.1f}%  {r['pass']}  "
              f"{r['name'][:100]}")
    return {k: s[k] for k in ("kernel_s_per_step", "by_kind", "top_kernels", "top_lines")}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="370m")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--inner", type=int, default=10)
    p.add_argument("--calls", type=int, default=10, help="calls a profiler trace covers")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="list the N costliest kernels and source lines of a traced call")
    p.add_argument("--label", default="this tree")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    import jax
    fn, params, x = layer_step(args.size, args.batch, args.seq_len)
    loss = float(jax.block_until_ready(fn(params, x))[0])
    samples = [sample_ms(fn, (params, x), args.inner) for _ in range(args.iters)]
    row = dict(label=args.label, size=args.size, batch=args.batch, seq_len=args.seq_len,
               median_ms=statistics.median(samples), min_ms=min(samples), loss=loss,
               device_kind=jax.devices()[0].device_kind, jax=jax.__version__)
    if args.profile:  # its trace also gives the GPU time: the same sum over the same calls
        with tempfile.TemporaryDirectory(prefix="gdn_layer_trace_") as trace_dir:
            row["profile"] = profile(fn, (params, x), args.calls, args.profile, trace_dir,
                                     row["median_ms"])
        kernel_s = row["profile"]["kernel_s_per_step"]
        row["device_ms"] = 1e3 * kernel_s if kernel_s else float("nan")  # no GPU: no events
    else:
        row["device_ms"] = device_ms(fn, (params, x), args.calls)
    print(f"| {args.label} | {row['median_ms']:.3f} ms | GPU {row['device_ms']:.3f} ms | "
          f"loss {loss:.6g} |", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gdn_layer.json").write_text(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
