"""The Olmo Hybrid paper's claims, and whether our fits agree with them.

Why here: a reader of REPORT.md wants to know, claim by claim, whether a small ladder
reproduces the paper, and fits.json and REPORT.md must say the same thing, so the
numbers and verdicts are computed once, from the analysis summary and its points.

Items (each gets "agree", "disagree" or "cannot tell at this precision" and a reason):
* Loss ordering, observed per matched cell (one ladder size label and one D/N target;
  `analysis.ordering`): agree when the paper's order holds in at least
  ORDER_AGREE_SHARE of the cells, disagree when in at most 1 - ORDER_AGREE_SHARE;
  between, single-seed runs cannot tell a mixed pattern from noise.
* Loss ordering of the fitted laws at the largest N among the families' largest sizes,
  D = 20 N: judged by the share of paired bootstrap replicates in the paper's order (at
  least the CI level: agree; at most 1 - level: disagree).
* Exponents (alpha, beta) and the hybrid-vs-transformer savings factor, against our
  bootstrap CI: a paper value outside the CI disagrees however wide the CI; inside an
  open-ended CI, or one whose ends differ by more than LOOSE_FACTOR, we cannot tell;
  inside a tighter CI it agrees; with no CI (--bootstrap 0) we cannot tell.
Families of the paper missing from the results are skipped with a reason, never guessed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from analysis.bootstrap import LOOSE_FACTOR, is_loose
from analysis.ordering import fitted_ordering, observed_ordering
from analysis.results import Points

AGREE, DISAGREE, CANNOT_TELL = "agree", "disagree", "cannot tell at this precision"
# One Chinchilla (1xC), the paper's unit of D/N; the fitted-law ordering is read there.
TOKENS_PER_PARAM = 20.0
# "Persists with scale" asks the order to hold at nearly every rung; one seed per cell
# lets noise flip a close cell, so three cells in four is where we call it agreement.
ORDER_AGREE_SHARE = 0.75


@dataclass(frozen=True)
class PaperExponents:
    family: str
    alpha: float
    beta: float


@dataclass(frozen=True)
class PaperReference:
    """One paper's claims; loss_order lists families best (lowest loss) first."""

    title: str
    arxiv: str
    loss_order: tuple[str, ...]
    exponents: tuple[PaperExponents, ...]
    savings_baseline: str
    savings_challenger: str
    savings_factor: float
    savings_context: str
    n_span: float  # largest / smallest N of its ladder

    def __post_init__(self):
        named = {e.family for e in self.exponents} | {self.savings_baseline,
                                                      self.savings_challenger}
        if not named <= set(self.loss_order):
            raise ValueError(f"families {sorted(named - set(self.loss_order))} are not in "
                             f"loss_order {self.loss_order}")


# Merrill, Svete, Sabharwal et al. 2026, "Olmo Hybrid: From Theory to Practice and Back",
# arXiv 2604.03444, as summarised in docs/paper.md: exponents read off its scaling-law
# figure; savings factor 1.5 from "about 35% fewer tokens" on Common Crawl loss at 7B;
# ladder 60M-1B parameters.
PAPER = PaperReference(
    title="Olmo Hybrid", arxiv="2604.03444",
    loss_order=("hybrid", "gdn", "transformer"),
    exponents=(PaperExponents("transformer", 0.252, 0.213),
               PaperExponents("hybrid", 0.226, 0.219),
               PaperExponents("gdn", 0.183, 0.227)),
    savings_baseline="transformer", savings_challenger="hybrid", savings_factor=1.5,
    savings_context="Common Crawl loss at 7B parameters",
    n_span=17.0,
)


def present_families(families, ref: PaperReference = PAPER) -> list[str]:
    """The paper's families found in `families`, in the paper's loss order."""
    return [f for f in ref.loss_order if f in set(families)]


def paper_comparison(summary: dict, points: Points, boot_laws: dict | None = None,
                     ref: PaperReference = PAPER) -> dict:
    """JSON-able comparison of an analysis summary (and its points) with `ref`.

    boot_laws (family -> paired replicate laws, as in `Analysis.boot_laws`) are
    optional; without them the fitted-law ordering has no verdict beyond its point value.
    """
    families = present_families(summary["families"], ref)
    out = {"reference": dataclasses.asdict(ref), "families": families,
           "missing_families": [f for f in ref.loss_order if f not in families],
           "other_families": [f for f in summary["families"] if f not in ref.loss_order]}
    if len(families) < 2:
        out["skipped"] = (f"needs at least two of the paper's families {list(ref.loss_order)}; "
                          f"the results have {families or 'none'}")
        return out
    level = summary["settings"]["ci_level"]
    obs = observed_ordering(points, families)
    fit = fitted_ordering(summary["families"], families, boot_laws, TOKENS_PER_PARAM)
    out["observed_ordering"] = {**obs, "verdict": observed_verdict(obs)}
    out["fitted_ordering"] = {**fit, "verdict": fitted_verdict(fit, level)}
    out["exponents"] = exponents_vs_paper(summary, ref, level)
    out["savings_factor"] = savings_vs_paper(summary, ref, level)
    out["verdicts"] = _verdict_list(out)
    return out


def observed_verdict(obs: dict) -> dict:
    """Judge `ordering.observed_ordering` output against its expected (the paper's) order."""
    if "skipped" in obs:
        return _verdict(CANNOT_TELL, obs["skipped"])
    n, k = obs["n_cells"], obs["n_expected"]
    text = f"the paper's order {obs['expected']} holds in {k} of {n} cells"
    if k / n >= ORDER_AGREE_SHARE:
        return _verdict(AGREE, text)
    if k / n > 1 - ORDER_AGREE_SHARE:
        return _verdict(CANNOT_TELL, f"{text}: a mixed pattern that single-seed runs cannot "
                                     "tell from noise")
    top, k_top = next(iter(obs["orderings"].items()))
    failing = [f"{q['lower']}<{q['higher']} holds in only {q['n_holds']} of {n}"
               for q in obs["pairs"] if q["n_holds"] <= n / 2]
    return _verdict(DISAGREE, f"{text}; most common is {top} ({k_top})"
                    + (f"; the pair that fails: {', '.join(failing)}" if len(failing) == 1 else
                       f"; the pairs that fail: {', '.join(failing)}" if failing else ""))


def fitted_verdict(fit: dict, level: float) -> dict:
    """Judge `ordering.fitted_ordering` by its share of replicates in the expected order."""
    n, k = fit["replicates"]["n"], fit["replicates"]["n_expected"]
    text = f"the fitted laws give {fit['ordering']}"
    if n == 0:
        return _verdict(CANNOT_TELL, f"{text}, but no bootstrap replicates say how firmly")
    text += f"; the paper's order in {k} of {n} paired replicates"
    if k / n >= level:
        return _verdict(AGREE, text)
    return _verdict(DISAGREE if k / n <= 1 - level else CANNOT_TELL, text)


def exponents_vs_paper(summary: dict, ref: PaperReference = PAPER, level: float = 0.95) -> dict:
    """Our alpha, beta (with CI) beside the paper's, per family present in both."""
    rows, skipped = [], []
    for pe in ref.exponents:
        fam = summary["families"].get(pe.family)
        if fam is None:
            skipped.append({"family": pe.family, "skipped": "not in the results"})
            continue
        for key in ("alpha", "beta"):
            ci = fam["law_ci"].get(key)
            rows.append({"family": pe.family, "exponent": key, "ours": fam["law"][key],
                         "ci": ci, "paper": getattr(pe, key),
                         **interval_verdict(getattr(pe, key), ci, level)})
    return {"rows": rows, "skipped": skipped}


def savings_vs_paper(summary: dict, ref: PaperReference = PAPER, level: float = 0.95) -> dict:
    """Our savings factor (challenger vs baseline, with CI) beside the paper's."""
    base, chal = ref.savings_baseline, ref.savings_challenger
    missing = [f for f in (base, chal) if f not in summary["families"]]
    if missing:
        return {"skipped": f"{' and '.join(missing)} not in the results"}
    comp = next((c for c in summary["comparisons"]
                 if (c["baseline"], c["challenger"]) == (base, chal)), None)
    if comp is None:
        return {"skipped": f"no {chal}-vs-{base} comparison: the baseline was "
                           f"{summary['settings']['baseline']!r} (use --baseline {base})"}
    sf = comp["savings_factor"]
    out = {"baseline": base, "challenger": chal, "ours": sf["value"], "ci": sf.get("ci"),
           "n_params": comp["n_params"], "target_loss": comp["target_loss"],
           "paper": ref.savings_factor, "paper_context": ref.savings_context,
           "n_boot_inf": sf.get("n_boot_inf", 0)}
    if sf["value"] is None or math.isnan(sf["value"]):
        return {**out, "inside_ci": None, "open_ended": None,
                "verdict": CANNOT_TELL, "reason": f"no savings factor: {sf.get('note')}"}
    return {**out, **interval_verdict(ref.savings_factor, sf.get("ci"), level)}


def interval_verdict(paper: float, ci: dict | None, level: float = 0.95) -> dict:
    """Is the paper's value inside our CI, and what can we say? (module docstring rules)"""
    pct = f"{100 * level:g}%"
    if not ci or ci.get("n", 0) == 0:
        return {"inside_ci": None, "open_ended": None, "verdict": CANNOT_TELL,
                "reason": "no bootstrap interval (--bootstrap 0, or no usable replicate)"}
    # fits.json writes an infinite bound as null; with n > 0 a bound is never NaN, and
    # these statistics are non-negative, so null can only mean +inf.
    lo, hi = (math.inf if ci[k] is None else float(ci[k]) for k in ("lo", "hi"))
    inside, open_ended = bool(lo <= paper <= hi), math.isinf(hi)
    span = f"[{lo:.3g}, {hi:.3g}]" + (" (open-ended)" if open_ended else "")
    out = {"inside_ci": inside, "open_ended": open_ended}
    if not inside:
        side = "below" if paper < lo else "above"
        return {**out, "verdict": DISAGREE,
                "reason": f"the paper's {paper:g} lies {side} our {pct} CI {span}"}
    if open_ended:
        return {**out, "verdict": CANNOT_TELL,
                "reason": f"our {pct} CI {span} rules out nothing above {lo:.3g}: some "
                          "replicates never reach the target loss"}
    if is_loose({"lo": lo, "hi": hi, "n": ci["n"]}):
        return {**out, "verdict": CANNOT_TELL,
                "reason": f"the paper's {paper:g} lies inside our {pct} CI {span}, but that "
                          f"CI spans more than {LOOSE_FACTOR:g}x"}
    return {**out, "verdict": AGREE,
            "reason": f"the paper's {paper:g} lies inside our {pct} CI {span}"}


def _verdict(verdict: str, reason: str) -> dict:
    return {"verdict": verdict, "reason": reason}


def _verdict_list(out: dict) -> list[dict]:
    items = []
    for key, label in (("observed_ordering", "loss ordering, observed cells"),
                       ("fitted_ordering", "loss ordering, fitted laws")):
        items.append({"item": label, **out[key]["verdict"]})
    for row in out["exponents"]["rows"]:
        items.append({"item": f"{row['exponent']}, {row['family']}", "verdict": row["verdict"],
                      "reason": row["reason"]})
    sv = out["savings_factor"]
    if "skipped" not in sv:
        items.append({"item": f"savings factor, {sv['challenger']} vs {sv['baseline']}",
                      "verdict": sv["verdict"], "reason": sv["reason"]})
    return items
