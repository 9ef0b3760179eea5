"""Comparison with the Olmo Hybrid paper: cases whose answer is known by hand."""

import json
import math

import numpy as np
import pytest

from analysis.cli import main
from analysis.ordering import observed_ordering, ratio_targets
from analysis.paper import (AGREE, CANNOT_TELL, DISAGREE, PAPER, interval_verdict,
                            paper_comparison)
from analysis.report import to_jsonable
from analysis.results import Points, rows_to_result_set
from analysis.synthetic import TRANSFORMER_LAW, law_with_savings, make_rows, write_jsonl

ORDER = ["hybrid", "gdn", "transformer"]
N = {"hybrid": 1.00e7, "gdn": 1.05e7, "transformer": 0.90e7}  # one rung, different N
JITTER = {"hybrid": 1.003, "gdn": 0.998, "transformer": 1.0}    # realised D/N misses target


def _points(cells, size_scale=None):
    """cells: (size label, D/N target, {family: loss}); N grows with the size's index."""
    rows = []
    for size, ratio, losses in cells:
        scale = (size_scale or {}).get(size, 1.0)
        for fam, loss in losses.items():
            n = N[fam] * scale
            rows.append((f"{fam}-{size}", fam, n, ratio * n * JITTER[fam], loss, size))
    cols = list(zip(*rows))
    return Points(run_id=np.array(cols[0]), family=np.array(cols[1]),
                  n_params=np.array(cols[2]), tokens=np.array(cols[3]),
                  flops=6.0 * np.array(cols[2]) * np.array(cols[3]), loss=np.array(cols[4]),
                  size=np.array(cols[5]))


def _ci(lo, hi, n=100):
    return {"lo": lo, "hi": hi, "n": n, "n_nan": 0}


def _summary(families, savings=None, baseline="transformer", ci_level=0.95):
    """families: name -> (alpha, beta, alpha CI, beta CI); laws otherwise equal."""
    fams = {f: {"sizes": [1e7, 2e7], "law": {**TRANSFORMER_LAW, "alpha": a, "beta": b},
                "law_ci": {"alpha": ca, "beta": cb}} for f, (a, b, ca, cb) in families.items()}
    comps = [{"baseline": baseline, "challenger": c, "n_params": 2e7, "target_loss": 2.5,
              "savings_factor": savings or {"value": 1.4, "ci": _ci(1.2, 1.7), "note": "",
                                            "n_boot_inf": 0}}
             for c in fams if c != baseline]
    return {"families": fams, "comparisons": comps,
            "settings": {"ci_level": ci_level, "baseline": baseline}}


def test_ordering_counts_cells_and_pairs():
    cells = [("s1", 10, {"hybrid": 3.0, "gdn": 3.1, "transformer": 3.2}),  # paper's order
             ("s1", 20, {"hybrid": 2.9, "gdn": 3.1, "transformer": 3.0}),
             ("s2", 10, {"hybrid": 2.8, "gdn": 3.0, "transformer": 2.9}),
             ("s2", 20, {"hybrid": 2.8, "gdn": 2.9, "transformer": 2.7}),
             ("s3", 10, {"hybrid": 2.6, "transformer": 2.7})]             # lacks gdn
    points = _points(cells, size_scale={"s1": 1.0, "s2": 2.0, "s3": 4.0})
    obs = observed_ordering(points, ORDER)
    assert obs["n_cells"] == 4 and obs["n_cells_missing_a_family"] == 1
    assert obs["orderings"] == {"hybrid<transformer<gdn": 2, "hybrid<gdn<transformer": 1,
                                "transformer<hybrid<gdn": 1}
    assert obs["n_expected"] == 1
    assert obs["best_counts"] == {"hybrid": 3, "gdn": 0, "transformer": 1}
    assert [(q["lower"], q["higher"], q["n_holds"]) for q in obs["pairs"]] == [
        ("hybrid", "gdn", 4), ("hybrid", "transformer", 3), ("gdn", "transformer", 1)]
    assert obs["by_size"] == {"s1": {"n_cells": 2, "n_expected": 1},
                              "s2": {"n_cells": 2, "n_expected": 0}}
    assert [(c["size"], c["ratio"]) for c in obs["cells"]] == [
        ("s1", 10), ("s1", 20), ("s2", 10), ("s2", 20)]

    pc = paper_comparison(_summary({f: (0.2, 0.2, None, None) for f in ORDER}), points)
    verdict = pc["observed_ordering"]["verdict"]
    assert verdict["verdict"] == DISAGREE  # 1 of 4 = the disagree threshold
    assert "1 of 4 cells" in verdict["reason"] and "gdn<transformer holds in only 1 of 4" in verdict["reason"]


def test_ordering_verdict_thresholds():
    good = {"hybrid": 3.0, "gdn": 3.1, "transformer": 3.2}
    bad = {"hybrid": 3.0, "gdn": 3.3, "transformer": 3.2}
    summary = _summary({f: (0.2, 0.2, None, None) for f in ORDER})
    for n_good, expected in ((3, AGREE), (2, CANNOT_TELL), (1, DISAGREE)):
        cells = [(f"s{k}", 10, good if k < n_good else bad) for k in range(4)]
        pc = paper_comparison(summary, _points(cells, {f"s{k}": 2.0 ** k for k in range(4)}))
        assert pc["observed_ordering"]["verdict"]["verdict"] == expected


def test_repeated_runs_and_unlabelled_points_are_left_out():
    cells = [("s1", 10, {"hybrid": 3.0, "gdn": 3.1, "transformer": 3.2})] * 2 \
        + [("s2", 10, {"hybrid": 2.8, "gdn": 2.9, "transformer": 3.0})]
    points = _points(cells, {"s2": 2.0})
    size = points.size.copy()
    size[-1] = ""  # the s2 transformer run has no label: s2 lacks a family
    obs = observed_ordering(Points(**{**vars(points), "size": size}), ORDER)
    assert obs["n_cells_with_repeats"] == 1 and obs["n_cells_missing_a_family"] == 1
    assert obs["n_points_unlabelled"] == 1
    assert obs["skipped"].startswith("no cell")


def test_ratio_targets_cluster_realised_decays():
    got = ratio_targets([2.497, 20.02, 2.503, 4.99, 5.01, 10.0, 19.997, 9.999])
    assert got.tolist() == [2.5, 20.0, 2.5, 5.0, 5.0, 10.0, 20.0, 10.0]


def test_rows_without_size_labels_do_not_crash():
    rows = make_rows({f: TRANSFORMER_LAW for f in ORDER}, sizes=(2e7, 4e7), ratios=(10, 20),
                     noise=0.0)
    for row in rows:
        del row["size"]
    points = rows_to_result_set(rows).points
    assert set(points.size.tolist()) == {""}
    for pts in (points, Points(**{**vars(points), "size": None})):
        pc = paper_comparison(_summary({f: (0.2, 0.2, None, None) for f in ORDER}), pts)
        obs = pc["observed_ordering"]
        assert "no 'size' label" in obs["skipped"]
        assert obs["verdict"]["verdict"] == CANNOT_TELL
        assert pc["verdicts"][0]["item"] == "loss ordering, observed cells"


@pytest.mark.parametrize("paper, ci, verdict, inside, open_ended", [
    (0.25, _ci(0.20, 0.30), AGREE, True, False),
    (0.25, _ci(0.30, 0.40), DISAGREE, False, False),
    (0.25, _ci(0.50, 2.00), DISAGREE, False, False),     # wide, but excludes the paper
    (0.25, _ci(0.05, 1.00), CANNOT_TELL, True, False),   # inside only because it is wide
    (0.25, _ci(0.00, 0.30), CANNOT_TELL, True, False),   # touches 0
    (1.5, _ci(0.7, math.inf), CANNOT_TELL, True, True),  # open-ended, in memory
    (1.5, _ci(0.7, None), CANNOT_TELL, True, True),      # open-ended, as fits.json has it
    (1.5, _ci(1.6, math.inf), DISAGREE, False, True),    # open-ended above the paper
    (1.5, _ci(float("nan"), float("nan"), n=0), CANNOT_TELL, None, None),
    (1.5, None, CANNOT_TELL, None, None),
])
def test_interval_verdict(paper, ci, verdict, inside, open_ended):
    got = interval_verdict(paper, ci)
    assert (got["verdict"], got["inside_ci"], got["open_ended"]) == (verdict, inside, open_ended)
    assert got["reason"]
    assert ("open-ended" in got["reason"]) == bool(open_ended)


def test_exponents_and_savings_against_paper():
    tr, hy = PAPER.exponents[0], PAPER.exponents[1]
    summary = _summary({"transformer": (0.3, 0.21, _ci(0.28, 0.35), _ci(0.2, 0.22)),
                        "hybrid": (0.23, 0.5, _ci(0.05, 0.6), _ci(0.4, 0.6))},
                       savings={"value": 1.3, "ci": _ci(0.9, math.inf), "note": "",
                                "n_boot_inf": 7})
    pc = paper_comparison(summary, _points([("s1", 10, {"hybrid": 3.0, "transformer": 3.1})]))
    assert pc["families"] == ["hybrid", "transformer"] and pc["missing_families"] == ["gdn"]
    rows = {(r["family"], r["exponent"]): r for r in pc["exponents"]["rows"]}
    assert rows["transformer", "alpha"]["paper"] == tr.alpha
    assert rows["transformer", "alpha"]["verdict"] == DISAGREE    # 0.252 < 0.28
    assert rows["transformer", "beta"]["verdict"] == AGREE        # 0.213 in [0.2, 0.22]
    assert rows["hybrid", "alpha"]["verdict"] == CANNOT_TELL      # inside a 12x-wide CI
    assert rows["hybrid", "beta"]["paper"] == hy.beta
    assert rows["hybrid", "beta"]["verdict"] == DISAGREE
    assert pc["exponents"]["skipped"] == [{"family": "gdn", "skipped": "not in the results"}]
    sv = pc["savings_factor"]
    assert (sv["ours"], sv["paper"], sv["inside_ci"], sv["open_ended"]) == (1.3, 1.5, True, True)
    assert sv["verdict"] == CANNOT_TELL and sv["n_boot_inf"] == 7
    json.dumps(to_jsonable(pc), allow_nan=False)  # inf bound becomes null: strict JSON


def test_missing_families_are_skipped_with_reasons():
    laws = (0.2, 0.2, None, None)
    pts = _points([("s1", 10, {"gdn": 3.0, "transformer": 3.1})])
    pc = paper_comparison(_summary({"gdn": laws, "transformer": laws}), pts)
    assert pc["savings_factor"] == {"skipped": "hybrid not in the results"}
    assert pc["observed_ordering"]["orderings"] == {"gdn<transformer": 1}
    assert pc["observed_ordering"]["verdict"]["verdict"] == AGREE

    pc = paper_comparison(_summary({"hybrid": laws, "transformer": laws}, baseline="hybrid"),
                          pts)
    assert "--baseline transformer" in pc["savings_factor"]["skipped"]

    pc = paper_comparison(_summary({"transformer": laws, "mamba": laws}), pts)
    assert "at least two" in pc["skipped"] and pc["other_families"] == ["mamba"]
    assert "exponents" not in pc


def test_fitted_ordering_uses_paired_replicates():
    laws = {"hybrid": law_with_savings(TRANSFORMER_LAW, 1.5),
            "gdn": law_with_savings(TRANSFORMER_LAW, 1.2), "transformer": TRANSFORMER_LAW}
    summary = _summary({f: (0.3, 0.28, None, None) for f in ORDER})
    for f in ORDER:
        summary["families"][f]["law"] = laws[f]
    summary["families"]["gdn"]["sizes"] = [1e7, 3e7]  # the common point is gdn's 3e7
    pts = _points([("s1", 10, {"hybrid": 3.0, "gdn": 3.1, "transformer": 3.2})])
    boot = {f: [laws[f]] * 19 + [laws["transformer"] if f == "hybrid" else laws[f]]
            for f in ORDER}  # the last replicate ties hybrid with transformer
    fit = paper_comparison(summary, pts, boot)["fitted_ordering"]
    assert fit["n_params"] == 3e7 and fit["tokens"] == 6e8
    assert fit["extrapolated_in_n"] == ["hybrid", "transformer"] and "gdn's" in fit["point"]
    assert fit["ordering"] == "hybrid<gdn<transformer"
    assert fit["replicates"]["n_expected"] == 19
    assert fit["replicates"]["orderings"]["gdn<hybrid=transformer"] == 1
    assert fit["verdict"]["verdict"] == AGREE  # 19 / 20 = the 95% level
    fit = paper_comparison(summary, pts, None)["fitted_ordering"]
    assert fit["verdict"]["verdict"] == CANNOT_TELL and fit["replicates"]["n"] == 0


def _three_family_results(tmp_path):
    laws = {"hybrid": law_with_savings(TRANSFORMER_LAW, 1.5),
            "gdn": law_with_savings(TRANSFORMER_LAW, 1.2), "transformer": TRANSFORMER_LAW}
    rows = make_rows(laws, sizes=(20e6, 40e6, 80e6), ratios=(10, 20, 40), noise=0.002,
                     seed=4)
    return write_jsonl(rows, tmp_path / "results.jsonl")


def test_cli_report_has_the_section(tmp_path):
    results = _three_family_results(tmp_path)
    out = tmp_path / "report"
    assert main([str(results), "--out", str(out), "--bootstrap", "4"]) == 0
    md = (out / "REPORT.md").read_text()
    head = "## Comparison with the paper (Olmo Hybrid, arXiv 2604.03444)"
    assert head in md and md.index(head) < md.index("## Caveats")
    for sub in ("### Loss ordering", "### Exponents", "### Savings factor", "### Verdicts"):
        assert sub in md
    assert "| `hybrid<gdn<transformer` | 9 | yes |" in md
    pc = json.loads((out / "fits.json").read_text())["paper_comparison"]
    assert pc["observed_ordering"]["verdict"]["verdict"] == AGREE
    assert pc["savings_factor"]["ci"]["n"] == 4

    assert main([str(results), "--out", str(out), "--bootstrap", "0", "--no-paper"]) == 0
    assert "Comparison with the paper" not in (out / "REPORT.md").read_text()
    assert "paper_comparison" not in json.loads((out / "fits.json").read_text())
