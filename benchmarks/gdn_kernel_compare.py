"""This tree's gated delta rule against another commit's, in one process: forward+backward (and
with --mode fwd the forward alone), timed interleaved, and the outputs compared.

    bash benchmarks/export_kernels.sh 5a705db build/gdr_before   # once, where git is
    python benchmarks/gdn_kernel_compare.py --before-root build/gdr_before --out /tmp/cmp

`export_kernels.sh` writes the other commit's `kernels/` package as `kernels_before` (imports
renamed), so both import side by side. Each implementation is the API's
`chunk_gated_delta_rule(..., implementation=--implementation, precision=--precision)` on
gdn_kernel.py's inputs (bf16 q, k, v, beta, fp32 g) and loss (sum(o * dO)), jitted with its
gradients w.r.t. q, k, v, g, beta ("fwd+bwd"), or o alone ("fwd": no residuals saved). After
compiling and warming up both, timing samples (each --inner back-to-back calls ended by
block_until_ready) alternate between the two, starting with either in turn, so that clock and
thermal drift fall on both alike. Writes OUT/gdn_compare.json and a table OUT/gdn_compare.md:
median and min ms, after/before ratio, and the largest difference of o and of each gradient
between the two (0 where both run the same kernels on the same inputs).
"""

import argparse
import importlib
import json
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from benchmarks.gdn_kernel import MODES, jax_inputs, label, parse_shape  # noqa: E402
from benchmarks.gdn_kernel_variants import SHAPES  # noqa: E402


def loss_and_grads(api, implementation, precision, l2norm):
    import jax
    import jax.numpy as jnp

    def loss(q, k, v, g, beta, do):
        o, _ = api.chunk_gated_delta_rule(q, k, v, g, beta, implementation=implementation,
                                          precision=precision, use_qk_l2norm=l2norm)
        return jnp.sum(o.astype(jnp.float32) * do.astype(jnp.float32)), o

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4), has_aux=True))


def forward(api, implementation, precision, l2norm):
    import jax
    return jax.jit(lambda q, k, v, g, beta: api.chunk_gated_delta_rule(
        q, k, v, g, beta, implementation=implementation, precision=precision,
        use_qk_l2norm=l2norm)[0])


def sample_ms(fn, args, inner):
    import jax
    t0 = time.perf_counter()
    for _ in range(inner):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) * 1e3 / inner


def interleaved_samples(fns, call_args, iters, inner):
    """{name: [ms, ...]}: `iters` samples of `inner` calls of each fn in `fns` (a dict), the
    order reversed every other round so that neither side always runs first."""
    order = list(fns)
    samples = {name: [] for name in order}
    for i in range(iters):
        for name in (order if i % 2 == 0 else order[::-1]):
            samples[name].append(sample_ms(fns[name], call_args, inner))
    return samples


def compare_shape(s, mode, apis, args):
    import jax
    import numpy as np
    inputs, do = jax_inputs(s)
    call_args = (*inputs, do) if mode == "fwd+bwd" else inputs
    build = loss_and_grads if mode == "fwd+bwd" else forward
    fns, outs, row = {}, {}, {"shape": s, "mode": mode}
    for name, api in apis.items():
        t0 = time.perf_counter()
        fns[name] = build(api, args.implementation, args.precision, args.qk_l2norm).lower(
            *call_args).compile()
        row[f"compile_s_{name}"] = time.perf_counter() - t0
        outs[name] = jax.block_until_ready(fns[name](*call_args))
        for _ in range(args.warmup):
            jax.block_until_ready(fns[name](*call_args))
    diff = lambda a, b: float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).max())
    if mode == "fwd":
        row["max_abs_diff"] = {"o": diff(outs["after"], outs["before"])}
    else:
        (grads_b, o_b), (grads_a, o_a) = outs["before"], outs["after"]
        row["max_abs_diff"] = {"o": diff(o_a, o_b), **{f"d{n}": diff(a, b) for n, a, b in
                                                         zip("qkvgb", grads_a, grads_b)}}
    samples = interleaved_samples(fns, call_args, args.iters, args.inner)
    for name, xs in samples.items():
        row[f"median_ms_{name}"], row[f"min_ms_{name}"] = statistics.median(xs), min(xs)
    row["ratio"] = row["median_ms_after"] / row["median_ms_before"]
    return row


def table(rows, args):
    lines = [f"implementation={args.implementation!r}, precision={args.precision!r}"
             f"{', use_qk_l2norm' if args.qk_l2norm else ''}: median "
             f"(min) of {args.iters} samples of {args.inner} calls each, interleaved", "",
             "| shape | mode | before ms | after ms | after/before | max abs diff (o, grads) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {label(r['shape'])} | {r['mode']} | FAILED: {r['error'][:120]} "
                         f"| | | |")
            continue
        d = max(r["max_abs_diff"].values())
        lines.append(f"| {label(r['shape'])} | {r['mode']} | {r['median_ms_before']:.3f} "
                     f"({r['min_ms_before']:.3f}) | {r['median_ms_after']:.3f} "
                     f"({r['min_ms_after']:.3f}) | {r['ratio']:.3f} | {d:.3g} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before-root", required=True,
                   help="a directory holding the package kernels_before (export_kernels.sh)")
    p.add_argument("--shape", action="append", help="B=..,T=..,H=..,K=..,V=..[,HV=..]")
    p.add_argument("--implementation", default="auto")
    p.add_argument("--precision", default="default", choices=("highest", "default"))
    p.add_argument("--mode", nargs="+", default=["fwd+bwd"], choices=MODES)
    p.add_argument("--qk-l2norm", action="store_true",
                   help="use_qk_l2norm=True, as the models call it")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=20, help="samples of each, interleaved")
    p.add_argument("--inner", type=int, default=3)
    p.add_argument("--out", required=True, help="directory for gdn_compare.json and .md")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(args.before_root).resolve()))
    apis = {"before": importlib.import_module("kernels_before.gated_delta_rule"),
            "after": importlib.import_module("kernels.gated_delta_rule")}
    for name, api in apis.items():
        print(f"{name}: {Path(api.__file__).parent}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import jax
    meta = {"device_kind": jax.devices()[0].device_kind, "jax": jax.__version__,
            "argv": sys.argv[1:]}
    rows = []
    for text in args.shape or SHAPES:
        s = parse_shape(text)
        for mode in args.mode:
            try:
                rows.append(compare_shape(s, mode, apis, args))
            except Exception as exc:  # recorded, and the next cell goes on
                rows.append({"shape": s, "mode": mode,
                             "error": f"{type(exc).__name__}: {exc}"[:2000]})
            print(table(rows[-1:], args).splitlines()[-1], flush=True)
            (out / "gdn_compare.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    text = table(rows, args)
    (out / "gdn_compare.md").write_text(f"{meta['device_kind']}, jax {meta['jax']}\n\n{text}\n")
    print(text)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
