"""Time the plain-jnp gated delta rule references: chunked vs recurrent, forward and fwd+bwd.

    python benchmarks/gdr_reference.py                      # the three default shapes
    python benchmarks/gdr_reference.py --shape B=2,T=1024,H=4,K=64,V=128 --dtype float32
    python benchmarks/gdr_reference.py --small              # tiny shapes, a CPU smoke test

Each cell is the median of --iters timed calls after --warmup calls of one jitted function,
each ended with block_until_ready. fwd+bwd is the gradient of sum(o) w.r.t. q, k, v, g, beta.
Writes a table to stdout and JSON (with jax version, device kind, git SHA) to --out.
A cell that fails (say, out of memory) is recorded with its error and reported, not retried.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from kernels.gated_delta_rule import chunk_gated_delta_rule  # noqa: E402

DEFAULT_SHAPES = ["B=4,T=4096,H=16,K=128,V=128", "B=8,T=2048,H=8,K=128,V=128",
                  "B=1,T=8192,H=32,K=128,V=128"]
SMALL_SHAPES = ["B=1,T=200,H=2,K=32,V=32", "B=2,T=128,H=1,HV=2,K=16,V=48"]
DTYPES = {"bfloat16": jnp.bfloat16, "bf16": jnp.bfloat16, "float32": jnp.float32,
          "fp32": jnp.float32}


def parse_shape(text: str) -> dict:
    fields = dict(part.split("=") for part in text.split(","))
    unknown = set(fields) - {"B", "T", "H", "HV", "K", "V"}
    if unknown:
        raise SystemExit(f"--shape {text!r}: unknown fields {sorted(unknown)}")
    shape = {key: int(val) for key, val in fields.items()}
    shape.setdefault("HV", shape["H"])
    return shape


def make_inputs(shape: dict, dtype, seed: int = 0):
    B, T, H, HV, K, V = (shape[x] for x in ("B", "T", "H", "HV", "K", "V"))
    keys = jax.random.split(jax.random.key(seed), 5)
    q = jax.random.normal(keys[0], (B, T, H, K), dtype)
    k = jax.random.normal(keys[1], (B, T, H, K), jnp.float32)
    k = (k / jnp.linalg.norm(k, axis=-1, keepdims=True)).astype(dtype)
    v = jax.random.normal(keys[2], (B, T, HV, V), dtype)
    g = -jax.random.uniform(keys[3], (B, T, HV), jnp.float32, 0.0, 0.5).astype(dtype)
    beta = jax.random.uniform(keys[4], (B, T, HV), jnp.float32, 0.0, 2.0).astype(dtype)
    return q, k, v, g, beta


def build(impl: str, mode: str, chunk_size: int):
    def fwd(q, k, v, g, beta):
        return chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=chunk_size,
                                      implementation=impl)[0]

    if mode == "fwd":
        return jax.jit(fwd)

    def loss(*args):
        return jnp.sum(fwd(*args).astype(jnp.float32))

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4)))


def time_ms(fn, args, warmup: int, iters: int) -> dict:
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        samples.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(samples), "min_ms": min(samples),
            "samples_ms": samples}


def git_sha():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", action="append", help="B=..,T=..,H=..,K=..,V=..[,HV=..]; repeatable")
    p.add_argument("--small", action="store_true", help="tiny shapes for a CPU smoke test")
    p.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    p.add_argument("--impl", nargs="+", default=["chunked", "recurrent"])
    p.add_argument("--mode", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--out", default=str(REPO_ROOT / "benchmarks/results/gdr_reference.json"))
    args = p.parse_args(argv)
    if args.iters < 10:
        p.error("--iters must be at least 10 (the reported value is a median)")

    shapes = [parse_shape(s) for s in (args.shape or (SMALL_SHAPES if args.small
                                                      else DEFAULT_SHAPES))]
    dtype = DTYPES[args.dtype]
    device = jax.devices()[0]
    rows = []
    print(f"jax {jax.__version__} on {device.device_kind} ({device.platform}), "
          f"inputs {jnp.dtype(dtype).name}, chunk_size {args.chunk_size}")
    print(f"{'shape':<34} {'impl':<10} {'mode':<8} {'median ms':>10} {'min ms':>10}")
    for shape in shapes:
        inputs = make_inputs(shape, dtype)
        label = ",".join(f"{k}={v}" for k, v in shape.items())
        for impl in args.impl:
            for mode in args.mode:
                row = {"shape": shape, "impl": impl, "mode": mode}
                try:
                    row.update(time_ms(build(impl, mode, args.chunk_size), inputs,
                                       args.warmup, args.iters))
                    print(f"{label:<34} {impl:<10} {mode:<8} {row['median_ms']:>10.3f} "
                          f"{row['min_ms']:>10.3f}", flush=True)
                except Exception as exc:  # recorded in the results, not hidden
                    row["error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
                    print(f"{label:<34} {impl:<10} {mode:<8} FAILED {row['error'][:120]}",
                          flush=True)
                rows.append(row)

    result = {
        "benchmark": "gdr_reference",
        "jax_version": jax.__version__,
        "device_kind": device.device_kind,
        "platform": device.platform,
        "git_sha": git_sha(),
        "dtype": jnp.dtype(dtype).name,
        "chunk_size": args.chunk_size,
        "warmup": args.warmup,
        "iters": args.iters,
        "matmul_precision": str(jax.config.jax_default_matmul_precision),
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
