"""`hybrid-jax sweep {run,status,plan,merge,list}` (also `python -m hybrid_jax.sweep.cli`).

    hybrid-jax sweep plan cpu-demo                      # N, D, FLOPs, steps, lr, epochs, time
    hybrid-jax sweep plan gpu-small --device-kind "NVIDIA H100 80GB HBM3"
    hybrid-jax sweep plan cpu-demo --calibrate          # measure FLOP/s here for every size
    hybrid-jax sweep run cpu-demo                       # train; safe to kill and rerun
    hybrid-jax sweep run gpu-small --parallel 3 --only 'hybrid/*'   # 3 workers on 1 GPU
    hybrid-jax sweep status cpu-demo                    # done / running / failed / pending, ETA
    hybrid-jax sweep lr-check gpu-small --size d224 --multipliers 0.5 1 2 --ratio 5 \
        --write-ladder sweeps/gpu-small-lr/gpu-small.yaml   # lr check, then a tuned ladder
    hybrid-jax sweep merge gpu-small /mnt/job1/sweeps/gpu-small /mnt/job2/sweeps/gpu-small
    hybrid-jax fit sweeps/cpu-demo/results.jsonl --val-set mean   # the scaling-law fit

LADDER is a shipped ladder name (experiments/ladders/NAME.yaml) or a YAML path. The root
(default sweeps/LADDER; or gs://BUCKET/...) holds results.d/ (the rows), results.jsonl (their
export, for fit) and runs/<run_id>/; several runners may share it.
Exit status: 0 all runs done (run) / success; 1 some run failed or is invalid; 2 bad ladder or
arguments; 75 stopped by SIGTERM/SIGINT (checkpoints saved; rerun to resume).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

EXIT_BAD = 2


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("ladder", metavar="LADDER", help="shipped ladder name or YAML path")
    p.add_argument("--root", help="sweep directory (default sweeps/<ladder name>)")
    p.add_argument("--only", nargs="+", metavar="FAMILY/SIZE",
                   help="only these runs (shell patterns: 'hybrid/*', '*/s2', 'gdn')")


def _runner_args(r: argparse.ArgumentParser) -> None:
    r.add_argument("--max-retries", type=int, default=2,
                   help="retries of a failed run before it is marked failed (default 2)")
    r.add_argument("--parallel", type=int, default=None,
                   help="workers at once (default: one per local GPU, else 1)")
    r.add_argument("--retry-failed", action="store_true",
                   help="give runs marked failed by an earlier runner another max-retries")
    r.add_argument("--poll", type=float, default=1.0, help="seconds between checks (default 1)")
    r.add_argument("--report-every", type=float, default=60.0, metavar="S",
                   help="print runs by state and the sweep's ETA every S seconds (default 60)")
    r.add_argument("--stale-after", type=float, default=600.0,
                   help="seconds without heartbeat after which another host's lock is stale")
    r.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: worker processes on this host (default); ray: one unit of a "
                        "Ray cluster's resources per run (sweep/ray_executor.py)")
    r.add_argument("--ray-address", help="join this Ray cluster (default: RAY_ADDRESS, else a "
                   "local instance)")
    r.add_argument("--gpus-per-run", type=int, default=None,
                   help="ray: GPUs per host of a run (default 1 where the cluster has GPUs)")
    r.add_argument("--hosts-per-run", type=int, default=1,
                   help="ray: nodes per run, joined by jax.distributed (default 1)")
    r.add_argument("--tpu", metavar="VERSION:TOPOLOGY",
                   help="ray: each run takes one whole TPU slice, e.g. v5p:2x2x2")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hybrid-jax sweep", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train the ladder's runs (skips done, resumes interrupted)")
    _common(r)
    _runner_args(r)
    s = sub.add_parser("status", help="table of runs: state, progress, rows, ETA")
    _common(s)
    s.add_argument("--json", action="store_true")
    pl = sub.add_parser("plan", help="what the ladder will train, and how long it should take")
    _common(pl)
    pl.add_argument("--calibrate", action="store_true",
                    help="measure FLOP/s on this device for every (family, size) (compiles each)")
    pl.add_argument("--calibrate-batch", type=int, default=8,
                    help="cap on sequences per calibration step (default 8)")
    pl.add_argument("--device-kind", help="estimate for this device (jax device_kind, e.g. "
                    "'NVIDIA H100 80GB HBM3', 'cpu'); default: this machine's")
    pl.add_argument("--parallel", type=int, default=None,
                    help="workers assumed (default: as `run` would use here)")
    pl.add_argument("--devices-per-run", type=int, default=1,
                    help="devices of each worker's own (a TPU slice's chips, a node's GPUs), "
                         "with --device-kind: e.g. --parallel 4 --devices-per-run 32 for four "
                         "v5p-64 slices")
    pl.add_argument("--slices", type=int, metavar="N",
                    help="with --slice: N TPU slices, each run on one whole slice")
    pl.add_argument("--slice", metavar="VERSION:TOPOLOGY",
                    help="the slice type, e.g. v5p:2x2x2 (8 chips); sets --device-kind, "
                         "--devices-per-run and --parallel")
    pl.add_argument("--gpus", type=int, metavar="N",
                    help="with --device-kind: N GPUs in all, --gpus-per-run G each (default 1)")
    pl.add_argument("--gpus-per-run", type=int, default=None, metavar="G")
    pl.add_argument("--mfu", type=float,
                    help="assume this MFU (0-1] for every family, instead of the ladder's "
                         "measured plan_mfu or the default 20%%")
    pl.add_argument("--json", action="store_true")
    m = sub.add_parser("merge", help="merge result rows and completed runs from other roots")
    _common(m)
    m.add_argument("others", nargs="+", metavar="OTHER_ROOT")
    lc = sub.add_parser("lr-check", help="train one size at several multiples of the recipe's "
                        "lr per family, pick the best, optionally write the tuned ladder")
    _common(lc)
    lc.add_argument("--size", required=True, help="the ladder size to check (usually the smallest)")
    lc.add_argument("--multipliers", type=float, nargs="+", default=[0.5, 1.0, 2.0],
                    help="multiples of the recipe's lr (default 0.5 1 2)")
    lc.add_argument("--ratio", type=float, default=5.0,
                    help="D/N at the bottom of the check's single decay (default 5)")
    _runner_args(lc)
    lc.add_argument("--write-ladder", metavar="PATH",
                    help="write the ladder YAML with each family's lr scaled by its best multiplier")
    sub.add_parser("list", help="list the shipped ladders")
    return p


# (flag, attribute, check, what it must be): numbers the runner would misread (a --parallel of
# -2 gives no slot, so the runner waits forever; 0 silently means the default).
_NUMBER_FLAGS = (
    ("--parallel", "parallel", lambda v: v is None or v >= 1, "a positive integer"),
    ("--max-retries", "max_retries", lambda v: v >= 0, "an integer >= 0"),
    ("--poll", "poll", lambda v: 0 < v < math.inf, "a positive number of seconds"),
    ("--report-every", "report_every", lambda v: 0 < v < math.inf,
     "a positive number of seconds"),
    ("--stale-after", "stale_after", lambda v: v > 0, "a positive number of seconds"),
    ("--calibrate-batch", "calibrate_batch", lambda v: v >= 1, "a positive integer"),
    ("--gpus-per-run", "gpus_per_run", lambda v: v is None or v >= 1, "a positive integer"),
    ("--hosts-per-run", "hosts_per_run", lambda v: v >= 1, "a positive integer"),
    ("--devices-per-run", "devices_per_run", lambda v: v >= 1, "a positive integer"),
    ("--slices", "slices", lambda v: v is None or v >= 1, "a positive integer"),
    ("--gpus", "gpus", lambda v: v is None or v >= 1, "a positive integer"),
    ("--mfu", "mfu", lambda v: v is None or 0 < v <= 1, "a fraction in (0, 1]"),
)


def make_executor(args: argparse.Namespace):
    """None for the local executor (the runner's default), else a RayExecutor."""
    ray_only = [f for f, given in (("--ray-address", args.ray_address),
                                   ("--gpus-per-run", args.gpus_per_run is not None),
                                   ("--hosts-per-run", args.hosts_per_run != 1),
                                   ("--tpu", args.tpu)) if given]
    if args.executor == "local":
        if ray_only:
            raise ValueError(f"{', '.join(ray_only)} need --executor ray")
        return None
    from hybrid_jax.sweep.ray_executor import RayExecutor, Unit, parse_tpu

    if args.tpu and (args.gpus_per_run is not None or args.hosts_per_run != 1):
        raise ValueError("--tpu takes a whole slice: drop --gpus-per-run and --hosts-per-run")
    unit = Unit(gpus=args.gpus_per_run or 0, hosts=args.hosts_per_run,
                tpu=parse_tpu(args.tpu) if args.tpu else None)
    return RayExecutor(unit, address=args.ray_address, parallel=args.parallel)


def bad_number(args: argparse.Namespace) -> str | None:
    """The first numeric flag out of its range, as a message naming the flag and value."""
    for flag, attr, ok, what in _NUMBER_FLAGS:
        if hasattr(args, attr) and not ok(getattr(args, attr)):
            return f"{flag} must be {what}, got {getattr(args, attr)}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    problem = bad_number(args)
    if problem:
        print(f"hybrid-jax sweep {args.command}: {problem}", file=sys.stderr)
        return EXIT_BAD
    from hybrid_jax.config import ConfigError
    from hybrid_jax.overrides import OverrideError

    from hybrid_jax.sweep.ladder import LadderError, load_ladder, shipped_ladders

    if args.command == "list":
        for name in shipped_ladders():
            lad = load_ladder(name)
            print(f"{name:<12}{lad.description.splitlines()[0] if lad.description else ''}")
        return 0
    try:
        from hybrid_jax.sweep.root import Sweep

        ladder = load_ladder(args.ladder)
        if args.command == "lr-check":
            from hybrid_jax.sweep.lrcheck import check_ladder

            args.base_ladder = ladder
            ladder = check_ladder(ladder, args.size, args.multipliers, args.ratio)
        sweep = Sweep(ladder, args.root, args.only,
                      stale_after=getattr(args, "stale_after", 600.0))
    except (LadderError, ConfigError, OverrideError, FileNotFoundError, KeyError) as e:
        print(f"hybrid-jax sweep: bad ladder: {e}", file=sys.stderr)
        return EXIT_BAD
    if args.only and not sweep.runs and not sweep.invalid:
        print(f"hybrid-jax sweep: --only {args.only} matches no run", file=sys.stderr)
        return EXIT_BAD
    return COMMANDS[args.command](sweep, args)


def cmd_run(sweep, args) -> int:
    from hybrid_jax.sweep.plan import store_info
    from hybrid_jax.sweep.runner import Runner
    from hybrid_jax.sweep.status import overview

    for path in sorted({p for s in sweep.runs for p in s.config.data.store_paths}):
        store, note = store_info(path)
        if store is None:
            print(f"hybrid-jax sweep run: {note}; build it first (`hybrid-jax data build ... "
                  f"--out {path}`)", file=sys.stderr)
            return EXIT_BAD
    try:
        runner = Runner(sweep, max_retries=args.max_retries, parallel=args.parallel,
                        poll_s=args.poll, retry_failed=args.retry_failed,
                        say=lambda *a: print(*a, flush=True), executor=make_executor(args),
                        report=lambda: overview(sweep), report_every=args.report_every)
    except ValueError as e:
        print(f"hybrid-jax sweep run: {e}", file=sys.stderr)
        return EXIT_BAD
    return runner.run()


def cmd_lr_check(sweep, args) -> int:
    from hybrid_jax.sweep.ladder import LadderError
    from hybrid_jax.sweep.lrcheck import format_table, summarize, tuned_ladder_yaml

    code = cmd_run(sweep, args)
    if code == EXIT_BAD:
        return code
    families = list(dict.fromkeys(s.family for s in sweep.runs))
    choices = summarize(sweep.root, sweep.ladder, families, args.size, args.multipliers,
                        args.ratio)
    print(format_table(choices, args.size, args.ratio))
    print(f"[lr-check] table in {sweep.root / 'lr_check.md'}")
    if code != 0:
        return code
    if args.write_ladder:
        try:
            text = tuned_ladder_yaml(args.base_ladder, choices)
        except LadderError as e:
            print(f"hybrid-jax sweep lr-check: {e}", file=sys.stderr)
            return 1
        from pathlib import Path

        out = Path(args.write_ladder)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"[lr-check] tuned ladder written to {out}")
    return 0


def cmd_status(sweep, args) -> int:
    from hybrid_jax.sweep.status import format_status, repair_hint, status_rows

    rows = status_rows(sweep)
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
        hint = repair_hint(sweep, rows)
        if hint:  # stdout stays pure JSON
            print(hint, file=sys.stderr)
    else:
        print(format_status(sweep, rows))
    return 0


def cmd_plan(sweep, args) -> int:
    from hybrid_jax.sweep.plan import (assumed_speed, calibrate, device_hours, format_plan,
                                        local_device_kind, plan_rows, store_info)
    from hybrid_jax.sweep.runner import device_slots

    problem = _plan_cluster(args)
    if problem:
        print(f"hybrid-jax sweep plan: {problem}", file=sys.stderr)
        return EXIT_BAD
    if args.calibrate and (args.device_kind or args.mfu):
        print("hybrid-jax sweep plan: --calibrate measures this device; drop --device-kind and "
              "--mfu", file=sys.stderr)
        return EXIT_BAD
    kind = args.device_kind or local_device_kind()
    speeds = {}
    for spec in sweep.runs:
        key = (spec.family, spec.size)
        if args.calibrate:
            print(f"calibrating {spec.family}/{spec.size} ...", file=sys.stderr, flush=True)
            speeds[key] = calibrate(spec, max_batch=args.calibrate_batch)
            print(f"  {speeds[key].flops_per_s / 1e12:.3g} TFLOP/s; {speeds[key].source}",
                  file=sys.stderr, flush=True)
        else:
            speeds[key] = (assumed_speed(kind, args.mfu, "given") if args.mfu else
                           assumed_speed(kind, sweep.ladder.plan_mfu.get(spec.family)))
    if args.devices_per_run > 1 and not args.device_kind:
        print("hybrid-jax sweep plan: --devices-per-run needs --device-kind (the device each "
              "run holds several of)", file=sys.stderr)
        return EXIT_BAD
    rows = plan_rows(sweep, speeds, args.devices_per_run)
    if args.devices_per_run > 1:  # each worker a unit of its own devices
        workers = devices = args.parallel or 1
    elif args.device_kind:  # another machine: assume one accelerator, or CPU workers
        from hybrid_jax.train.metrics import peak_flops

        workers = args.parallel or 1
        devices = 1 if peak_flops(kind) is not None else workers
    else:
        slots = device_slots(args.parallel)
        workers = len(slots)
        devices = len({s.get("CUDA_VISIBLE_DEVICES") for s in slots}) if slots[0] else workers
    notes = {store_info(p)[1] for s in sweep.runs for p in s.config.data.store_paths} - {""}
    if args.json:
        print(json.dumps({"device_kind": kind, "workers": workers, "devices": devices,
                          "devices_per_run": args.devices_per_run,
                          "device_hours": device_hours(rows, args.devices_per_run),
                          "runs": rows, "invalid": [vars(b) for b in sweep.invalid]}, indent=1))
    else:
        print(f"device: {kind}")
        print(format_plan(sweep, rows, workers, devices, "; ".join(sorted(notes)),
                          args.devices_per_run))
    return 0


TPU_DEVICE_KINDS = {"v4": "TPU v4", "v5e": "TPU v5 lite", "v5p": "TPU v5p", "v6e": "TPU v6 lite"}


def _plan_cluster(args: argparse.Namespace) -> str | None:
    """Turn --slices/--slice or --gpus into --parallel, --devices-per-run (and the device
    kind of a slice); the problem in words if the flags do not go together."""
    if (args.slices is None) != (args.slice is None):
        return "--slices and --slice go together (e.g. --slices 4 --slice v5p:2x2x2)"
    if args.slice is not None and args.gpus is not None:
        return "--slice and --gpus are two kinds of cluster: give one"
    if args.gpus_per_run is not None and args.gpus is None:
        return "--gpus-per-run needs --gpus"
    if args.slice is not None:
        from hybrid_jax.compile.aot import TopologyError, parse_topology

        try:
            version, dims = parse_topology(args.slice)
        except TopologyError as e:
            return str(e)
        args.device_kind = args.device_kind or TPU_DEVICE_KINDS[version]
        args.devices_per_run, args.parallel = math.prod(dims), args.slices
    if args.gpus is not None:
        if not args.device_kind:
            return "--gpus needs --device-kind (e.g. 'NVIDIA H100 80GB HBM3')"
        per = args.gpus_per_run or 1
        if args.gpus % per:
            return f"--gpus {args.gpus} is not a multiple of --gpus-per-run {per}"
        args.devices_per_run, args.parallel = per, args.gpus // per
    return None


def cmd_merge(sweep, args) -> int:
    from hybrid_jax.sweep.status import merge

    try:
        merge(sweep, args.others)
    except FileNotFoundError as e:
        print(f"hybrid-jax sweep merge: {e}", file=sys.stderr)
        return EXIT_BAD
    return 0


COMMANDS = {"run": cmd_run, "lr-check": cmd_lr_check, "status": cmd_status, "plan": cmd_plan, "merge": cmd_merge}


if __name__ == "__main__":
    sys.exit(main())
