"""Training throughput (tokens/s) and MFU per family and size, through the real train step.

    python benchmarks/train_throughput.py --out results/throughput.json
    python benchmarks/train_throughput.py --sizes 100m --families hybrid --batch 16 --vocab 8192
    python benchmarks/train_throughput.py --tiny          # CPU smoke test (seconds)

Each row builds the run's program exactly as `hybrid-jax train` does (hybrid_jax.train.program:
same mesh, shardings, optimizer, donated jitted step), feeds random tokens (throughput does not
depend on their values), runs --warmup steps (compilation), then times --steps steps. MFU is
train_flops_per_token x tokens/s / (peak bf16 FLOP/s x devices), null where the peak is unknown
(CPU). Rows that fail (e.g. out of memory) are recorded with their error and the rest go on.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
import traceback
from pathlib import Path

import jax
import numpy as np

from hybrid_jax.flops import param_count, train_flops_per_token
from hybrid_jax.presets import get_preset
from hybrid_jax.train import runinfo
from hybrid_jax.train.config import RunConfig, load_config
from hybrid_jax.train.loop import check_fits
from hybrid_jax.train.metrics import mfu, peak_flops
from hybrid_jax.train.program import build_program

REPO = Path(__file__).resolve().parent.parent


def bench_config(family: str, size: str, args) -> RunConfig:
    preset = f"{family}_{size}"
    model = {"vocab_size": args.vocab} if args.vocab else {}
    if args.dtype:
        model["compute_dtype"] = args.dtype
    if args.gdn_implementation:
        model["gdn_implementation"] = args.gdn_implementation
    if args.gdn_precision:
        model["gdn_precision"] = args.gdn_precision
    if args.unembed_grad_dtype:
        model["unembed_grad_dtype"] = args.unembed_grad_dtype
    steps = args.warmup + args.steps
    return load_config({"model": get_preset(preset, **model)}, [
        f"train.name=bench-{preset}", f"train.global_batch={args.batch}",
        f"train.seq_len={args.seq_len}", f"train.micro_batches={args.micro_batches}",
        f"train.tokens={steps * args.batch * args.seq_len}", "schedule.kind=constant",
        f"mesh.data={args.mesh[0]}", f"mesh.fsdp={args.mesh[1]}", f"mesh.tensor={args.mesh[2]}"])


def bench_one(cfg: RunConfig, args) -> dict:
    prog = build_program(cfg, check_fits(cfg, jax.device_count()))
    B, T = cfg.train.global_batch, cfg.train.seq_len
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(2):  # alternate two batches so nothing is cached between steps
        tokens = rng.integers(0, cfg.model.vocab_size, (B, T + 1), dtype=np.int32)
        host = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
                "loss_mask": np.ones((B, T), np.float32)}
        batches.append(jax.device_put(host, prog.batch_sharding))
    state = prog.init()
    t0 = time.perf_counter()
    for i in range(args.warmup):
        state, metrics = prog.step(state, batches[i % 2])
    jax.block_until_ready(metrics)
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(args.steps):
        state, metrics = prog.step(state, batches[i % 2])
    jax.block_until_ready(metrics)
    elapsed = time.perf_counter() - t0
    profile = None
    if args.profile:  # after the timing, so tracing overhead never touches the numbers
        from profile_summary import format_summary, summarize  # this script's folder

        trace_dir = args.profile / cfg.train.name
        trace_dir.mkdir(parents=True, exist_ok=True)
        # the step's optimized HLO names the source line of each XLA kernel, which a trace of
        # CUDA graphs does not (profile_summary.py); the compile is a cache hit
        hlo_text = prog.step.lower(state, batches[0]).compile().as_text()
        with gzip.open(trace_dir / "step_hlo.txt.gz", "wt") as f:
            f.write(hlo_text)
        with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
            for i in range(args.profile_steps):
                state, metrics = prog.step(state, batches[i % 2])
            jax.block_until_ready(metrics)
        profile = summarize(trace_dir, args.profile_steps, elapsed / args.steps,
                            hlo_text=hlo_text, root=f"{REPO}/")
        print(format_summary(profile), flush=True)
    tokens_per_s = args.steps * B * T / elapsed
    fpt = train_flops_per_token(cfg.model, T)
    device_kind = jax.devices()[0].device_kind
    pc = param_count(cfg.model)
    return {"family": cfg.model.family, "params_total": pc.total,
            "params_non_embedding": pc.non_embedding, "seq_len": T, "global_batch": B,
            "micro_batches": cfg.train.micro_batches, "compute_dtype": cfg.model.compute_dtype,
            "unembed_grad_dtype": cfg.model.unembed_grad_dtype,
            "gdn_precision": runinfo.implementations(cfg.model).get("gdn_precision"),
            "step_time_s": elapsed / args.steps, "tokens_per_s": tokens_per_s,
            "train_flops_per_token": fpt,
            "mfu": mfu(fpt, tokens_per_s, device_kind, jax.device_count()),
            "warmup_s": warmup_s, "final_loss": float(metrics["loss"]),
            "implementations": runinfo.implementations(cfg.model), "profile": profile}


def format_table(rows: list[dict]) -> str:
    head = (f"{'preset':<18}{'N total':>10}{'warmup s':>10}{'step ms':>10}{'tokens/s':>12}"
            f"{'MFU':>8}  kernels")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['preset']:<18}  failed: {r['error'][:80]}")
            continue
        m = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        lines.append(f"{r['preset']:<18}{r['params_total'] / 1e6:>9.1f}M{r['warmup_s']:>10.1f}"
                     f"{1e3 * r['step_time_s']:>10.1f}{r['tokens_per_s']:>12,.0f}{m:>8}  "
                     f"{r['implementations']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", default="transformer,hybrid,gdn")
    p.add_argument("--sizes", default="100m,370m")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch", type=int, default=8, help="global batch in sequences")
    p.add_argument("--micro-batches", type=int, default=1)
    p.add_argument("--vocab", type=int, default=None, help="override the presets' vocab size")
    p.add_argument("--dtype", default=None, help="compute dtype (default: the preset's, bf16)")
    p.add_argument("--gdn-implementation", default=None,
                   help="auto, recurrent, chunked, pallas_gpu or pallas_tpu")
    p.add_argument("--gdn-precision", default=None, choices=("auto", "highest", "default"))
    p.add_argument("--unembed-grad-dtype", default=None, choices=("compute", "float32"),
                   help="float32: the unembedding's backward as plain autodiff (the baseline "
                        "for the bf16 backward; models/lm.py)")
    p.add_argument("--mesh", type=lambda s: tuple(int(x) for x in s.split(",")),
                   default=(-1, 1, 1), help="data,fsdp,tensor (default -1,1,1)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--tiny", action="store_true",
                   help="tiny presets, seq 64, batch 8, 3 steps: a CPU smoke test")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="after timing, trace --profile-steps steps into DIR and summarise where "
                   "the device time goes, by kind, layer and source line "
                   "(benchmarks/profile_summary.py; the step's HLO is saved beside the trace)")
    p.add_argument("--profile-steps", type=int, default=3)
    args = p.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        p.error("--warmup and --steps must be at least 1")
    if args.tiny:
        args.sizes, args.seq_len, args.batch, args.steps, args.warmup = "tiny", 64, 8, 3, 1
    device_kind = jax.devices()[0].device_kind
    print(f"{jax.device_count()} x {device_kind} ({jax.default_backend()}), peak bf16 "
          f"{peak_flops(device_kind) or 'unknown'} FLOP/s per device", flush=True)
    rows = []
    for size in args.sizes.split(","):
        for family in args.families.split(","):
            preset = f"{family}_{size}"
            print(f"{preset}: compiling and warming up ...", flush=True)
            try:
                row = {"preset": preset, **bench_one(bench_config(family, size, args), args)}
            except Exception as e:  # noqa: BLE001 - one failing size (OOM) must not end the table
                traceback.print_exc()
                row = {"preset": preset, "error": f"{type(e).__name__}: {e}"}
            rows.append(row)
            print(format_table([row]).splitlines()[-1], flush=True)
            if args.out:  # after every row, so a run cut short keeps what it measured
                write_json(args, rows)
            jax.clear_caches()
    print("\n" + format_table(rows))
    if args.out:
        print(f"wrote {args.out}")
    return 1 if any("error" in r for r in rows) else 0


def write_json(args, rows: list[dict]) -> None:
    result = {"devices": runinfo.devices(), "versions": runinfo.versions(),
              "git": runinfo.git_state(), "args": {k: v for k, v in vars(args).items()
                                                   if k != "out"}, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    tmp.replace(args.out)


if __name__ == "__main__":
    sys.exit(main())
