"""One attempt at one run, in its own process:

    python -m hybrid_jax.sweep.worker SPEC RESULTS [--coordinator HOST:PORT --num-processes N
                                                    --process-id I]

Why a process per attempt: a crash, an OOM kill or a hung compile takes down only this attempt;
the runner retries it, and JAX state never leaks from one run into the next. The runner starts
it with CUDA_VISIBLE_DEVICES (or a CPU device count) already chosen.

The worker trains with hybrid_jax.train.train, which resumes from the run directory's latest
checkpoint; when train returns (completed, or interrupted by SIGTERM after saving), the rows
of every scaling point reached are appended to RESULTS (deduplicated by (run_id, tokens)), and
a completed run gets done.json, written last. On Linux the worker asks for SIGTERM when the
runner dies (PR_SET_PDEATHSIG), so a killed runner leaves no orphan training: the worker saves
a checkpoint and exits, and the next runner resumes it.

With the distributed flags (the Ray executor's multi-host runs) the run spans N processes
joined by jax.distributed (`distributed` settings are not part of a run's identity); process 0
writes the rows and done.json, the others only train.

Exit status: 0 completed; 75 interrupted (checkpoint saved); 2 refused (configuration, data
epochs, store: retrying cannot help); 1 any other failure (last_error.json has the traceback).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import os
import signal
import sys
import time
import traceback

from hybrid_jax.storage import objects, results
from hybrid_jax.storage.paths import as_path, read_text_or_none
from hybrid_jax.sweep.state import HOST, append_line, read_json, read_lines, write_json

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 1, 2, 75
RUNNER_PID_ENV = "HYBRID_JAX_SWEEP_RUNNER_PID"
ATTEMPT_ENV = "HYBRID_JAX_SWEEP_ATTEMPT"


def _die_with_runner() -> None:
    runner = int(os.environ.get(RUNNER_PID_ENV, "0") or 0)
    if not runner or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != runner:  # the runner died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def rows_for(spec: dict, cfg, summary: dict, run_dir: os.PathLike) -> list[dict]:
    """One result row per scaling point in the summary (schema: analysis/results.py)."""
    from hybrid_jax.flops import train_flops

    meta = read_json(run_dir / "run_meta.json") or {}
    git = meta.get("git") or {}
    devices = meta.get("devices") or {}
    wall = _wall_by_step(run_dir)
    rows = []
    for point in summary["scaling_points"]:
        tokens = int(point["tokens"])
        val = {name: {"loss": r["loss"], "bpb": r["bpb"], "tokens": r.get("tokens"),
                      "bytes": r.get("bytes")} for name, r in point["eval"].items()}
        rows.append({
            "run_id": spec["run_id"], "ladder": spec["ladder"], "family": spec["family"],
            "size": spec["size"], "n_params": spec["n_params"],
            "n_params_total": spec["n_params_total"], "tokens": tokens,
            "flops": train_flops(cfg.model, cfg.train.seq_len, tokens), "val": val,
            "git_sha": git.get("sha") or "unknown", "git_dirty": git.get("dirty"),
            "versions": meta.get("versions") or {}, "device_kind": devices.get("device_kind", "?"),
            "n_devices": devices.get("n_devices"), "seq_len": cfg.train.seq_len,
            "lr": cfg.optim.lr, "b2": cfg.optim.b2, "batch_tokens": cfg.train.tokens_per_step,
            "step": int(point["step"]), "ratio": tokens / spec["n_params"],
            "config_hash": spec["config_hash"], "wall_s": wall(int(point["step"]))})
    return rows


def _wall_by_step(run_dir: os.PathLike):
    """wall_s at a step: the step and evaluation times in metrics.jsonl up to it (compilation
    included, process start-up not)."""
    records = read_lines(run_dir / "metrics.jsonl")

    def wall(step: int) -> float:
        return round(sum(r.get("step_time_s", 0.0) if r.get("kind") == "train"
                         else r.get("eval_time_s", 0.0)
                         for r in records if r.get("step", 0) <= step), 3)

    return wall


def run(spec_path: str | os.PathLike, root: str | os.PathLike,
        distributed: dict | None = None) -> int:
    from hybrid_jax.config import ConfigError
    from hybrid_jax.data import EpochLimitError, StoreError
    from hybrid_jax.overrides import OverrideError
    from hybrid_jax.sharding import MeshError
    from hybrid_jax.train import ConfigMismatchError, load_config, train

    spec_path = as_path(spec_path)
    spec = json.loads(read_text_or_none(spec_path) or "null")
    if not isinstance(spec, dict):
        raise SystemExit(f"no run spec at {spec_path}")
    run_dir = spec_path.parent
    attempt = os.environ.get(ATTEMPT_ENV, "?")
    print(f"[sweep] run {spec['run_id']} attempt {attempt}: worker pid {os.getpid()} of runner "
          f"pid {os.getppid()} on {HOST} at {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
    objects.delete(run_dir / "last_error.json")
    t0 = time.time()
    try:
        cfg = load_config(spec["config"])
        if cfg.config_hash() != spec["config_hash"]:
            raise ConfigError(f"{spec_path}: the config hashes to {cfg.config_hash()[:8]}, the "
                              f"spec says {spec['config_hash'][:8]} (edited by hand?)")
        if distributed:
            cfg = cfg.replace(distributed=dataclasses.replace(cfg.distributed, **distributed))
        summary = train(cfg, verbose=True)
    except (ConfigError, OverrideError, MeshError, EpochLimitError, StoreError,
            ConfigMismatchError) as e:
        return _fail(run_dir, "refused", e, t0)
    except Exception as e:  # noqa: BLE001 - any failure is recorded and retried by the runner
        return _fail(run_dir, "error", e, t0)
    if distributed and distributed["process_id"] != 0:  # process 0 records the run
        return EXIT_OK if summary["status"] == "completed" else EXIT_INTERRUPTED
    rows = rows_for(spec, cfg, summary, run_dir)
    if spec.get("evals"):
        # A row is written once, so with evaluations the rows wait for the completed run (an
        # interrupted one's scaling points are in its checkpoints' meta, and come back).
        from hybrid_jax.sweep.evals import add_evals

        try:
            rows = (add_evals(spec["evals"], rows, run_dir, cfg.train.seq_len,
                              say=lambda m: print(m, flush=True))
                    if summary["status"] == "completed" else [])
        except ValueError as e:  # the evals' settings do not fit this model: fix the ladder
            return _fail(run_dir, "refused", e, t0)
        except Exception as e:  # noqa: BLE001 - recorded and retried like a training failure
            return _fail(run_dir, "error", e, t0)
    added = results.append_rows(root, rows)
    append_line(run_dir / "attempts.jsonl", {
        "event": "train", "attempt": attempt, "worker_pid": os.getpid(), "host": HOST,
        "status": summary["status"],
        "resumed_from_step": (read_json(run_dir / "run_meta.json") or {}).get("resumed_from_step"),
        "steps": summary["steps"], "train_wall_s": summary["wall_s"], "rows_added": added})
    print(f"[sweep] {summary['status']} at step {summary['steps']}/{summary['total_steps']}; "
          f"{len(rows)} scaling point(s), {added} new row(s) in {root}", flush=True)
    if summary["status"] != "completed":
        return EXIT_INTERRUPTED
    if len(rows) != len(spec["ratios"]):
        return _fail(run_dir, "error", RuntimeError(
            f"the run completed with {len(rows)} scaling points, the ladder has "
            f"{len(spec['ratios'])} decay points"), t0)
    write_json(run_dir / "done.json", {"run_id": spec["run_id"], "time": time.time(),
                                       "host": HOST, "rows": rows,
                                       "summary": {k: v for k, v in summary.items()
                                                   if k != "scaling_points"}})
    return EXIT_OK


def _fail(run_dir: os.PathLike, kind: str, error: BaseException, t0: float) -> int:
    tb = "".join(traceback.format_exception(error))
    print(tb, file=sys.stderr, flush=True)
    write_json(run_dir / "last_error.json", {"kind": kind, "type": type(error).__name__,
                                             "message": str(error), "traceback": tb,
                                             "time": time.time(), "wall_s": time.time() - t0})
    return EXIT_REFUSED if kind == "refused" else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hybrid_jax.sweep.worker")
    p.add_argument("spec", help="the run's spec.json (a local path or gs://)")
    p.add_argument("root", help="the sweep's root, whose results.d gets the run's rows")
    p.add_argument("--coordinator", help="HOST:PORT of process 0 (multi-process runs)")
    p.add_argument("--num-processes", type=int)
    p.add_argument("--process-id", type=int)
    args = p.parse_args(argv)
    given = [args.coordinator, args.num_processes, args.process_id]
    if any(v is not None for v in given) and any(v is None for v in given):
        p.error("--coordinator, --num-processes and --process-id go together")
    distributed = None
    if args.coordinator is not None:
        distributed = {"coordinator": args.coordinator, "num_processes": args.num_processes,
                       "process_id": args.process_id}
    _die_with_runner()
    return run(args.spec, args.root, distributed)


if __name__ == "__main__":
    sys.exit(main())
