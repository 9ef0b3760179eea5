"""Write an Analysis as fits.json + REPORT.md + figures into a report directory.

The directory may hold other files (the results the report was fitted from, notes), so only
fit's own outputs are touched: each is rendered into a staging directory inside the target,
then moved over its old copy with os.replace, so a reader sees either the old file or the
whole new one, and a failure while rendering leaves the old report as it was. A file an
earlier report wrote that this one does not (a figure since dropped) is removed only if it is
listed in .fit-outputs.json, the record of what fit wrote there; nothing else is ever deleted.

fits.json is strict JSON: inf and NaN (a family that never reaches the target loss,
an interval with no usable replicates) are written as null, and the matching "note"
field says why.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from analysis.plots import FIGURES, save_all

FITS_JSON = "fits.json"
REPORT_MD = "REPORT.md"
OUTPUTS_JSON = ".fit-outputs.json"  # the files fit wrote in this directory


def publish(an, out_dir) -> Path:
    """Write the report into out_dir, replacing fit's earlier outputs file by file."""
    def write(staging: Path) -> list[str]:
        figures = save_all(an, staging)
        an.summary["figures"] = figures
        (staging / FITS_JSON).write_text(json.dumps(to_jsonable(an.summary), indent=2,
                                                    allow_nan=False) + "\n")
        (staging / REPORT_MD).write_text(render_markdown(an.summary))
        return [*figures, REPORT_MD, FITS_JSON]  # fits.json last: it names the figures

    return publish_files(out_dir, write)


def publish_files(out_dir, write: Callable[[Path], list[str]]) -> Path:
    """Move the files write(staging) renders into out_dir; returns out_dir.

    write gets an empty directory on out_dir's filesystem and returns the names it wrote
    there, in the order they should replace their old copies. If it raises, out_dir is left
    as it was (and removed again if this call created it)."""
    from hybrid_jax.storage.paths import is_object_store

    if is_object_store(out_dir):
        return _publish_to_object_store(str(out_dir).rstrip("/"), write)
    out_dir = Path(out_dir).resolve()
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)  # mode from the umask, unlike mkdtemp's 0700
    staging = Path(tempfile.mkdtemp(prefix=".fit-staging-", dir=out_dir))
    try:
        try:
            names = _rendered(write, staging)
        except BaseException:
            if created:
                shutil.rmtree(out_dir, ignore_errors=True)
            raise
        earlier = _read_outputs(out_dir)
        # Listed before the moves, so a crash part-way still leaves every file we own listed.
        _write_outputs(out_dir, sorted(set(earlier) | set(names)))
        for name in names:
            os.replace(staging / name, out_dir / name)
        for name in sorted(set(earlier) - set(names)):
            stale = out_dir / name
            if stale.is_file() and not stale.is_symlink():
                stale.unlink()
        _write_outputs(out_dir, sorted(names))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _publish_to_object_store(out_dir: str, write: Callable[[Path], list[str]]) -> str:
    """publish_files for gs://: rendered in a local temporary directory, then uploaded one
    object at a time in `write`'s order. Each object appears whole; a crash part-way leaves a
    mix of new and earlier files, every one of them listed in .fit-outputs.json."""
    from hybrid_jax.storage.paths import as_path, read_text_or_none, write_text_atomic

    out = as_path(out_dir)
    with tempfile.TemporaryDirectory(prefix=".fit-staging-") as tmp:
        staging = Path(tmp)
        names = _rendered(write, staging)
        earlier = _parse_outputs(read_text_or_none(out / OUTPUTS_JSON))
        write_text_atomic(out / OUTPUTS_JSON, _listing(sorted(set(earlier) | set(names))))
        for name in names:
            (out / name).write_bytes((staging / name).read_bytes())
    for name in sorted(set(earlier) - set(names)):
        if (out / name).exists():
            (out / name).unlink()
    write_text_atomic(out / OUTPUTS_JSON, _listing(sorted(names)))
    return out_dir


def _listing(names: list[str]) -> str:
    return json.dumps({"written_by": "hybrid-jax fit", "files": names}, indent=1) + "\n"


def _rendered(write: Callable[[Path], list[str]], staging: Path) -> list[str]:
    """write(staging)'s names, each checked to be a plain file it wrote there."""
    names = list(write(staging))
    for name in names:
        if not _plain_name(name) or not (staging / name).is_file():
            raise ValueError(f"publish: {name!r} is not a file written into staging")
    return names


def _plain_name(name) -> bool:
    """A file name directly inside the report directory, never a path out of it."""
    return (isinstance(name, str) and name not in ("", ".", "..", OUTPUTS_JSON)
            and "/" not in name and os.sep not in name and "\0" not in name)


def _read_outputs(out_dir: Path) -> list[str]:
    """Names listed in out_dir's .fit-outputs.json; none if it is missing or unreadable."""
    try:
        return _parse_outputs((out_dir / OUTPUTS_JSON).read_text())
    except OSError:
        return []


def _parse_outputs(text: str | None) -> list[str]:
    try:
        data = json.loads(text) if text is not None else None
    except ValueError:
        return []
    files = data.get("files") if isinstance(data, dict) else None
    return [n for n in files if _plain_name(n)] if isinstance(files, list) else []


def _write_outputs(out_dir: Path, names: list[str]) -> None:
    tmp = out_dir / f".{OUTPUTS_JSON}.{os.getpid()}.tmp"
    try:
        tmp.write_text(_listing(names))
        os.replace(tmp, out_dir / OUTPUTS_JSON)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def to_jsonable(obj):
    """Recursively convert numpy types, tuples and non-finite floats (to None)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def _num(x, digits=4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "inf" if x == math.inf else "n/a"
    if abs(x) >= 1e4 or (0 < abs(x) < 1e-3):
        return f"{x:.3g}"
    return f"{x:.{digits}g}"


def _with_ci(value, ci) -> str:
    if not ci or ci.get("n", 0) == 0:
        return _num(value)
    return f"{_num(value)} [{_num(ci['lo'])}, {_num(ci['hi'])}]"


def _count(n: float) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:g}"


def _recipe_text(st: dict) -> str:
    opt = st["recipe_options"]
    parts = [f"Huber delta = {st['huber_delta']} on log loss, summed",
             f"{opt['grid']} grid of starts"]
    if opt["exponent_bounds"]:
        parts.append(f"alpha, beta in [{opt['exponent_bounds'][0]}, {opt['exponent_bounds'][1]}]")
    if opt["e_at_most_min_loss"]:
        parts.append("E <= min observed loss")
    parts.append(f"weights: {opt['weights'] or 'none'}")
    return "; ".join(parts)


def render_markdown(s: dict, *, figures: bool = True) -> str:
    """REPORT.md text; figures=False leaves out the figure links (for notebooks)."""
    inp, st = s["inputs"], s["settings"]
    lines = [
        "# Scaling-law fit report", "",
        f"Input `{inp['path']}`: {inp['n_points']} points, validation set "
        f"`{inp['val_set']}`, families {', '.join(f'`{f}`' for f in s['families'])}.",
        f"Git SHAs: {', '.join(f'`{g[:12]}`' for g in inp['git_shas'])}. "
        f"Devices: {', '.join(inp['device_kinds'])}.", "",
        f"Recipe `{st['recipe']}`: {_recipe_text(st)}. {st['n_bootstrap']} bootstrap "
        f"replicates over {st['bootstrap_unit']}, seed {st['seed']}. Brackets are "
        f"{int(st['ci_level'] * 100)}% percentile intervals.", "",
        "## Parametric law L(N, D) = E + A / N^alpha + B / D^beta", "",
        "| family | points (runs) | E | A | B | alpha | beta |",
        "|---|---|---|---|---|---|---|",
    ]
    for fam, f in s["families"].items():
        law, ci = f["law"], f["law_ci"]
        lines.append(f"| {fam} | {f['n_points']} ({f['n_runs']}) | "
                     + " | ".join(_with_ci(law[k], ci.get(k)) for k in ("E", "A", "B", "alpha", "beta"))
                     + " |")
    lines += ["", "## Compute frontier L(C) = E + A C^-gamma (lower envelope)", "",
              "| family | envelope points | E | gamma | N_opt ~ C^a (IsoFLOP) |",
              "|---|---|---|---|---|"]
    for fam, f in s["families"].items():
        fr, ci = f["frontier"], f["frontier_ci"]
        alloc = f["isoflop"]["allocation"]
        a = f"{alloc['a']:.3f} ({alloc['n_buckets']} budgets)" if alloc else "n/a"
        if fr is None:
            lines.append(f"| {fam} | too few | n/a | n/a | {a} |")
        else:
            lines.append(f"| {fam} | {fr['n_points']} | {_with_ci(fr['E'], ci.get('E'))} | "
                         f"{_with_ci(fr['gamma'], ci.get('gamma'))} | {a} |")
    lines += ["", "## Comparisons", "",
              "Savings factor = D_baseline / D_challenger at equal N and target loss (above 1: "
              "the challenger needs fewer tokens). Compute multiplier = C_baseline / "
              "C_challenger at matched loss on the frontiers (above 1: the challenger needs "
              "less compute).", ""]
    if s["comparisons"]:
        lines += ["| challenger vs baseline | N | target loss | savings factor | "
                  "compute multiplier |", "|---|---|---|---|---|"]
        for c in s["comparisons"]:
            sf, cm = c["savings_factor"], c["compute_multiplier"]
            lines.append(f"| {c['challenger']} vs {c['baseline']} | {_count(c['n_params'])} | "
                         f"{_num(c['target_loss'])} | {_with_ci(sf['value'], sf.get('ci'))} | "
                         f"{_with_ci(cm['value'], cm.get('ci'))} |")
        lines += ["", f"Target loss: {s['comparisons'][0]['target_loss_source']}."]
    else:
        lines.append("Only one family: nothing to compare.")
    lines += ["", "## Rollout validation (fit without the largest size, predict it)", "",
              "| family | held-out N | train points | mean abs rel. error | max abs rel. error |",
              "|---|---|---|---|---|"]
    for fam, f in s["families"].items():
        r = f["rollout"]
        if "skipped" in r:
            lines.append(f"| {fam} | skipped: {r['skipped']} | | | |")
        else:
            lines.append(f"| {fam} | {_count(r['held_out_n_params'])} | {r['n_train']} | "
                         f"{100 * r['mean_abs_rel_error']:.2f}% | "
                         f"{100 * r['max_abs_rel_error']:.2f}% |")
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"- [{name}]({name}.png) ([pdf]({name}.pdf))" for name in FIGURES]
        lines += ["", "![loss vs compute](loss_vs_flops.png)"]
    if "paper_comparison" in s:
        lines += paper_section(s["paper_comparison"], st["ci_level"])
    lines += ["", "## Caveats", ""]
    caveats = s.get("caveats") or []
    if caveats:
        lines.append("Read the numbers above with these limits in mind:")
        lines.append("")
        lines += [f"- {c}" for c in caveats]
    else:
        lines.append("No specific warnings were raised; the usual limits of extrapolating a "
                     "fitted law beyond the largest trained size still apply.")
    return "\n".join(lines) + "\n"


def paper_section(pc: dict, ci_level: float) -> list[str]:
    """The "Comparison with the paper" section from summary["paper_comparison"]."""
    ref, pct = pc["reference"], f"{int(ci_level * 100)}%"
    exps = "; ".join(f"{e['family']} alpha = {e['alpha']}, beta = {e['beta']}"
                     for e in ref["exponents"])
    lines = ["", f"## Comparison with the paper ({ref['title']}, arXiv {ref['arxiv']})", "",
             f"The paper's claims: loss order {' < '.join(ref['loss_order'])} across its ladder, "
             f"persisting with scale; Chinchilla exponents read off its figure ({exps}); "
             f"savings factor about {ref['savings_factor']:g} for {ref['savings_challenger']} vs "
             f"{ref['savings_baseline']} on {ref['savings_context']}. Its ladder spans about "
             f"{ref['n_span']:g}x in N at far larger scale than ours, so \"agree\" means our "
             "intervals are consistent with its numbers, not that we measured the same thing."]
    if pc["missing_families"]:
        lines.append(f"Not in these results, so skipped: {', '.join(pc['missing_families'])}.")
    if "skipped" in pc:
        return lines + ["", f"Skipped: {pc['skipped']}."]
    obs, fit = pc["observed_ordering"], pc["fitted_ordering"]
    lines += ["", "### Loss ordering", ""]
    if "skipped" in obs:
        lines.append(f"Observed, per matched cell: unavailable ({obs['skipped']}).")
    else:
        lines += [f"Observed, per matched cell (one size label and one D/N target, one point "
                  f"per family): {obs['n_cells']} cells.", "",
                  "| ordering (lowest loss first) | cells | the paper's order |", "|---|---|---|"]
        lines += [f"| `{o}` | {k} | {'yes' if o == obs['expected'] else 'no'} |"
                  for o, k in obs["orderings"].items()]
        lines += ["", "| pair (paper: first is lower) | cells where it holds |", "|---|---|"]
        lines += [f"| {q['lower']} < {q['higher']} | {q['n_holds']} of {obs['n_cells']} |"
                  for q in obs["pairs"]]
        lines += ["", "Lowest loss per cell: " + ", ".join(
            f"{f} {k}" for f, k in obs["best_counts"].items()) + ". The paper's order by size: "
            + ", ".join(f"{z} {c['n_expected']} of {c['n_cells']}"
                        for z, c in obs["by_size"].items())
            + "."]
    dropped = [f"{obs.get(k)} {what}" for k, what in (
        ("n_cells_missing_a_family", "cells lacking a family"),
        ("n_cells_with_repeats", "cells with several runs of one family"),
        ("n_points_unlabelled", "points without a size label")) if obs.get(k)]
    if dropped:
        lines.append(f"Left out: {', '.join(dropped)}.")
    reps = fit["replicates"]
    lines += ["", f"Fitted laws at {fit['point']}: predicted loss "
              + ", ".join(f"{f} {_num(v)}" for f, v in fit["losses"].items())
              + f", so `{fit['ordering']}`"
              + (f"; the paper's order in {reps['n_expected']} of {reps['n']} paired "
                 "bootstrap replicates." if reps["n"] else ".")]
    lines += ["", "### Exponents", ""]
    if pc["exponents"]["rows"]:
        lines += [f"| family | exponent | ours [{pct} CI] | paper | paper inside CI |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['family']} | {r['exponent']} | {_with_ci(r['ours'], r['ci'])} | "
                  f"{r['paper']} | {_yes_no(r['inside_ci'])} |" for r in pc["exponents"]["rows"]]
    else:
        lines.append("No family of the paper's exponent table is in the results.")
    sv = pc["savings_factor"]
    lines += ["", "### Savings factor", ""]
    if "skipped" in sv:
        lines.append(f"Skipped: {sv['skipped']}.")
    else:
        lines += [f"| challenger vs baseline | N | target loss | ours [{pct} CI] | paper | "
                  "paper inside CI |", "|---|---|---|---|---|---|",
                  f"| {sv['challenger']} vs {sv['baseline']} | {_count(sv['n_params'])} | "
                  f"{_num(sv['target_loss'])} | {_with_ci(sv['ours'], sv['ci'])} | "
                  f"{sv['paper']:g} | {_yes_no(sv['inside_ci'])} |", "",
                  f"The paper's value is for {sv['paper_context']}; ours is at N = "
                  f"{_count(sv['n_params'])} on this report's validation loss."]
    lines += ["", "### Verdicts", "", "| item | verdict | why |", "|---|---|---|"]
    lines += [f"| {v['item']} | {v['verdict']} | {v['reason']} |" for v in pc["verdicts"]]
    return lines


def _yes_no(flag) -> str:
    return "n/a" if flag is None else ("yes" if flag else "no")
