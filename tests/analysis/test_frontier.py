"""Compute frontier L(C) = E + A C^-gamma, its envelope, and IsoFLOP parabolas (Approach 2)."""

import numpy as np
import pytest

from analysis.compare import compute_multiplier
from analysis.frontier import (bucket_by_flops, chinchilla_optimal, compute_to_reach,
                               fit_frontier, frontier_loss, isoflop_parabolas, lower_envelope,
                               optimal_allocation_exponent)
from analysis.results import rows_to_result_set
from analysis.synthetic import TRANSFORMER_LAW, law_with_savings, make_rows


def test_lower_envelope_keeps_only_undominated_points():
    flops = np.array([1.0, 2.0, 2.0, 3.0, 4.0, 5.0])
    loss = np.array([5.0, 4.0, 4.5, 4.2, 3.0, 3.0])
    assert lower_envelope(flops, loss).tolist() == [0, 1, 4]


def test_recovers_exact_frontier():
    truth = {"E": 1.8, "A": 2000.0, "gamma": 0.16}
    c = np.geomspace(1e17, 1e21, 12)
    fit = fit_frontier(c, frontier_loss(truth, c))
    for key in truth:
        assert fit[key] == pytest.approx(truth[key], rel=1e-3), key
    assert compute_to_reach(fit, 2.5) == pytest.approx(compute_to_reach(truth, 2.5), rel=1e-2)
    assert compute_to_reach(fit, 1.7) == np.inf


def test_compute_multiplier_from_exact_frontiers():
    a = {"E": 1.8, "A": 2000.0, "gamma": 0.16}
    b = {**a, "A": 1500.0}
    m = compute_multiplier(a, b, 2.4)
    assert m["value"] == pytest.approx((2000.0 / 1500.0) ** (1 / 0.16), rel=1e-9)
    assert m["note"] == ""


def test_frontier_multiplier_matches_token_savings_for_b_only_families():
    """With only B different, the compute-optimal frontiers differ by (B_a/B_b)^(1/beta)."""
    laws = {"t": TRANSFORMER_LAW, "h": law_with_savings(TRANSFORMER_LAW, 1.5)}
    points = rows_to_result_set(make_rows(laws, noise=0.0)).points
    fronts = {f: fit_frontier(points.family_points(f).flops, points.family_points(f).loss)
              for f in laws}
    m = compute_multiplier(fronts["t"], fronts["h"], float(np.median(points.loss)))
    assert m["value"] == pytest.approx(1.5, rel=0.03)


def test_chinchilla_optimal_is_the_minimum_along_isoflop():
    law = TRANSFORMER_LAW
    c = 1e19
    opt = chinchilla_optimal(law, c)
    for factor in (0.8, 1.25):
        n = opt["n_params"] * factor
        d = c / (6 * n)
        assert law["E"] + law["A"] / n ** law["alpha"] + law["B"] / d ** law["beta"] > opt["loss"]


def test_bucket_by_flops_respects_tolerance():
    buckets = bucket_by_flops([1.0, 1.1, 1.2, 1.5, 10.0, 10.5], rel_tol=0.25)
    assert [b.tolist() for b in buckets] == [[0, 1, 2], [3], [4, 5]]


def test_isoflop_vertex_and_allocation_exponent():
    law = TRANSFORMER_LAW
    rows = make_rows({"t": law}, sizes=tuple(10e6 * 2 ** (k / 4) for k in range(20)),
                     ratios=(5, 7, 10, 14, 20, 28, 40, 56, 80, 113, 160), noise=0.0)
    p = rows_to_result_set(rows).points
    buckets = isoflop_parabolas(p.flops, p.n_params, p.loss)
    interior = [b for b in buckets if b.interior]
    assert len(interior) >= 5
    for b in interior:  # each vertex near the analytic compute-optimal N for its budget
        assert b.n_opt == pytest.approx(chinchilla_optimal(law, b.flops)["n_params"], rel=0.15)
    alloc = optimal_allocation_exponent(buckets)
    assert alloc["a"] == pytest.approx(law["beta"] / (law["alpha"] + law["beta"]), abs=0.02)


def test_too_few_points_for_a_frontier():
    with pytest.raises(ValueError, match="at least 3"):
        fit_frontier([1e18, 2e18], [3.0, 2.9])
