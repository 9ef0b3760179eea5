"""Bootstrap over whole runs, paired across families, and percentile intervals.

Why whole runs: the points of one run (its WSD-S decays) share a model, a seed and a
warmup, so their errors are correlated; resampling points would treat them as
independent and give intervals that are too narrow. Each replicate draws, for each
family, as many runs as it has, with replacement, and keeps all points of each drawn
run. A replicate is stored as per-point multiplicities, which lets `analysis.fit`
fit all replicates in one batched call.

Why paired: replicate k draws every family from one generator seeded with (seed, k),
in sorted family order (`family_multiplicities`, `paired_bootstrap`). Any statistic that compares two families (savings factor,
compute multiplier) is then computed on replicate k of both, which is the paired
bootstrap the Olmo Hybrid paper uses, and re-running with the same seed reproduces
every replicate exactly.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from analysis.results import Points

# An interval whose ends differ by more than this factor does not pin its quantity down
# (used by the caveats and by the comparison with the paper).
LOOSE_FACTOR = 2.0


def replicate_rng(seed: int, replicate: int) -> np.random.Generator:
    return np.random.default_rng([seed, replicate])


def run_multiplicity(points: Points, rng: np.random.Generator) -> np.ndarray:
    """How often each point's run is drawn in one run-level resample, per point (I,).

    len(runs) runs are drawn with replacement, in sorted run order; a point's
    multiplicity is its run's draw count (0 = left out). Weighting a summed objective by
    these counts is identical to fitting the resampled rows.
    """
    runs = points.runs
    counts = np.bincount(rng.integers(0, len(runs), size=len(runs)), minlength=len(runs))
    run_index = np.searchsorted(np.array(runs), points.run_id)
    return counts[run_index]


def expand(multiplicity) -> np.ndarray:
    """Row indices that repeat each point by its multiplicity (for Points.take)."""
    m = np.asarray(multiplicity)
    return np.repeat(np.arange(m.shape[0]), m)


def family_multiplicities(points: Points, n_boot: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Paired run-level resamples: family -> (n_boot, points in family) multiplicities.

    Replicate k draws every family, in sorted order, from replicate_rng(seed, k), so row
    k of any two families belongs to the same paired replicate.
    """
    families = points.families
    per_family = {f: points.family_points(f) for f in families}
    out = {f: np.zeros((n_boot, len(per_family[f])), dtype=np.int64) for f in families}
    for k in range(n_boot):
        rng = replicate_rng(seed, k)
        for f in families:
            out[f][k] = run_multiplicity(per_family[f], rng)
    return out


def point_multiplicities(n_points: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n_points) multiplicities of an ordinary point-level bootstrap.

    Only for data with no run structure, such as the Chinchilla reference points, where
    each point is its own run (this is how Epoch AI bootstrapped them).
    """
    out = np.zeros((n_boot, n_points), dtype=np.int64)
    for k in range(n_boot):
        rng = replicate_rng(seed, k)
        out[k] = np.bincount(rng.integers(0, n_points, size=n_points), minlength=n_points)
    return out


def paired_bootstrap(points_a: Points, points_b: Points,
                     statistic: Callable[[Points, Points], float], n_boot: int,
                     seed: int = 0) -> np.ndarray:
    """statistic(resampled a, resampled b) for n_boot replicates drawn from one stream."""
    values = []
    for k in range(n_boot):
        rng = replicate_rng(seed, k)
        a = points_a.take(expand(run_multiplicity(points_a, rng)))
        b = points_b.take(expand(run_multiplicity(points_b, rng)))
        values.append(statistic(a, b))
    return np.asarray(values, dtype=np.float64)


def percentile_interval(values, level: float = 0.95) -> dict:
    """Percentile interval that tolerates inf (kept, ranks last) and NaN (dropped, counted).

    Returns {"lo", "hi", "n", "n_nan"}; lo and hi are NaN when no replicate is usable.
    Uses the inverted-CDF quantile so an infinite tail gives an infinite bound rather
    than inf - inf = NaN from interpolation.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    nan = np.isnan(v)
    kept = v[~nan]
    if kept.size == 0:
        return {"lo": float("nan"), "hi": float("nan"), "n": 0, "n_nan": int(nan.sum())}
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(kept, [tail, 1.0 - tail], method="inverted_cdf")
    return {"lo": float(lo), "hi": float(hi), "n": int(kept.size), "n_nan": int(nan.sum())}


def is_loose(ci, factor: float = LOOSE_FACTOR) -> bool:
    """True for an interval whose ends differ by more than `factor`, that touches 0 or
    that is open-ended (hi = inf); False when there is no interval at all (n = 0)."""
    if not ci or ci.get("n", 0) == 0:
        return False
    return not (ci["lo"] > 0 and ci["hi"] / ci["lo"] <= factor)
