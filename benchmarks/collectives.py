"""The collectives of one compiled train step: how many bytes each kind moves, and the largest.

    python benchmarks/collectives.py --families transformer,hybrid --size 370m --mesh 1,2,1
    python benchmarks/collectives.py --size tiny --mesh 1,2,1 --batch 4 --seq-len 64   # seconds

Compiles the step that `hybrid-jax train` runs (hybrid_jax.train.program, abstract state: no
parameter is allocated) for a mesh of fake CPU devices and reads the partitioned HLO, so a
sharding plan can be checked on a laptop before a GPU or TPU job spends time on it. The byte
counts are each collective's output shapes (what one device holds after it), summed over the
ops of one step; they say where data moves, not how long it takes. XLA's CPU and GPU
compilers share the SPMD partitioner, but later passes differ (the GPU one turns some
all-reduces into reduce-scatters, for one), so take GPU counts from a GPU's HLO.

Why this exists: under fsdp=2 at 370M the step kept the residual stream unsharded and
all-reduced activations over fsdp's split of the model dimension, the [16, 2048, 100352] fp32
logits among them: 102 GB (transformer) and 110 GB (hybrid) of collectives a step against
5.0 and 5.4 GB now, and 56% / 66% scaling efficiency on 2 x H200
(experiments/LOG.md, fifth session). `hybrid_jax.sharding.constrain` fixed it.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_throughput's bench_config

KINDS = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
_OP = re.compile(r"= (\(?[a-z0-9]+\[[^=]*?) (" + "|".join(KINDS) + r")(?:-start)?\(")
_COMMENT = re.compile(r"/\*.*?\*/")
_SHAPE = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4,
          "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8}


def collectives(hlo_text: str) -> list[dict]:
    """One dict per collective op in an HLO module's text: kind, output bytes (all arrays, and
    the largest), output shapes. An async pair (-start / -done) counts once, at its start."""
    ops = []
    for line in hlo_text.splitlines():
        m = _OP.search(_COMMENT.sub("", line))  # long tuples carry /*index=5*/ markers
        if not m:
            continue
        shapes = _SHAPE.findall(m.group(1))
        unknown = [dt for dt, _ in shapes if dt not in _BYTES]
        if unknown:
            raise ValueError(f"element type {unknown[0]!r} has no byte size here: {line.strip()}")
        sizes = [_BYTES[dt] * math.prod(int(d) for d in dims.split(",") if d)
                 for dt, dims in shapes]
        # XLA combines small collectives into one op over a tuple: its largest array says
        # what kind of data moves (a weight, a gradient, an activation), its sum how much.
        ops.append({"kind": m.group(2), "bytes": sum(sizes), "largest_array_bytes": max(sizes),
                    "shapes": [f"{dt}[{dims}]" for dt, dims in shapes]})
    return ops


def summarize(ops: list[dict], top: int) -> dict:
    by_kind = collections.defaultdict(lambda: {"ops": 0, "bytes": 0})
    for op in ops:
        by_kind[op["kind"]]["ops"] += 1
        by_kind[op["kind"]]["bytes"] += op["bytes"]
    return {"total_bytes": sum(op["bytes"] for op in ops), "by_kind": dict(by_kind),
            "largest": sorted(ops, key=lambda op: -op["bytes"])[:top]}


def step_hlo(family: str, size: str, mesh: tuple[int, int, int], batch: int, seq_len: int) -> str:
    import jax
    import jax.numpy as jnp

    from hybrid_jax.train.program import build_program
    from train_throughput import bench_config

    args = argparse.Namespace(vocab=None, dtype=None, gdn_implementation=None,
                              gdn_precision=None, unembed_grad_dtype=None, warmup=1, steps=1,
                              batch=batch, seq_len=seq_len, micro_batches=1, mesh=mesh)
    prog = build_program(bench_config(family, size, args), mesh)
    sds = lambda dt: jax.ShapeDtypeStruct((batch, seq_len), dt, sharding=prog.batch_sharding)
    batch_abstract = {"inputs": sds(jnp.int32), "targets": sds(jnp.int32),
                      "loss_mask": sds(jnp.float32)}
    return prog.step.lower(prog.abstract_state, batch_abstract).compile().as_text()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", default="transformer,hybrid")
    p.add_argument("--size", default="370m")
    p.add_argument("--mesh", default="1,2,1", help="data,fsdp,tensor of fake CPU devices")
    p.add_argument("--batch", type=int, default=16, help="global batch in sequences")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--top", type=int, default=6, help="how many of the largest ops to list")
    p.add_argument("--out", type=Path, help="write the summaries as JSON here")
    args = p.parse_args(argv)
    mesh = tuple(int(x) for x in args.mesh.split(","))
    if len(mesh) != 3 or any(n < 1 for n in mesh):
        p.error(f"--mesh must be three positive sizes data,fsdp,tensor, got {args.mesh!r}")
    # Before jax is imported: the fake devices and the CPU backend.
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_"
                               f"device_count={math.prod(mesh)}").strip()
    results = {}
    for family in args.families.split(","):
        t0 = time.perf_counter()
        s = summarize(collectives(step_hlo(family, args.size, mesh, args.batch, args.seq_len)),
                      args.top)
        results[family] = s
        print(f"{family}_{args.size}, mesh {args.mesh}, batch {args.batch} x {args.seq_len} "
              f"(compiled in {time.perf_counter() - t0:.0f} s): "
              f"{s['total_bytes'] / 1e9:.3f} GB of collectives a step")
        for kind, k in sorted(s["by_kind"].items()):
            print(f"  {kind:<20} {k['ops']:5d} ops {k['bytes'] / 1e9:9.3f} GB")
        for op in s["largest"]:
            shapes = " ".join(op["shapes"][:3])
            more = len(op["shapes"]) - 3
            print(f"    {op['bytes'] / 1e6:10.1f} MB  {op['kind']:<16} {shapes}"
                  + (f" and {more} more arrays" if more > 0 else ""))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)},
                                        "results": results}, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
