"""Where the time goes inside a Mosaic GPU kernel of the gated delta rule: each ablation
removes one part of a kernel (its loads, a phase, rounds of the inverse, ...), and the
ablated kernels are timed alone, interleaved with the unchanged one, at one shape.

    python benchmarks/gdn_kernel_ablate.py --out /tmp/ablate                # on a GPU
    python benchmarks/gdn_kernel_ablate.py --kernel grads --ablation "no loads" --out ...

An ablated kernel's outputs are wrong; only its time means something. The unchanged time
minus an ablated one is what that part costs where nothing hides it; "no loads" against
"loads only" also says how much of the loads' time the kernel already overlaps with its
compute. Ablations are text edits of the kernel module's source, each of which must match
exactly once (or as many times as it says): `variant` raises when an edit of a kernel leaves
one without its matches, and tests/benchmarks/test_gdn_kernel_ablate.py builds every variant
on CPU so that the table stays in step with the kernels. Writes OUT/gdn_ablate.json and
OUT/gdn_ablate.md.
"""

import argparse
import json
import statistics
import sys
import types
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from benchmarks.gdn_kernel import label, parse_shape  # noqa: E402
from benchmarks.gdn_kernel_compare import interleaved_samples  # noqa: E402

GPU = REPO_ROOT / "kernels/gated_delta_rule/gpu"
C = 64
SCALE = 0.088  # a q scale as the op passes it (1/sqrt(128)); any Python number does

_ROUNDS = "    while s < C:\n"
_UW = ("    times_t(v_s, beta, u_g.at[i, rows])\n    k = times_t(k_s, beta * E, w_g.at[i, rows])\n",
       "    k = plgpu.load(k_s, layout=WG).astype(f32)\n")
_QD_KD = ("    store(q_s, per_row(scale * E, q.shape[1]) * q, qd_g.at[i, rows])\n"
          "    plgpu.wait_smem_to_gmem(0, wait_read_only=True)  # qd has left q_s\n"
          "    store(q_s, per_row(F, k.shape[1]) * k, kd_g.at[i, rows])\n", "")
_NO_LOADS = [("            plgpu.copy_gmem_to_smem(src, dst, bar)\n", "            pass\n"),
             ("        plgpu.barrier_wait(bar_s)\n", "", 2),
             ("        plgpu.barrier_wait(bar_ds)\n", "", 2),
             ("        plgpu.barrier_wait(bar2)\n", "", 2)]
_NO_PHASE2 = [("        pg.chain(daqk, tiles, h, scale=scale)\n", ""),
              ("        pg.tiles(tiles, h,", "        0 and pg.tiles(tiles, h,")]
_NO_PHASE1 = [("        dw, dqd = wgmma_products(((du_s, st_s.T), (do_s, st_s.T)), "
               "((C, Kp), (C, Kp)))\n        store_tile(dw_s, -dw)\n"
               "        store_tile(dqd_s, dqd)\n", ""),
              ("        (daqk,) = wgmma_products(((do_s, delta_s.T),), ((C, C),))\n",
               "        daqk = jnp.zeros((C, C), f32)\n"),
              ("        (dkd,) = wgmma_products(((delta_s, dst_s.T),), ((C, Kp),))\n"
               "        store_tile(dkd_s, dkd)\n", ""),
              ("            S, dS = (plgpu.load(r.at[:, cols], layout=WG).astype(f32) for r in "
               "(st_s, dst_s))\n            dgc = dgc + jnp.sum(dS * S, axis=1)\n",
               "            pass\n")]

# kernel -> (module file, {ablation: [(old, new), ...]})
ABLATIONS = {
    "prep_fwd": ("prep_mosaic.py", {
        "inverse: no rounds": [(_ROUNDS, "    while s < 2:\n")],
        "inverse: 2 of 5 rounds": [(_ROUNDS, "    while s < 8:\n")],
        "inverse: 4 of 5 rounds": [(_ROUNDS, "    while s < 32:\n")],
        "inverse: no transposed load": [("X_T = plgpu.load(x_s.T, layout=WG)",
                                         "X_T = plgpu.load(x_s, layout=WG)")],
        "no u, w": [_UW],
        "T and aqk only": [_UW, _QD_KD],
        "T and aqk only, no rounds": [(_ROUNDS, "    while s < 2:\n"), _UW, _QD_KD],
    }),
    "grads": ("grad_mosaic.py", {
        "no loads": _NO_LOADS,
        "no phase 2": _NO_PHASE2,
        "loads only": _NO_PHASE1 + _NO_PHASE2,
        "phase 1 only, no loads": _NO_LOADS + _NO_PHASE2,
    }),
}


def variant(kernel, ablation):
    """The kernel's module with the ablation's edits applied (None: unchanged), built afresh."""
    path, table = ABLATIONS[kernel]
    src = (GPU / path).read_text()
    for old, new, *count in table[ablation] if ablation else ():
        want = count[0] if count else 1
        if src.count(old) != want:
            raise ValueError(f"ablation {ablation!r} of {kernel}: {src.count(old)} matches "
                             f"in {path} for {old.strip()[:60]!r}, expected {want}")
        src = src.replace(old, new)
    module = types.ModuleType(f"ablated_{kernel}")
    exec(compile(src, str(GPU / path), "exec"), module.__dict__)
    return module


def inputs(kernel, s, seed=0):
    """Random operands of the shapes and dtypes the op hands the kernel at shape s."""
    import jax
    import jax.numpy as jnp
    from kernels.gated_delta_rule.gpu.config import padded_k
    BH, Tp, Kp, V = s["B"] * s["HV"], -(-s["T"] // C) * C, padded_k(s["K"]), s["V"]
    ks = iter(jax.random.split(jax.random.key(seed), 16))

    def rnd(*shape):
        return (0.1 * jax.random.normal(next(ks), shape)).astype(jnp.bfloat16)

    g = -jax.random.uniform(next(ks), (BH, Tp), jnp.float32, 0.0, 0.5)
    G = jnp.cumsum(g.reshape(BH, -1, C), -1).reshape(BH, Tp)
    gs = jnp.stack([G, G[..., ::-1]], 1)  # G and a stand-in for logF: any decays time alike
    beta = jax.random.uniform(next(ks), (BH, Tp), jnp.float32, 0.0, 1.0)
    q, k, v = rnd(BH, Tp, Kp), rnd(BH, Tp, Kp), rnd(BH, Tp, V)
    if kernel == "prep_fwd":
        return q, k, v, gs, beta
    N = Tp // C
    return (q, k, v, gs, beta, rnd(BH, Tp, C), rnd(BH, N * Kp, V), rnd(BH, N * Kp, V),
            rnd(BH, Tp, V), rnd(BH, Tp, V), rnd(BH, Tp, V))


def build(kernel, module, interpret):
    import jax
    kw = dict(C=C, scale=SCALE, interpret=interpret)
    if kernel == "prep_fwd":
        return jax.jit(lambda *a: module.prep_fwd(*a, save_inverse=True, **kw))
    return jax.jit(lambda *a: module.chunk_grads(*a, **kw))


def ablate(kernel, ablations, s, args):
    """Rows for one kernel: the unchanged kernel and each ablation, timed interleaved."""
    import jax
    interpret = None
    if args.interpret:
        from jax.experimental.pallas import mosaic_gpu as plgpu
        interpret = plgpu.InterpretGPUParams()
    call_args = inputs(kernel, s)
    fns, rows = {}, []
    for name in [None, *ablations]:
        try:
            fns[name] = build(kernel, variant(kernel, name), interpret)
            for _ in range(1 + args.warmup):
                jax.block_until_ready(fns[name](*call_args))
        except Exception as exc:  # recorded; the other variants go on
            fns.pop(name, None)
            rows.append({"kernel": kernel, "ablation": name, "error": repr(exc)[:500]})
    samples = interleaved_samples(fns, call_args, args.iters, args.inner)
    base = statistics.median(samples[None]) if None in samples else None
    for name, xs in samples.items():
        med = statistics.median(xs)
        rows.append({"kernel": kernel, "ablation": name, "shape": s, "median_ms": med,
                     "min_ms": min(xs), "removed_ms": None if base is None else base - med})
    return rows


def table(rows, args):
    lines = [f"Each kernel alone: median (min) of {args.iters} samples of {args.inner} calls, "
             "interleaved; removed = the unchanged kernel's median minus the ablated one's", "",
             "| shape | kernel | ablation | ms | removed ms |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        name = r["ablation"] or "(unchanged)"
        if "error" in r:
            lines.append(f"| | {r['kernel']} | {name} | FAILED: {r['error'][:100]} | |")
            continue
        removed = "" if r["ablation"] is None else f"{r['removed_ms']:.3f}"
        lines.append(f"| {label(r['shape'])} | {r['kernel']} | {name} | {r['median_ms']:.3f} "
                     f"({r['min_ms']:.3f}) | {removed} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kernel", nargs="+", default=list(ABLATIONS), choices=list(ABLATIONS))
    p.add_argument("--ablation", nargs="+", help="only these ablations (default: all)")
    p.add_argument("--shape", default="B=4,T=4096,H=16,K=128,V=128",
                   help="B=..,T=..,H=..,K=..,V=..[,HV=..] (grads: V <= 128)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=20, help="samples of each, interleaved")
    p.add_argument("--inner", type=int, default=5)
    p.add_argument("--interpret", action="store_true",
                   help="the Mosaic GPU interpreter (a CPU smoke test, not a timing)")
    p.add_argument("--out", required=True, help="directory for gdn_ablate.json and .md")
    args = p.parse_args(argv)
    s = parse_shape(args.shape)
    unknown = set(args.ablation or ()) - set().union(*(ABLATIONS[k][1] for k in args.kernel))
    if unknown:
        p.error(f"unknown ablation(s) {sorted(unknown)}; the kernels': "
                f"{ {k: list(ABLATIONS[k][1]) for k in args.kernel} }")
    from kernels.gated_delta_rule.gpu.grad_mosaic import EARLY_V_MAX
    if "grads" in args.kernel and s["V"] > EARLY_V_MAX:
        p.error(f"the grads ablations need V <= {EARLY_V_MAX} (phase 2's inputs loaded with "
                f"phase 1's); got V={s['V']}")
    import jax
    rows = []
    for kernel in args.kernel:
        names = [a for a in ABLATIONS[kernel][1] if not args.ablation or a in args.ablation]
        rows += ablate(kernel, names, s, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"device_kind": jax.devices()[0].device_kind, "jax": jax.__version__,
            "argv": sys.argv[1:] if argv is None else argv}
    (out / "gdn_ablate.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    text = table(rows, args)
    (out / "gdn_ablate.md").write_text(text + "\n")
    print(text)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
