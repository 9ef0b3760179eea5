"""Savings factor, unreachable targets, and rollout validation, on laws with known answers."""

import math

import numpy as np
import pytest

from analysis.compare import (rollout_validation, savings_curve, savings_factor,
                              tokens_to_reach)
from analysis.pipeline import analyse, fit_law
from analysis.results import rows_to_result_set
from analysis.synthetic import TRANSFORMER_LAW, law_with_savings, loss_of, make_rows

WIDE = {"sizes": tuple(10e6 * 2 ** k for k in range(7)), "ratios": (5, 10, 20, 40, 80, 160)}


def test_tokens_to_reach_inverts_the_law():
    d = tokens_to_reach(TRANSFORMER_LAW, 1e8, 3.1)
    assert loss_of(TRANSFORMER_LAW, 1e8, d) == pytest.approx(3.1, rel=1e-12)


def test_b_only_savings_is_exact_at_every_target():
    b = law_with_savings(TRANSFORMER_LAW, 1.5)
    targets = np.linspace(2.6, 3.5, 7)
    np.testing.assert_allclose(savings_curve(TRANSFORMER_LAW, b, 1e8, targets), 1.5, rtol=1e-12)


def test_unreachable_targets_give_inf_zero_nan_with_notes():
    a, n = TRANSFORMER_LAW, 1e8
    asymptote = a["E"] + a["A"] / n ** a["alpha"]
    better = {**a, "E": a["E"] - 0.2}
    res = savings_factor(a, better, n, asymptote - 0.1)          # baseline cannot reach
    assert math.isinf(res["value"]) and "baseline never reaches" in res["note"]
    res = savings_factor(better, a, n, asymptote - 0.1)          # challenger cannot reach
    assert res["value"] == 0.0 and "challenger never reaches" in res["note"]
    res = savings_factor(a, a, n, asymptote - 0.5)               # neither
    assert math.isnan(res["value"]) and "neither" in res["note"]


def test_pipeline_recovers_savings_on_noise_free_families():
    laws = {"transformer": TRANSFORMER_LAW, "hybrid": law_with_savings(TRANSFORMER_LAW, 1.5)}
    an = analyse(rows_to_result_set(make_rows(laws, noise=0.0, **WIDE)), n_bootstrap=0)
    (comp,) = an.summary["comparisons"]
    assert (comp["baseline"], comp["challenger"]) == ("transformer", "hybrid")
    assert comp["savings_factor"]["value"] == pytest.approx(1.5, rel=1e-3)
    assert comp["compute_multiplier"]["value"] == pytest.approx(1.5, rel=0.05)


def test_paired_bootstrap_interval_covers_known_savings():
    laws = {"transformer": TRANSFORMER_LAW, "hybrid": law_with_savings(TRANSFORMER_LAW, 1.5)}
    rows = make_rows(laws, noise=0.003, run_noise=0.002, seed=7, **WIDE)
    an = analyse(rows_to_result_set(rows), n_bootstrap=40, seed=1)
    sf = an.summary["comparisons"][0]["savings_factor"]
    assert sf["ci"]["lo"] < 1.5 < sf["ci"]["hi"]
    assert sf["ci"]["lo"] > 1.0  # and it can tell the families apart
    assert sf["value"] == pytest.approx(1.5, rel=0.2)


def test_rollout_on_noise_free_and_noisy_ladders():
    exact = rows_to_result_set(make_rows({"t": TRANSFORMER_LAW}, noise=0.0, **WIDE)).points
    res = rollout_validation(exact, fit_law)
    assert res["held_out_n_params"] == max(WIDE["sizes"])
    assert res["n_test"] == len(WIDE["ratios"])
    assert res["mean_abs_rel_error"] < 1e-4
    noisy = rows_to_result_set(make_rows({"t": TRANSFORMER_LAW}, noise=0.005, seed=2,
                                         **WIDE)).points
    assert rollout_validation(noisy, fit_law)["mean_abs_rel_error"] < 0.03


def test_rollout_skips_with_too_few_sizes():
    pts = rows_to_result_set(make_rows({"t": TRANSFORMER_LAW}, sizes=(20e6, 40e6),
                                       ratios=(5, 10, 20, 40))).points
    assert "skipped" in rollout_validation(pts, fit_law)


def test_unreachable_target_flows_through_report_without_crashing():
    import json

    from analysis.report import render_markdown, to_jsonable

    laws = {"transformer": TRANSFORMER_LAW, "hybrid": law_with_savings(TRANSFORMER_LAW, 1.5)}
    rows = make_rows(laws, noise=0.0, sizes=(20e6, 40e6, 80e6), ratios=(10, 20, 40))
    an = analyse(rows_to_result_set(rows), n_bootstrap=3, target_loss=1.0)  # below E
    (comp,) = an.summary["comparisons"]
    assert math.isnan(comp["savings_factor"]["value"])
    assert "neither family reaches" in comp["savings_factor"]["note"]
    assert math.isnan(comp["compute_multiplier"]["value"])
    text = json.dumps(to_jsonable(an.summary), allow_nan=False)
    assert '"value": null' in text
    md = render_markdown(an.summary)
    assert "neither family reaches the target loss" in md
