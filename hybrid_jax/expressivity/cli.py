"""`hybrid-jax expressivity run SUITE --out DIR [--seeds N] [--tasks T ...]` and `... list`.

`run` trains every missing positive control and (task, model) cell of the suite, then writes
DIR/results.json, DIR/results.md and DIR/heatmap.png from all finished ones. Rerunning resumes.
`--only controls` / `--only cells` splits the work (e.g. over processes sharing one GPU, each
with its own DIR); the outputs then cover only what that DIR holds.
"""

from __future__ import annotations

import argparse
import sys
import time

from hybrid_jax.expressivity.models import param_counts


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hybrid-jax expressivity",
                                description="expressivity task suite")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a suite (resumable) and write results")
    r.add_argument("suite", help="suite name (see `list`)")
    r.add_argument("--out", required=True, help="output directory")
    r.add_argument("--seeds", type=int, default=None, help="seeds per cell (default: the suite's)")
    r.add_argument("--tasks", nargs="+", default=None, help="run only these tasks of the suite")
    r.add_argument("--log-every", type=int, default=0, help="print losses every N steps")
    r.add_argument("--only", choices=("controls", "cells"), default=None,
                   help="run only the positive controls, or only the suite's cells")
    sub.add_parser("list", help="list suites and tasks")
    return p


def _list() -> int:
    from hybrid_jax.expressivity.suite import SUITES
    from hybrid_jax.expressivity.tasks import TASKS

    print("suites:")
    for s in SUITES.values():
        tasks = ", ".join(f"{t.name}(L={t.train_length})" for t in s.tasks)
        counts = ", ".join(f"{k} {v:,}" for k, v in param_counts(s.shape, s.models).items())
        print(f"  {s.name}: {tasks}\n      {s.shape.n_layers} layers, d_model {s.shape.d_model}; "
              f"params: {counts}\n      {s.train.steps} steps x batch {s.train.batch_size}, "
              f"lrs {list(s.lrs)}, {s.n_seeds} seeds; {s.estimate}")
    print("tasks:")
    for name, t in TASKS.items():
        doc = (sys.modules[type(t).__module__].__doc__ or "").strip().splitlines()[0]
        print(f"  {name:<13} {doc}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "list":
        return _list()
    from hybrid_jax.expressivity.report import write_outputs
    from hybrid_jax.expressivity.suite import get_suite, run_controls, run_suite

    try:
        suite = get_suite(args.suite).select(tasks=args.tasks, n_seeds=args.seeds)
    except ValueError as e:
        print(f"hybrid-jax expressivity: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    controls = ([] if args.only == "cells" else
                run_controls(suite, args.out, log_every=args.log_every))
    results = [] if args.only == "controls" else run_suite(suite, args.out,
                                                          log_every=args.log_every)
    wall = time.perf_counter() - t0
    if not results:
        print(f"ran the controls only; no tables written ({wall:.0f} s)")
        return 0
    write_outputs(suite, results, args.out, controls=controls, wall_seconds=wall)
    print(f"wrote {args.out}/results.json, results.md, heatmap.png ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
