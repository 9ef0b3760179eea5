"""Run-level, paired bootstrap: resampling units, reproducibility, intervals, coverage."""

import itertools

import numpy as np
import pytest

from analysis.bootstrap import (expand, family_multiplicities, paired_bootstrap,
                                percentile_interval, run_multiplicity)
from analysis.fit import fit_chinchilla, fit_replicates
from analysis.results import rows_to_result_set
from analysis.synthetic import make_rows, two_family_rows


@pytest.fixture
def points():
    return rows_to_result_set(two_family_rows(1.5, noise=0.01)).points


def test_whole_runs_are_resampled(points):
    fam = points.family_points("hybrid")
    m = run_multiplicity(fam, np.random.default_rng(0))
    for run in fam.runs:
        assert len(set(m[fam.run_id == run].tolist())) == 1  # a run is in or out whole
    per_run = [m[fam.run_id == run][0] for run in fam.runs]
    assert sum(per_run) == len(fam.runs)
    assert len(expand(m)) == int(m.sum())


def test_paired_replicates_are_reproducible_and_shared(points):
    a = family_multiplicities(points, 5, seed=3)
    b = family_multiplicities(points, 5, seed=3)
    for f in points.families:
        np.testing.assert_array_equal(a[f], b[f])
    assert not np.array_equal(family_multiplicities(points, 5, seed=4)["hybrid"], a["hybrid"])
    # paired_bootstrap draws the same replicates as family_multiplicities.
    ha, tr = points.family_points("hybrid"), points.family_points("transformer")
    sums = paired_bootstrap(ha, tr, lambda x, y: x.loss.sum() + 1000 * y.loss.sum(), 5, seed=3)
    expect = [(ha.loss * a["hybrid"][k]).sum() + 1000 * (tr.loss * a["transformer"][k]).sum()
              for k in range(5)]
    np.testing.assert_allclose(sums, expect)


def test_percentile_interval_handles_inf_and_nan():
    ci = percentile_interval(list(range(1, 100)) + [np.inf] * 5 + [np.nan] * 3)
    assert ci["hi"] == np.inf and ci["n_nan"] == 3 and ci["n"] == 104
    ci = percentile_interval(np.arange(1, 1001))
    assert ci["lo"] == pytest.approx(25, abs=1) and ci["hi"] == pytest.approx(975, abs=1)
    assert np.isnan(percentile_interval([np.nan])["lo"])


@pytest.mark.slow
@pytest.mark.extended
def test_intervals_cover_the_truth_at_about_the_nominal_rate():
    """30 synthetic ladders (per-point and per-run noise); 95% intervals from 40 replicates."""
    truth = {"E": 1.9, "A": 120.0, "B": 300.0, "alpha": 0.3, "beta": 0.28}
    grid = np.array(list(itertools.product([0, 8, 16], [0, 8, 16], [-1, 0, 0.5],
                                           [0.2, 0.6, 1.2], [0.2, 0.6, 1.2])), dtype=float)
    keys = ("E", "alpha", "beta")
    hits = {k: 0 for k in keys}
    n_datasets = 30
    for r in range(n_datasets):
        rows = make_rows({"t": truth}, sizes=tuple(10e6 * 2 ** k for k in range(8)),
                         ratios=(5, 10, 20, 40, 80, 160), noise=0.003, run_noise=0.003,
                         seed=100 + r)
        p = rows_to_result_set(rows).points
        fit = fit_chinchilla(p.n_params, p.tokens, p.loss, grid=grid)
        mult = family_multiplicities(p, 40, seed=r)["t"]
        boots = fit_replicates(p.n_params, p.tokens, p.loss, mult, fit["local_optima"])
        for k in keys:
            ci = percentile_interval([b[k] for b in boots])
            hits[k] += ci["lo"] <= truth[k] <= ci["hi"]
    coverage = {k: v / n_datasets for k, v in hits.items()}
    assert all(c >= 0.8 for c in coverage.values()), coverage
