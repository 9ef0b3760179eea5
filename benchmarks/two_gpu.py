"""Two GPUs: does data-parallel / fsdp training give the one-GPU loss, and how well does it scale?

    python benchmarks/two_gpu.py --out benchmarks/results/two_gpu      # on a 2-GPU host

1. Loss match. The same run (a config and a byte-level pycode store; fp32 compute so that
   only reduction order can differ) is trained three times through `hybrid-jax train`: on GPU 0
   alone (mesh 1,1,1), data-parallel over both GPUs (2,1,1) and fully sharded (1,2,1). Every
   step's loss is compared with the one-GPU run's: max |difference| and where it occurs.
2. Scaling. `train_throughput.py` for each family at --size, one GPU at --batch sequences, then
   both GPUs at 2 x --batch (weak scaling: the per-GPU batch is unchanged) with data=2 and with
   fsdp=2. Efficiency = tokens/s on two / (2 x tokens/s on one), all in this one job on this
   host's cards. The one-GPU rows are also profiled (--profile).

Writes match.json, scaling_{1gpu,data2,fsdp2}.json, summary.json and prints a table. On a host
lent in short calls, split it: `--skip scaling`, then `--skip match --scaling-runs 1gpu`, then
`--skip match --scaling-runs data2 fsdp2` (the last reads the one-GPU rows from --out).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere
from hybrid_jax.sweep.state import read_lines  # noqa: E402


def gpu_env(gpus: str) -> dict[str, str]:
    """Select GPUs; on a CPU host with fake devices (a smoke test), fake as many as GPUs."""
    env = {"CUDA_VISIBLE_DEVICES": gpus}
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        env["XLA_FLAGS"] = re.sub(r"(xla_force_host_platform_device_count=)\d+",
                                  rf"\g<1>{len(gpus.split(','))}", flags)
    return env


def sh(cmd: list[str], env_extra: dict[str, str], log: Path) -> None:
    env = {**os.environ, **env_extra,
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                         if p)}
    t0 = time.time()
    with open(log, "w") as f:
        code = subprocess.call(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    print(f"  {'ok' if code == 0 else f'FAILED ({code})'} in {time.time() - t0:.0f} s: "
          f"{' '.join(cmd[2:6])} ... (log {log})", flush=True)
    if code != 0:
        print(log.read_text()[-3000:], flush=True)
        raise SystemExit(f"command failed with exit {code}: {' '.join(cmd)}")


def losses(run_dir: Path) -> dict[int, float]:
    return {int(r["step"]): float(r["loss"]) for r in read_lines(run_dir / "metrics.jsonl")
            if r.get("kind") == "train"}


# fp32 compute alone does not make a GPU's matmuls fp32: XLA runs f32 dots as TF32 by default
# (the first 2 x H200 run's profile showed f32f32_tf32f32 GEMMs, and its loss curves differed by
# up to 3.7%). Full-precision dots leave reduction order as the only difference between meshes.
MATCH_ENV = {"JAX_DEFAULT_MATMUL_PRECISION": "highest"}


def loss_match(args, out: Path) -> dict:
    meshes = {"1gpu": ("1,1,1", "0"), "data2": ("2,1,1", "0,1"), "fsdp2": ("1,2,1", "0,1")}
    curves = {}
    for name, (mesh, gpus) in meshes.items():
        run_dir = out / "runs" / f"match-{name}"
        d, f, t = mesh.split(",")
        sh([sys.executable, "-m", "hybrid_jax.cli", "train", "--config", args.match_config,
            f"train.run_dir={run_dir}", f"mesh.data={d}", f"mesh.fsdp={f}", f"mesh.tensor={t}"],
           {**gpu_env(gpus), **MATCH_ENV}, out / f"match-{name}.log")
        curves[name] = losses(run_dir)
    ref = curves["1gpu"]
    result = {"config": args.match_config, "steps": len(ref),
              "first_loss": ref[min(ref)], "last_loss": ref[max(ref)]}
    for name in ("data2", "fsdp2"):
        diffs = {s: abs(curves[name][s] - ref[s]) for s in ref if s in curves[name]}
        if len(diffs) != len(ref):
            raise SystemExit(f"{name}: {len(diffs)} of {len(ref)} steps logged")
        worst = max(diffs, key=diffs.get)
        result[name] = {"max_abs_diff": diffs[worst], "at_step": worst,
                        "last_abs_diff": diffs[max(ref)],
                        "max_rel_diff": max(d / abs(ref[s]) for s, d in diffs.items())}
    (out / "match.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def scaling(args, out: Path) -> dict:
    runs = {"1gpu": ("1,1,1", "0", args.batch), "data2": ("2,1,1", "0,1", 2 * args.batch),
            "fsdp2": ("1,2,1", "0,1", 2 * args.batch)}
    rows = {}
    for name, (mesh, gpus, batch) in runs.items():
        if name not in args.scaling_runs:  # measured by an earlier call: reuse its rows
            prev = out / f"scaling_{name}.json"
            if prev.exists():
                rows[name] = {r["preset"]: r for r in json.loads(prev.read_text())["rows"]}
                print(f"  reusing {prev}", flush=True)
            else:
                rows[name] = {}
            continue
        families = args.families if name == "1gpu" else args.scaling_families
        cmd = [sys.executable, str(REPO / "benchmarks" / "train_throughput.py"),
               "--families", families, "--sizes", args.size, "--batch", str(batch),
               "--seq-len", str(args.seq_len), "--mesh", mesh, "--steps", str(args.steps),
               "--out", str(out / f"scaling_{name}.json")]
        if name == "1gpu" and not args.no_profile:
            cmd += ["--profile", str(out / "profile")]
        sh(cmd, gpu_env(gpus), out / f"scaling_{name}.log")
        rows[name] = {r["preset"]: r for r in
                      json.loads((out / f"scaling_{name}.json").read_text())["rows"]}
    table = []
    for preset, one in rows["1gpu"].items():  # efficiencies need this host's one-GPU rows
        entry = {"preset": preset, "1gpu_tokens_per_s": one.get("tokens_per_s"),
                 "1gpu_mfu": one.get("mfu")}
        for name in ("data2", "fsdp2"):
            two = rows[name].get(preset)
            if two and "tokens_per_s" in two and one.get("tokens_per_s"):
                entry[f"{name}_tokens_per_s"] = two["tokens_per_s"]
                entry[f"{name}_efficiency"] = two["tokens_per_s"] / (2 * one["tokens_per_s"])
        table.append(entry)
    return {"size": args.size, "seq_len": args.seq_len, "per_gpu_batch": args.batch,
            "rows": table}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--match-config", default="experiments/configs/hybrid_two_gpu_match.yaml")
    p.add_argument("--size", default="370m")
    p.add_argument("--families", default="transformer,hybrid,gdn",
                   help="one-GPU throughput rows (profiled)")
    p.add_argument("--scaling-families", default="transformer,hybrid",
                   help="families also run on two GPUs")
    p.add_argument("--batch", type=int, default=8, help="sequences per GPU")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--skip", nargs="*", default=[], choices=["match", "scaling"])
    p.add_argument("--no-profile", action="store_true",
                   help="no profile of the one-GPU rows (saves a few minutes of device time)")
    p.add_argument("--scaling-runs", nargs="+", default=["1gpu", "data2", "fsdp2"],
                   choices=["1gpu", "data2", "fsdp2"],
                   help="scaling runs to measure now; the others are read from --out's "
                        "scaling_*.json of an earlier call (split a run over short calls)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    # Parts measured by earlier calls on this --out stay in the summary.
    summary_path = args.out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if "match" not in args.skip:
        print("loss match (1 GPU vs data=2 vs fsdp=2):", flush=True)
        summary["match"] = loss_match(args, args.out)
        print(json.dumps(summary["match"], indent=1), flush=True)
    if "scaling" not in args.skip:
        print("scaling:", flush=True)
        summary["scaling"] = scaling(args, args.out)
        for r in summary["scaling"]["rows"]:
            print(f"  {r['preset']:<18} 1 GPU {r['1gpu_tokens_per_s'] or 0:>10,.0f} tok/s  " +
                  "  ".join(f"{n} {r.get(n + '_tokens_per_s', 0):>10,.0f} tok/s "
                            f"({100 * r.get(n + '_efficiency', 0):.0f}%)"
                            for n in ("data2", "fsdp2") if n + "_efficiency" in r), flush=True)
    summary_path.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
