"""Parametric Chinchilla fit L(N, D) = E + A / N**alpha + B / D**beta (Approach 3).

Why it looks like this: Hoffmann et al. (2022) fit this law by minimising a Huber loss
on log residuals from a grid of L-BFGS starts. Epoch AI (Besiroglu et al. 2024) showed
that the published numbers came from a *mean*-reduced objective that scipy's default
tolerances stop early on; with a *sum* and their 4,500-start grid the 240 extracted
points give alpha = 0.3473, beta = 0.3672, E = 1.8172, A = 478, B = 2143. We reproduce
that (tests/analysis/test_fit.py) and use the same estimator for our ladders, with the
OLMo recipe's options (bounds, E <= min L, FLOP weights) exposed as arguments.

Speed (measured on the 2-core CI box, shared with other jobs). A plain scipy loop over
the 4,500 starts takes about 25 s with analytic gradients and one BLAS thread, minutes
with scipy's finite differences, and 10x more again while OpenBLAS threads spin.
`method="batched"` (the default) runs every grid start at once with the batched
L-BFGS of `analysis.lbfgs` (about 3 s), each start stopping by the same rule a
default scipy run uses, then polishes the best 8 distinct endpoints with scipy's
L-BFGS-B at tight tolerances. Why this finds the full grid's optimum: no start is
dropped or cut short relative to the per-start scipy runs (same algorithm family, same
ftol, max_iter 500 where scipy's default is 15,000, but the starts still running at
500 iterations are crawling along plateaus 5-40x above the optimum), and the polish
can only lower the objective. On the Chinchilla data about 200 of the 4,500 starts
reach the optimum, so it is a wide basin, not a lucky start. The tests check the
Epoch numbers and that the batched search is never worse than the plain scipy loop on
a random sample of starts. `method="scipy"` is that plain loop (scipy defaults, as
Epoch ran it), kept as the reference and to show the mean-reduction failure.
"""

from __future__ import annotations

import itertools
import time
from typing import Mapping

import numpy as np
from scipy.optimize import minimize

from analysis.blas import single_thread_blas
from analysis.lbfgs import minimize_batched
from analysis.objective import N_PARAMS, PARAM_NAMES, check_reduction, objective_and_grad

HUBER_DELTA = 1e-3
# Paper recipe (OLMo-core ladder fit): exponents in [0.01, 2] and E <= min observed loss.
PAPER_EXPONENT_BOUNDS = (0.01, 2.0)
# How many of the best distinct batched endpoints scipy polishes.
N_POLISH = 8
# Distinct endpoints kept as bootstrap starts.
N_LOCAL_OPTIMA = 8
# Bootstrap replicates are not polished, so they run to a tight tolerance (see fit_replicates).
REPLICATE_FTOL = 1e-15


def epoch_grid() -> np.ndarray:
    """Epoch AI's 4,500 starts: a, b in {0,5,...,25}, e in {-1,...,1}, alpha, beta in {0,...,2}.

    Columns are (a, b, e, alpha, beta).
    """
    a = b = np.arange(0.0, 30.0, 5.0)
    e = np.arange(-1.0, 1.5, 0.5)
    alpha = beta = np.arange(0.0, 2.5, 0.5)
    return np.array(list(itertools.product(a, b, e, alpha, beta)), dtype=np.float64)


def paper_grid(min_loss: float) -> np.ndarray:
    """A 4^5 = 1,024-start grid inside the paper's bounds.

    The Olmo Hybrid paper says "a 4^5 grid" without listing values; these are ours:
    a, b spread over Epoch's range, alpha, beta inside [0.01, 2], and E from
    min(L)/e^1.5 up to min(L) so every start satisfies E <= min L.
    """
    a = b = np.linspace(0.0, 24.0, 4)
    e = np.log(min_loss) + np.array([-1.5, -1.0, -0.5, 0.0])
    alpha = beta = np.array([0.1, 0.5, 1.0, 1.5])
    return np.array(list(itertools.product(a, b, e, alpha, beta)), dtype=np.float64)


def flop_weights(n_params, tokens, power: float = 1.0) -> np.ndarray:
    """Weights proportional to (6 N D)^power, normalised to mean 1.

    power = 0.5 ("sqrt_flops") is what OLMo-core's ladder fitter documents as the usual
    choice and what the "paper" recipe uses: it leans on the larger runs without letting
    the largest one dominate, as linear weights (power = 1, "flops") do on a ladder that
    spans 1,000x in compute. Normalising keeps a weighted sum on the scale of the
    unweighted one, so the optimiser's tolerances mean the same thing either way.
    """
    c = 6.0 * np.asarray(n_params, dtype=np.float64) * np.asarray(tokens, dtype=np.float64)
    w = c ** power
    return w / w.mean()


def predict(params: Mapping[str, float], n_params, tokens) -> np.ndarray:
    """L(N, D) for fitted parameters (keys E, A, B, alpha, beta)."""
    n = np.asarray(n_params, dtype=np.float64)
    d = np.asarray(tokens, dtype=np.float64)
    return params["E"] + params["A"] / n ** params["alpha"] + params["B"] / d ** params["beta"]


def fit_chinchilla(n_params, tokens, loss, *, huber_delta: float = HUBER_DELTA, weights=None,
                   grid=None, reduction: str = "sum", exponent_bounds=None,
                   e_at_most_min_loss: bool = False, method: str = "batched",
                   extra_starts=None, n_polish: int = N_POLISH) -> dict:
    """Fit E + A/N^alpha + B/D^beta by Huber regression on log loss from a grid of starts.

    Args:
      n_params, tokens, loss: 1-D arrays of N (non-embedding parameters), D (tokens), L.
      huber_delta: Huber threshold on log residuals (1e-3 in Hoffmann, Epoch, OLMo).
      weights: None, an array of per-point weights, "flops" (proportional to C) or
        "sqrt_flops" (to sqrt C); see `flop_weights`.
      grid: None or "epoch" (4,500 starts), "paper" (4^5 inside the bounds), or an
        (S, 5) array of (a, b, e, alpha, beta) starts.
      reduction: "sum" (correct) or "mean" (the original paper's, which stops early).
      exponent_bounds: None, or (lo, hi) for both alpha and beta; the paper uses
        (0.01, 2) = PAPER_EXPONENT_BOUNDS.
      e_at_most_min_loss: constrain E <= min(loss), as the paper does.
      method: "batched" (all starts at once, then scipy polish) or "scipy" (plain
        per-start scipy L-BFGS-B loop with default tolerances).
      extra_starts: optional (k, 5) starts added to the grid (e.g. a warm start).
      n_polish: how many distinct best batched endpoints scipy polishes.

    Returns a dict with E, A, B, alpha, beta, the raw vector under "theta"
    (a, b, e, alpha, beta), "objective", "n_starts", "n_at_optimum" (starts within
    1e-6 relative of the best objective), "local_optima" (the optimum and other
    distinct endpoints, best first), "seconds" and the settings used.
    """
    check_reduction(reduction)
    log_n, log_d, log_l = _log_inputs(n_params, tokens, loss)
    w = _resolve_weights(weights, n_params, tokens, log_l.shape[0])
    starts = _resolve_grid(grid, float(np.exp(log_l.min())))
    if extra_starts is not None:
        starts = np.vstack([np.atleast_2d(np.asarray(extra_starts, dtype=np.float64)), starts])
    lower, upper = _bounds(exponent_bounds, e_at_most_min_loss, log_l)

    def fun_and_grad(theta_SP, ids=None):
        return objective_and_grad(theta_SP, log_n, log_d, log_l, delta=huber_delta,
                                  weights_I=w, reduction=reduction)

    t0 = time.perf_counter()
    with single_thread_blas():
        if method == "batched":
            theta, obj, finals, ends = _fit_batched(fun_and_grad, starts, lower, upper, n_polish)
        elif method == "scipy":
            theta, obj, finals, ends = _fit_scipy_loop(fun_and_grad, starts, lower, upper)
        else:
            raise ValueError(f"method must be 'batched' or 'scipy', got {method!r}")
    seconds = time.perf_counter() - t0
    a, b, e, alpha, beta = theta
    return {
        "E": float(np.exp(e)), "A": float(np.exp(a)), "B": float(np.exp(b)),
        "alpha": float(alpha), "beta": float(beta),
        "theta": [float(v) for v in theta],
        "objective": float(obj),
        "n_points": int(log_l.shape[0]),
        "n_starts": int(starts.shape[0]),
        "n_at_optimum": int(np.sum(finals <= obj + 1e-6 * abs(obj))),
        "local_optima": [[float(v) for v in x] for x in _local_optima(theta, ends, finals)],
        "seconds": seconds,
        "settings": {"huber_delta": huber_delta, "reduction": reduction, "method": method,
                     "weighted": w is not None,
                     "exponent_bounds": list(exponent_bounds) if exponent_bounds else None,
                     "e_at_most_min_loss": bool(e_at_most_min_loss)},
    }


def fit_replicates(n_params, tokens, loss, multiplicity_RI, starts, *,
                   huber_delta: float = HUBER_DELTA, weights=None, exponent_bounds=None,
                   e_at_most_min_loss: bool = False) -> list[dict]:
    """Fit R bootstrap replicates in one batched run; returns R dicts of E, A, B, alpha, beta.

    Replicate r weights point i by multiplicity_RI[r, i] (how often its run was drawn;
    0 leaves it out), times `weights`. Because the objective is a sum, that is exactly
    the fit to the resampled rows. Every replicate runs the same starts (typically the
    full-data optimum and its other local optima), all R x K of them in one
    `minimize_batched` call; the best start per replicate wins. There is no scipy polish,
    so the batched run itself uses tight tolerances: with scipy's default ftol a
    replicate started at the full-data optimum stops almost where it started, and the
    intervals come out far too narrow (measured: 50-70% coverage of a nominal 95%).
    """
    log_n, log_d, log_l = _log_inputs(n_params, tokens, loss)
    mult = np.asarray(multiplicity_RI, dtype=np.float64)
    if mult.ndim != 2 or mult.shape[1] != log_l.shape[0]:
        raise ValueError(f"multiplicity must be (R, {log_l.shape[0]}), got {mult.shape}")
    base = _resolve_weights(weights, n_params, tokens, log_l.shape[0])
    w_RI = mult if base is None else mult * base
    starts = np.atleast_2d(np.asarray(starts, dtype=np.float64))
    n_rep, n_k = mult.shape[0], starts.shape[0]
    w_SI = np.repeat(w_RI, n_k, axis=0)
    lower, upper = _bounds(exponent_bounds, False, log_l)
    upper_SP = np.tile(upper, (n_rep * n_k, 1))
    if e_at_most_min_loss:
        present_min = np.array([log_l[m > 0].min() for m in mult])
        upper_SP[:, 2] = np.repeat(present_min, n_k)

    def fun_and_grad(theta_SP, ids):
        return objective_and_grad(theta_SP, log_n, log_d, log_l, delta=huber_delta,
                                  weights_I=w_SI[ids])

    with single_thread_blas():
        batch = minimize_batched(fun_and_grad, np.tile(starts, (n_rep, 1)), lower, upper_SP,
                                 ftol=REPLICATE_FTOL, max_iter=2000)
    f_RK = np.where(np.isfinite(batch.f_S), batch.f_S, np.inf).reshape(n_rep, n_k)
    best = np.argmin(f_RK, axis=1)
    theta_RP = batch.x_SP.reshape(n_rep, n_k, N_PARAMS)[np.arange(n_rep), best]
    return [{"E": float(np.exp(t[2])), "A": float(np.exp(t[0])), "B": float(np.exp(t[1])),
             "alpha": float(t[3]), "beta": float(t[4]), "objective": float(f)}
            for t, f in zip(theta_RP, f_RK[np.arange(n_rep), best])]


def _fit_batched(fun_and_grad, starts, lower, upper, n_polish):
    batch = minimize_batched(fun_and_grad, starts, lower, upper)
    finite = np.isfinite(batch.f_S)
    if not finite.any():
        raise FloatingPointError("every start gave a non-finite objective")
    order = np.flatnonzero(finite)[np.argsort(batch.f_S[finite])]
    picked = _distinct(batch.x_SP[order], n_polish)
    best_theta, best_f = batch.x_SP[order[0]], batch.f_S[order[0]]
    for x0 in picked:
        res = minimize(lambda t: _scalar(fun_and_grad, t), x0, jac=True, method="L-BFGS-B",
                       bounds=list(zip(lower, upper)),
                       options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 20_000})
        if np.isfinite(res.fun) and res.fun < best_f:
            best_theta, best_f = res.x, float(res.fun)
    finals = batch.f_S.copy()
    finals[~finite] = np.inf
    return np.asarray(best_theta), best_f, finals, batch.x_SP


def _fit_scipy_loop(fun_and_grad, starts, lower, upper):
    finals = np.full(starts.shape[0], np.inf)
    thetas = np.array(starts)
    for i, x0 in enumerate(starts):
        with np.errstate(over="ignore", invalid="ignore"):
            res = minimize(lambda t: _scalar(fun_and_grad, t), x0, jac=True,
                           method="L-BFGS-B", bounds=list(zip(lower, upper)))
        if np.isfinite(res.fun):
            finals[i], thetas[i] = res.fun, res.x
    best = int(np.argmin(finals))
    if not np.isfinite(finals[best]):
        raise FloatingPointError("every start gave a non-finite objective")
    return thetas[best], float(finals[best]), finals, thetas


def _local_optima(best_theta, ends_SP, finals_S, k=N_LOCAL_OPTIMA):
    """The optimum plus up to k-1 other distinct endpoints, best first.

    Bootstrap replicates start from these: a replicate's landscape is a reweighting of
    the full-data one, so its optimum lies in one of the same basins.
    """
    finite = np.isfinite(finals_S)
    order = np.flatnonzero(finite)[np.argsort(finals_S[finite])]
    return _distinct(np.vstack([np.asarray(best_theta)[None], ends_SP[order]]), k, tol=1e-3)


def _scalar(fun_and_grad, theta):
    f, g = fun_and_grad(theta[None, :])
    return float(f[0]), g[0]


def _distinct(x_SP, k, tol=1e-6):
    """Up to k rows of x (already sorted best first) that differ by more than tol."""
    kept = []
    for x in x_SP:
        if all(np.max(np.abs(x - y)) > tol for y in kept):
            kept.append(x)
            if len(kept) == k:
                break
    return kept


def _log_inputs(n_params, tokens, loss):
    arrays = [np.asarray(v, dtype=np.float64).ravel() for v in (n_params, tokens, loss)]
    if len({a.shape[0] for a in arrays}) != 1:
        raise ValueError("n_params, tokens and loss must have the same length, got "
                         f"{[a.shape[0] for a in arrays]}")
    if arrays[0].shape[0] < N_PARAMS:
        raise ValueError(f"need at least {N_PARAMS} points to fit {N_PARAMS} parameters, "
                         f"got {arrays[0].shape[0]}")
    for name, a in zip(("n_params", "tokens", "loss"), arrays):
        if not np.all(np.isfinite(a) & (a > 0)):
            raise ValueError(f"{name} must be finite and positive")
    return tuple(np.log(a) for a in arrays)


def _resolve_weights(weights, n_params, tokens, n_points):
    if weights is None:
        return None
    if isinstance(weights, str):
        powers = {"flops": 1.0, "sqrt_flops": 0.5}
        if weights not in powers:
            raise ValueError(f"weights must be None, one of {sorted(powers)} or an array, "
                             f"got {weights!r}")
        return flop_weights(n_params, tokens, powers[weights])
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.shape[0] != n_points or not np.all(np.isfinite(w) & (w >= 0)):
        raise ValueError(f"weights must be {n_points} finite non-negative numbers")
    return w


def _resolve_grid(grid, min_loss):
    if grid is None or (isinstance(grid, str) and grid == "epoch"):
        return epoch_grid()
    if isinstance(grid, str):
        if grid == "paper":
            return paper_grid(min_loss)
        raise ValueError(f"grid must be 'epoch', 'paper' or an (S, 5) array, got {grid!r}")
    starts = np.atleast_2d(np.asarray(grid, dtype=np.float64))
    if starts.shape[1] != N_PARAMS:
        raise ValueError(f"grid rows must be {PARAM_NAMES}, got shape {starts.shape}")
    return starts


def _bounds(exponent_bounds, e_at_most_min_loss, log_l):
    lower = np.full(N_PARAMS, -np.inf)
    upper = np.full(N_PARAMS, np.inf)
    if exponent_bounds is not None:
        lo, hi = exponent_bounds
        lower[3:] = lo
        upper[3:] = hi
    if e_at_most_min_loss:
        upper[2] = log_l.min()
    return lower, upper
