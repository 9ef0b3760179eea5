"""Scheduling overhead of the Ray executor against the local one, on CPU.

    python benchmarks/sweep_executor_overhead.py --store STORE [--repeats 2] [--json OUT]

Runs the shipped `smoke` ladder (its data.store replaced by STORE) once per executor and repeat,
alternating, each in a fresh root, as `hybrid-jax sweep run` child processes. Reports the
command's wall time and, per run, the attempt's wall time as the runner saw it (start to exit,
attempts.jsonl) against the worker's own training wall time (metrics.jsonl step and eval
times): the difference is process start, imports, restore and the executor's own work.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _one(ladder: Path, root: Path, executor: str, env: dict) -> dict:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hybrid_jax.sweep.cli", "run", str(ladder), "--root",
                    str(root), "--executor", executor], env=env, cwd=REPO, check=True,
                   capture_output=True)
    wall = time.perf_counter() - t0
    attempts, trained = [], []
    for run in sorted((root / "runs").iterdir()):
        events = [json.loads(x) for x in (run / "attempts.jsonl").read_text().splitlines()]
        attempts.append(sum(e["wall_s"] for e in events if e["event"] == "exit"))
        records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        trained.append(sum(r.get("step_time_s", 0.0) + r.get("eval_time_s", 0.0)
                           for r in records))
    return {"executor": executor, "command_s": round(wall, 2),
            "attempt_s": [round(a, 2) for a in attempts],
            "overhead_per_run_s": round(statistics.mean(a - t for a, t in zip(attempts, trained)),
                                        2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args()
    ladder = yaml.safe_load((REPO / "experiments/ladders/smoke.yaml").read_text())
    ladder["run"]["data"]["store"] = str(Path(args.store).absolute())
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "smoke.yaml"
        path.write_text(yaml.safe_dump(ladder))
        # a shared compilation cache, warmed first, so both executors find the same entries
        env["JAX_COMPILATION_CACHE_DIR"] = str(Path(tmp) / "jax_cache")
        _one(path, Path(tmp) / "warm", "local", env)
        for i in range(args.repeats):
            for executor in ("local", "ray"):
                rows.append(_one(path, Path(tmp) / f"{executor}{i}", executor, env))
                print(json.dumps(rows[-1]), flush=True)
    for executor in ("local", "ray"):
        mine = [r for r in rows if r["executor"] == executor]
        print(f"{executor}: command {statistics.mean(r['command_s'] for r in mine):.1f} s, "
              f"overhead per run {statistics.mean(r['overhead_per_run_s'] for r in mine):.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
