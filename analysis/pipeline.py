"""Run the whole analysis on validated results: fits, bootstrap, comparisons, rollout.

Why one place: the report, the figures, the CLI and the notebook must agree on every
number, so they all consume the `Analysis` this module returns. `Analysis.summary` is
plain JSON (it becomes fits.json); the bootstrap samples and points ride alongside for
the figures.

Fit recipes (both sum-reduced Huber, delta = 1e-3, on log loss):
* "paper" (default): the Olmo Hybrid / OLMo-core ladder recipe: 4^5 grid, alpha and
  beta in [0.01, 2], E <= min observed loss, FLOP-weighted terms. The paper does not
  say which FLOP weighting; we use sqrt(C), the choice OLMo-core's fitter documents
  (see `analysis.fit.flop_weights`).
* "epoch": Epoch AI's Chinchilla replication: 4,500-start grid, no bounds, unweighted.
Bootstrap replicates start from the full-data optimum and the other distinct local
optima its grid search found (a replicate reweights the same points, so its optimum
lies in one of those basins; a full grid per replicate would cost minutes), and all
replicates of a family run in one batched minimisation (`analysis.fit.fit_replicates`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.bootstrap import (LOOSE_FACTOR, expand, family_multiplicities, is_loose,
                                percentile_interval)
from analysis.compare import (compute_multiplier, default_comparison_size, default_target_loss,
                              rollout_validation, savings_curve, savings_factor)
from analysis.fit import PAPER_EXPONENT_BOUNDS, fit_chinchilla, fit_replicates
from analysis.frontier import fit_frontier, isoflop_parabolas, optimal_allocation_exponent
from analysis.objective import N_PARAMS
from analysis.paper import PAPER, paper_comparison, present_families
from analysis.results import Points, ResultSet, ResultsError

RECIPES = {
    "paper": {"grid": "paper", "exponent_bounds": PAPER_EXPONENT_BOUNDS,
              "e_at_most_min_loss": True, "weights": "sqrt_flops"},
    "epoch": {"grid": "epoch", "exponent_bounds": None, "e_at_most_min_loss": False,
              "weights": None},
}
LAW_KEYS = ("E", "A", "B", "alpha", "beta")
FRONTIER_KEYS = ("E", "A", "gamma")
CI_LEVEL = 0.95
DEFAULT_BASELINE = "transformer"
_N_CURVE = 60


@dataclass
class Analysis:
    summary: dict
    points: Points
    boot_laws: dict = field(default_factory=dict)        # family -> list of law dicts
    boot_frontiers: dict = field(default_factory=dict)   # family -> list of dicts or None
    savings_curves: list = field(default_factory=list)   # per comparison: targets, value, lo, hi


def fit_law(points: Points, recipe: str = "paper", **overrides) -> dict:
    """The parametric law for one family's points with a named recipe."""
    kwargs = {**RECIPES[recipe], **overrides}
    return fit_chinchilla(points.n_params, points.tokens, points.loss, **kwargs)


def bootstrap_laws(points: Points, multiplicity_RI, law: dict, recipe: str) -> list[dict]:
    """Refit the law on every replicate, starting from the full-data local optima."""
    if len(multiplicity_RI) == 0:
        return []
    options = {k: v for k, v in RECIPES[recipe].items() if k != "grid"}
    return fit_replicates(points.n_params, points.tokens, points.loss, multiplicity_RI,
                          law["local_optima"], **options)


def check_fittable(points: Points) -> None:
    """Raise ResultsError if some family has fewer points than the law has parameters."""
    for family in points.families:
        n = int(np.sum(points.family == family))
        if n < N_PARAMS:
            raise ResultsError(f"family {family!r} has {n} points; the law has {N_PARAMS} "
                               f"parameters, so it needs at least {N_PARAMS}")


def analyse(results: ResultSet, *, n_bootstrap: int = 100, seed: int = 0,
            target_loss: float | None = None, recipe: str = "paper",
            baseline: str | None = None, paper: bool = True) -> Analysis:
    """Fit every family, bootstrap over runs, compare each family with the baseline.

    paper: add summary["paper_comparison"] (`analysis.paper`) when at least two of the
    Olmo Hybrid paper's families are present; with fewer there is no claim to test.
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {recipe!r}")
    points = results.points
    check_fittable(points)
    families = points.families
    baseline = _pick_baseline(families, baseline)
    fam_points = {f: points.family_points(f) for f in families}

    laws = {f: fit_law(p, recipe) for f, p in fam_points.items()}
    frontiers = {f: _try_frontier(p) for f, p in fam_points.items()}

    mult = family_multiplicities(points, n_bootstrap, seed)
    boot_laws = {f: bootstrap_laws(fam_points[f], mult[f], laws[f], recipe) for f in families}
    boot_frontiers = {f: [_try_frontier(fam_points[f].take(expand(m)), frontiers[f])
                          for m in mult[f]] for f in families}

    fam_summary = {}
    for f in families:
        p = fam_points[f]
        iso = isoflop_parabolas(p.flops, p.n_params, p.loss)
        fam_summary[f] = {
            "n_points": len(p), "n_runs": len(p.runs),
            "sizes": sorted(set(p.n_params.tolist())),
            "law": _law_summary(laws[f]),
            "law_ci": _cis(boot_laws[f], LAW_KEYS),
            "frontier": _frontier_summary(frontiers[f]),
            "frontier_ci": _cis([b for b in boot_frontiers[f] if b], FRONTIER_KEYS),
            "isoflop": {"buckets": [_bucket_summary(b) for b in iso],
                        "allocation": optimal_allocation_exponent(iso)},
            "rollout": rollout_validation(p, lambda s: fit_law(s, recipe)),
        }

    comparisons, curves = [], []
    for other in families:
        if other == baseline:
            continue
        comp, curve = _compare(baseline, other, fam_points, laws, frontiers, boot_laws,
                               boot_frontiers, target_loss)
        comparisons.append(comp)
        curves.append(curve)

    summary = {
        "inputs": {"path": results.path, "val_set": results.val_set, "n_points": len(points),
                   "git_shas": results.git_shas, "device_kinds": results.device_kinds,
                   "versions": results.versions},
        "settings": {"recipe": recipe, "recipe_options": _jsonable(RECIPES[recipe]),
                     "huber_delta": laws[families[0]]["settings"]["huber_delta"],
                     "n_bootstrap": n_bootstrap, "seed": seed, "ci_level": CI_LEVEL,
                     "baseline": baseline, "target_loss": target_loss,
                     "bootstrap_unit": "run (run_id), paired across families",
                     "paper_comparison": paper},
        "families": fam_summary,
        "comparisons": comparisons,
    }
    if paper and len(present_families(families)) >= 2:
        summary["paper_comparison"] = paper_comparison(summary, points, boot_laws)
    summary["caveats"] = caveats(summary)
    return Analysis(summary=summary, points=points, boot_laws=boot_laws,
                    boot_frontiers=boot_frontiers, savings_curves=curves)


def _compare(a, b, fam_points, laws, frontiers, boot_laws, boot_frontiers, target_loss):
    pa, pb = fam_points[a], fam_points[b]
    n_cmp = default_comparison_size(pa.n_params, pb.n_params)
    target = target_loss if target_loss is not None else default_target_loss(pa.loss, pb.loss)
    sav = savings_factor(laws[a], laws[b], n_cmp, target)
    sav_boot = [savings_factor(x, y, n_cmp, target)["value"]
                for x, y in zip(boot_laws[a], boot_laws[b])]
    sav["ci"] = percentile_interval(sav_boot, CI_LEVEL)
    sav["n_boot_inf"] = int(np.sum(np.isinf(sav_boot)))
    if frontiers[a] and frontiers[b]:
        mult = compute_multiplier(frontiers[a], frontiers[b], target)
        mult_boot = [compute_multiplier(x, y, target)["value"]
                     for x, y in zip(boot_frontiers[a], boot_frontiers[b]) if x and y]
        mult["ci"] = percentile_interval(mult_boot, CI_LEVEL)
        mult["n_boot_inf"] = int(np.sum(np.isinf(mult_boot)))
    else:
        mult = {"value": float("nan"), "note": "a frontier could not be fitted", "ci": None}
    comp = {"baseline": a, "challenger": b, "n_params": n_cmp, "target_loss": target,
            "target_loss_source": "--target-loss" if target_loss is not None else
            "max over the two families of their best observed loss",
            "savings_factor": sav, "compute_multiplier": mult}
    return comp, _curve(a, b, laws, boot_laws, n_cmp, pa, pb)


def _curve(a, b, laws, boot_laws, n_cmp, pa, pb):
    """Savings factor over the losses observed at the comparison size, with its band.

    From the lowest loss either family reached to the highest loss of the runs at the
    comparison size (their shortest decay); below that the curve would extrapolate in
    D, and near the asymptote it would only show the blow-up of 1 / (L - asymptote).
    """
    asym = max(laws[f]["E"] + laws[f]["A"] / n_cmp ** laws[f]["alpha"] for f in (a, b))
    lo = float(min(pa.loss.min(), pb.loss.min()))
    at_size = [p.loss[p.n_params == p.n_params[p.n_params <= n_cmp].max()] for p in (pa, pb)]
    hi = float(max(x.max() for x in at_size))
    lo = max(lo, asym + 0.02 * max(hi - asym, 1e-9))
    targets = np.linspace(lo, max(hi, lo * 1.001), _N_CURVE)
    value = savings_curve(laws[a], laws[b], n_cmp, targets)
    reps = np.array([savings_curve(x, y, n_cmp, targets)
                     for x, y in zip(boot_laws[a], boot_laws[b])])
    band = [percentile_interval(reps[:, j], CI_LEVEL) if reps.size else None
            for j in range(targets.shape[0])]
    return {"baseline": a, "challenger": b, "n_params": n_cmp, "targets": targets,
            "value": value, "lo": np.array([x["lo"] if x else np.nan for x in band]),
            "hi": np.array([x["hi"] if x else np.nan for x in band])}


def caveats(summary: dict) -> list[str]:
    """Plain-language limits of this particular analysis."""
    out = []
    n_boot = summary["settings"]["n_bootstrap"]
    if n_boot == 0:
        out.append("No bootstrap replicates (--bootstrap 0), so no intervals: the point "
                   "estimates alone say nothing about which family is better.")
    elif n_boot < 100:
        out.append(f"Only {n_boot} bootstrap replicates: the 95% intervals' end points are "
                   "themselves noisy (the paper uses 100).")
    for f, s in summary["families"].items():
        if s["n_points"] < 20 or len(s["sizes"]) < 4:
            out.append(f"{f}: {s['n_points']} points from {len(s['sizes'])} sizes fit a "
                       "5-parameter law; E, A and alpha trade off strongly at this ladder "
                       "length, so read the intervals, not the point values.")
        span = max(s["sizes"]) / min(s["sizes"])
        if span < 10:
            out.append(f"{f}: the sizes span only {span:.1f}x in N (the paper's ladder spans "
                       f"about {PAPER.n_span:g}x), which leaves the N term weakly constrained.")
        loose = [k for k in ("E", "alpha", "beta") if is_loose(s["law_ci"].get(k))]
        if loose:
            out.append(f"{f}: the 95% intervals of {', '.join(loose)} span more than a factor "
                       f"of {LOOSE_FACTOR:g}, so the data do not pin them down; comparisons of "
                       "these parameters across families are not meaningful at this precision.")
        if s["n_runs"] < 5:
            out.append(f"{f}: {s['n_runs']} runs is a small bootstrap population; resampling "
                       "so few runs understates uncertainty in some replicates and "
                       "overstates it in others.")
        bounds = summary["settings"]["recipe_options"]["exponent_bounds"]
        if bounds:
            for k in ("alpha", "beta"):
                if min(abs(s["law"][k] - bounds[0]), abs(s["law"][k] - bounds[1])) < 1e-6:
                    out.append(f"{f}: {k} sits on its bound {bounds}; the data do not "
                               "constrain it.")
        if s["frontier"] is None:
            out.append(f"{f}: too few envelope points to fit a compute frontier.")
        elif s["frontier"]["n_points"] < 5:
            out.append(f"{f}: the compute frontier rests on {s['frontier']['n_points']} "
                       "envelope points.")
        if "skipped" in s["rollout"]:
            out.append(f"{f}: rollout validation skipped ({s['rollout']['skipped']}).")
    for c in summary["comparisons"]:
        for key in ("savings_factor", "compute_multiplier"):
            if c[key].get("note"):
                out.append(f"{c['challenger']} vs {c['baseline']} {key.replace('_', ' ')}: "
                           f"{c[key]['note']}.")
            if c[key].get("n_boot_inf"):
                out.append(f"{c['challenger']} vs {c['baseline']} {key.replace('_', ' ')}: "
                           f"{c[key]['n_boot_inf']} of {n_boot} replicates never reach the "
                           "target loss, so the interval is open-ended.")
    return out


def _pick_baseline(families, baseline):
    if baseline is not None:
        if baseline not in families:
            raise ResultsError(f"baseline family {baseline!r} not in the results {families}")
        return baseline
    return DEFAULT_BASELINE if DEFAULT_BASELINE in families else families[0]


def _try_frontier(points: Points, warm_start=None):
    try:
        return fit_frontier(points.flops, points.loss, warm_start=warm_start)
    except ValueError:
        return None


def _cis(samples, keys):
    if not samples:
        return {k: None for k in keys}
    return {k: percentile_interval([s[k] for s in samples], CI_LEVEL) for k in keys}


def _law_summary(law):
    return {**{k: law[k] for k in LAW_KEYS}, "objective": law["objective"],
            "n_starts": law["n_starts"], "n_at_optimum": law["n_at_optimum"],
            "seconds": law["seconds"], "settings": law["settings"]}


def _frontier_summary(fr):
    return None if fr is None else {k: fr[k] for k in (*FRONTIER_KEYS, "n_points", "objective")}


def _bucket_summary(b):
    return {"flops": b.flops, "n_points": int(b.members.shape[0]), "coeffs": b.coeffs,
            "n_opt": b.n_opt, "loss_opt": b.loss_opt, "interior": b.interior}


def _jsonable(options):
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()}
