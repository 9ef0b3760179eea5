"""Which family has the lower loss: per matched ladder cell, and per fitted law.

Why cells: at one ladder rung the families' N differ (their mixers differ), so losses
are compared between runs that share a size label and a D/N target, the way a ladder
plot is read. A cell counts only with exactly one point of every family compared.
Rows carry D/N only as tokens / n_params, which misses the decay's target by a
fraction of a batch and differently per family, so targets are recovered by
clustering (RATIO_REL_TOL); the ladder's targets are a factor of 2 apart (2.5-20 here,
10-80 in the paper) and realised D/N lie within 1% of them.

Orderings are strings, lowest loss first: "hybrid<gdn<transformer" ("=" joins exact
ties). This module measures; `analysis.paper` judges against the paper's claims.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from analysis.fit import predict
from analysis.results import Points

RATIO_REL_TOL = 0.05


def observed_ordering(points: Points, order: list[str]) -> dict:
    """Counts of orderings over matched cells, and how often `order` holds.

    order: the families to compare, in the expected order (lowest loss first).

    Returns {"skipped": reason, ...} when the rows carry no size labels or no cell is
    complete; points without a size label are left out and counted.
    """
    expected = ordering_text({f: k for k, f in enumerate(order)})
    families = list(order)
    ours = np.isin(points.family, families)
    if points.size is None or not np.any(points.size[ours] != ""):
        return {"expected": expected,
                "skipped": "the rows carry no 'size' label, so points of different families "
                           "cannot be matched into cells; the ordering by cell is unavailable"}
    p = points.take(np.flatnonzero(ours & (points.size != "")))
    targets = ratio_targets(p.tokens / p.n_params)
    groups: dict = {}
    for i in range(len(p)):
        cell = groups.setdefault((str(p.size[i]), float(targets[i])), {})
        cell.setdefault(str(p.family[i]), []).append(float(p.loss[i]))
    mean_n = {s: float(np.mean(p.n_params[p.size == s])) for s in set(p.size.tolist())}
    cells, n_missing, n_repeated = [], 0, 0
    for (size, ratio), by_family in sorted(groups.items(),
                                           key=lambda kv: (mean_n[kv[0][0]], kv[0][1])):
        if set(by_family) != set(families):
            n_missing += 1
        elif any(len(v) > 1 for v in by_family.values()):
            n_repeated += 1  # several runs of one family (seeds?): no single order to read
        else:
            losses = {f: by_family[f][0] for f in families}
            cells.append({"size": size, "ratio": ratio, "losses": losses,
                          "ordering": ordering_text(losses)})
    out = {"expected": expected, "n_points_unlabelled": int(np.sum(ours)) - len(p),
           "n_cells_missing_a_family": n_missing, "n_cells_with_repeats": n_repeated,
           "n_cells": len(cells)}
    if not cells:
        out["skipped"] = (f"no cell (size label, D/N target) has exactly one point of each "
                          f"of {families}")
        return out
    by_size: dict = {}
    for c in cells:
        s = by_size.setdefault(c["size"], {"n_cells": 0, "n_expected": 0})
        s["n_cells"] += 1
        s["n_expected"] += int(c["ordering"] == expected)
    counts = Counter(c["ordering"] for c in cells)
    return {**out, "orderings": dict(counts.most_common()),
            "n_expected": counts.get(expected, 0),
            "best_counts": {f: sum(int(c["losses"][f] == min(c["losses"].values()))
                                   for c in cells) for f in families},
            "pairs": [{"lower": a, "higher": b,
                       "n_holds": sum(int(c["losses"][a] < c["losses"][b]) for c in cells)}
                      for i, a in enumerate(order) for b in order[i + 1:]],
            "by_size": by_size, "cells": cells}


def fitted_ordering(family_summaries: dict, order: list[str], boot_laws: dict | None,
                    tokens_per_param: float) -> dict:
    """Ordering of the fitted laws at N = the largest of the families' largest sizes,
    D = tokens_per_param * N, and the orderings over paired bootstrap replicates.

    family_summaries: summary["families"]; order as in `observed_ordering`; boot_laws:
    family -> replicate laws, replicate k paired across families (or None).
    """
    families = list(order)
    largest = {f: float(max(family_summaries[f]["sizes"])) for f in families}
    at = max(largest, key=largest.get)
    n = largest[at]
    d = tokens_per_param * n
    losses = {f: float(predict(family_summaries[f]["law"], n, d)) for f in families}
    extrapolated = [f for f in families if largest[f] < n]
    reps = [boot_laws[f] for f in families] if boot_laws else []
    if any(len(r) != len(reps[0]) for r in reps):
        raise ValueError("bootstrap laws must be paired: as many replicates for every family")
    orders = Counter(ordering_text({f: float(predict(r[k], n, d))
                                    for f, r in zip(families, reps)})
                     for k in range(len(reps[0]) if reps else 0))
    expected = ordering_text({f: k for k, f in enumerate(order)})
    return {"n_params": n, "tokens": d, "at_family": at, "extrapolated_in_n": extrapolated,
            "point": f"N = {n:,.0f} ({at}'s largest size, the largest among the families' "
                     f"largest sizes" + (f"; extrapolated in N for {', '.join(extrapolated)}"
                                         if extrapolated else "")
                     + f"), D = {tokens_per_param:g} N",
            "losses": losses, "ordering": ordering_text(losses), "expected": expected,
            "replicates": {"n": sum(orders.values()), "n_expected": orders.get(expected, 0),
                           "orderings": dict(orders.most_common())}}


def ratio_targets(ratio_I) -> np.ndarray:
    """Each D/N replaced by its cluster's median (3 significant digits).

    Sorted values start a new cluster when more than RATIO_REL_TOL above the first
    value of the current one, so a chain of close values cannot drift into a neighbour.
    """
    ratio_I = np.asarray(ratio_I, dtype=np.float64)
    out = np.empty_like(ratio_I)
    members: list[int] = []
    for i in [*np.argsort(ratio_I, kind="stable").tolist(), None]:
        if members and (i is None or ratio_I[i] > ratio_I[members[0]] * (1 + RATIO_REL_TOL)):
            out[members] = float(f"{np.median(ratio_I[members]):.3g}")
            members = []
        if i is not None:
            members.append(i)
    return out


def ordering_text(losses: dict) -> str:
    """'a<b<c', lowest loss first; '=' joins exact ties."""
    fams = sorted(losses, key=lambda f: losses[f])
    text = fams[0]
    for prev, f in zip(fams, fams[1:]):
        text += ("=" if losses[f] == losses[prev] else "<") + f
    return text
