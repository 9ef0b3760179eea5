"""Time and host memory of `export_hf` and `import_hf` on random weights of a preset.

    python benchmarks/hf_roundtrip.py --preset olmo_hybrid_7b --dtype bfloat16 \
        --work /tmp/hf_roundtrip [--json OUT.json]

Three child processes, so that each peak RSS (ru_maxrss) belongs to one step:
  make    builds the preset's model at random weights (seed 0) on the default device;
          exports it to WORK/hf (timed: export_s, peak RSS after init and after export), and
          writes each parameter's float64 sum and sum of squares
  import  reads WORK/hf back (timed: import_s, peak RSS) onto the default device and checks
          every parameter's sums against the make step's (bf16 export: to bf16's rounding)
Prints one JSON line per step and, with --json, writes them together. On a GPU the parameters
live in GPU memory, so host RSS is what the export/import itself holds; on a CPU it includes the
fp32 parameters.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _peak_rss_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)  # Linux: KiB


def _sums(params) -> dict[str, list[float]]:
    import jax
    import jax.numpy as jnp

    @jax.jit
    def moments(x):
        x = x.astype(jnp.float32)
        return jnp.sum(x), jnp.sum(x * x)

    out = {}
    for path, x in jax.tree_util.tree_leaves_with_path(params):
        s, ss = moments(x)
        out[jax.tree_util.keystr(path)] = [float(s), float(ss)]
    return out


def make(args) -> dict:
    t0 = time.perf_counter()
    import jax
    from flax import nnx

    from hybrid_jax.flops import param_count
    from hybrid_jax.hf import export_hf
    from hybrid_jax.models.lm import build_model
    from hybrid_jax.presets import get_preset

    cfg = get_preset(args.preset)
    model = build_model(cfg, seed=0)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    jax.block_until_ready(params)
    t1 = time.perf_counter()
    rss_init = _peak_rss_gb()
    files = export_hf(params, cfg, Path(args.work) / "hf", dtype=args.dtype)
    t2 = time.perf_counter()
    rss_export = _peak_rss_gb()
    (Path(args.work) / "sums.json").write_text(json.dumps(_sums(params)))
    return {"step": "make", "preset": args.preset, "params": param_count(cfg).total,
            "dtype": args.dtype, "device": jax.devices()[0].device_kind,
            "init_s": round(t1 - t0, 1), "export_s": round(t2 - t1, 1),
            "files": len(files), "hf_bytes": sum(f.stat().st_size for f in files),
            "peak_rss_gb_after_init": rss_init, "peak_rss_gb_after_export": rss_export}


def import_step(args) -> dict:
    t0 = time.perf_counter()
    import jax
    import numpy as np

    from hybrid_jax.hf.importer import import_params

    cfg, params, _ = import_params(Path(args.work) / "hf")
    jax.block_until_ready(params)
    t1 = time.perf_counter()
    rss = _peak_rss_gb()
    want, got = json.loads((Path(args.work) / "sums.json").read_text()), _sums(params)
    if set(want) != set(got):
        raise SystemExit(f"parameter names differ: {sorted(set(want) ^ set(got))[:4]}")
    # bf16 rounds each weight by up to 2^-9 relative, so sums of squares move by about 2^-8
    tol = 1e-5 if args.dtype == "float32" else 8e-3
    worst = max(abs(got[k][1] - want[k][1]) / max(want[k][1], 1e-30) for k in want)
    if not np.isfinite(worst) or worst > tol:
        raise SystemExit(f"round trip: sum of squares off by {worst:.3g} relative (> {tol})")
    return {"step": "import", "import_s": round(t1 - t0, 1), "peak_rss_gb": rss,
            "sum_sq_rel_err_max": float(f"{worst:.3g}"), "tolerance": tol}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="olmo_hybrid_7b")
    p.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    p.add_argument("--work", required=True, help="scratch directory (replaced)")
    p.add_argument("--json", help="write the steps' records here")
    p.add_argument("--step", choices=("make", "import"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.step:
        print(json.dumps(make(args) if args.step == "make" else import_step(args)), flush=True)
        return 0
    shutil.rmtree(args.work, ignore_errors=True)
    Path(args.work).mkdir(parents=True)
    rows = []
    for step in ("make", "import"):
        proc = subprocess.run([sys.executable, __file__, "--step", step, "--preset", args.preset,
                               "--dtype", args.dtype, "--work", args.work],
                              cwd=REPO, capture_output=True, text=True)
        if proc.returncode:
            sys.stderr.write(proc.stdout + proc.stderr)
            return proc.returncode
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"host": platform.node(), "steps": rows},
                                              indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
