"""`hybrid-jax fit RESULTS [--out DIR] ...`: fit scaling laws and write the report.

Also runs as `python -m analysis.cli RESULTS ...`. Exit codes: 0 on success, 2 on bad
input (missing or empty file, invalid rows, a family too small to fit, a bad option);
on failure nothing is written. DIR may hold other files (RESULTS itself, notes): fit replaces
only its own outputs, each atomically, and deletes nothing it did not write (see
`analysis.report.publish`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from analysis.pipeline import RECIPES, analyse
from analysis.report import REPORT_MD, publish
from analysis.results import MEAN_OVER_SETS, ResultsError, load_results

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 too; keep the message format ours
        self.print_usage(sys.stderr)
        raise _UsageError(message)


class _UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hybrid-jax fit",
                description="Fit Chinchilla laws and compute frontiers per family, bootstrap "
                            "over runs, compare families; writes fits.json, REPORT.md, figures.")
    p.add_argument("results", metavar="RESULTS", help="JSONL file of scaling points")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="report directory (default: fit_report/ beside RESULTS); fit's earlier "
                        "outputs there are replaced, other files are left alone")
    p.add_argument("--bootstrap", metavar="N", type=int, default=100,
                   help="bootstrap replicates over runs (default 100; 0 disables intervals)")
    p.add_argument("--target-loss", metavar="X", type=float, default=None,
                   help="target loss for savings/compute multiplier (default: the higher of "
                        "the two families' best observed losses)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--val-set", metavar="NAME", default=None,
                   help=f"validation set whose loss is fitted, or '{MEAN_OVER_SETS}' to average "
                        "the sets common to all rows (default: the only set, if there is one)")
    p.add_argument("--recipe", choices=sorted(RECIPES), default="paper",
                   help="fit recipe: 'paper' (4^5 grid, bounds, E <= min L, sqrt-FLOP weights) or "
                        "'epoch' (4,500 starts, no bounds, unweighted)")
    p.add_argument("--baseline", metavar="FAMILY", default=None,
                   help="family the others are compared with (default: transformer if present)")
    p.add_argument("--no-paper", action="store_true",
                   help="leave out the comparison with the Olmo Hybrid paper's claims (on by "
                        "default when at least two of its families hybrid, gdn, transformer "
                        "are in the results)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        if args.bootstrap < 0:
            raise _UsageError("--bootstrap must be >= 0")
    except _UsageError as err:
        print(f"hybrid-jax fit: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SystemExit as done:  # --help
        return int(done.code or 0)
    from hybrid_jax.storage.paths import is_object_store

    results_path = args.results
    if args.out:
        out_dir = args.out
    elif is_object_store(results_path):
        out_dir = f"{results_path.rsplit('/', 1)[0]}/fit_report"
    else:
        out_dir = Path(results_path).resolve().parent / "fit_report"
    t0 = time.perf_counter()
    try:
        results = load_results(results_path, val_set=args.val_set)
        an = analyse(results, n_bootstrap=args.bootstrap, seed=args.seed,
                     target_loss=args.target_loss, recipe=args.recipe, baseline=args.baseline,
                     paper=not args.no_paper)
    except ResultsError as err:
        print(f"hybrid-jax fit: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    written = publish(an, out_dir)
    print(f"wrote {written}/{REPORT_MD} (and fits.json, figures) in "
          f"{time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
