"""A table of finished training runs side by side: what ran, and where each ended.

    python experiments/scripts/compare_runs.py RUN_DIR... [--tail 100] [--json OUT]

For each run directory: the overrides that tell the runs apart (config keys whose values differ
between them), the gated delta rule's implementation and precision that ran (run_meta.json),
the last logged train loss, the mean train loss over the last --tail logged steps, and each
validation set's loss at the last evaluation. Then, per group of runs that differ only in seed,
the mean and spread of those numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

SEED_KEYS = ("train.seed", "data.seed")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def load(run_dir: Path, tail: int) -> dict:
    missing = [f for f in ("config.json", "run_meta.json", "metrics.jsonl")
               if not (run_dir / f).is_file()]
    if missing:
        raise SystemExit(f"{run_dir}: not a finished run directory (no {', '.join(missing)})")
    config = _flat(json.loads((run_dir / "config.json").read_text())["config"])
    meta = json.loads((run_dir / "run_meta.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    train = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    if not train or not evals:
        raise SystemExit(f"{run_dir}: no train or no eval records in metrics.jsonl")
    return {"run_dir": str(run_dir), "config": config,
            "implementations": meta.get("implementations", {}),
            "steps": train[-1]["step"], "last_loss": train[-1]["loss"],
            "tail_loss": statistics.fmean(r["loss"] for r in train[-tail:]),
            "val": {name: s["loss"] for name, s in sorted(evals[-1]["sets"].items())}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+", type=Path)
    p.add_argument("--tail", type=int, default=100, help="logged steps in the tail mean")
    p.add_argument("--json", type=Path, help="also write the rows and groups here")
    args = p.parse_args(argv)
    runs = [load(d, args.tail) for d in args.run_dirs]
    keys = sorted({k for r in runs for k in r["config"]} - {"train.run_dir", "train.name"})
    differ = [k for k in keys if len({json.dumps(r["config"].get(k)) for r in runs}) > 1]
    sets = sorted({s for r in runs for s in r["val"]})
    head = differ + ["gdn ran", "steps", "last loss", f"last-{args.tail} mean"] + \
        [f"val {s}" for s in sets]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in runs:
        cells = [str(r["config"].get(k)) for k in differ] + [
            f"{r['implementations'].get('gdn')} at {r['implementations'].get('gdn_precision')}",
            str(r["steps"]), f"{r['last_loss']:.4f}",
            f"{r['tail_loss']:.4f}"] + [f"{r['val'].get(s, float('nan')):.4f}" for s in sets]
        print("| " + " | ".join(cells) + " |")
    groups: dict[str, list[dict]] = {}
    for r in runs:
        label = ", ".join(f"{k}={r['config'].get(k)}" for k in differ if k not in SEED_KEYS)
        groups.setdefault(label or "all", []).append(r)
    print("\nper group (mean ± sample std over seeds; n runs):")
    summary = {}
    for label, rs in groups.items():
        metrics = {"tail_loss": [r["tail_loss"] for r in rs],
                   **{f"val {s}": [r["val"][s] for r in rs if s in r["val"]] for s in sets}}
        summary[label] = {m: {"mean": statistics.fmean(v),
                              "std": statistics.stdev(v) if len(v) > 1 else None, "n": len(v)}
                          for m, v in metrics.items()}
        print(f"  {label}: " + "; ".join(
            f"{m} {s['mean']:.4f}" + (f" ± {s['std']:.4f}" if s["std"] is not None else "")
            for m, s in summary[label].items()) + f" (n={len(rs)})")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "groups": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
