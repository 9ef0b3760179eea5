"""Compute frontier L(C) = E + A * C**-gamma and IsoFLOP parabolas (Approach 2).

Why a separate frontier: "which family scales better" is a statement about the best
loss each family reaches for a given compute, whatever the N/D split. The parametric
law in `analysis.fit` implies such a frontier, but fitting it directly is a check that
does not depend on the law's N/D form.

Which points: the frontier is fitted to the *lower envelope* of the (C, L) cloud, the
points that no cheaper-or-equal-compute point beats. A WSD-S ladder trains every size
far past and short of its compute-optimal D, and fitting all points would pull the
curve up by those mis-allocated runs. The envelope of a discrete ladder sits slightly
above the true frontier between sizes; with sizes spaced by sqrt(2) that gap is small
next to run-to-run noise, and the bootstrap band shows the rest.

Fit: Huber (delta = 1e-3) on log residuals, summed, log L = LSE(a - gamma * x, e) with
x = log(C / C_ref) centred for conditioning; E <= min envelope loss; scipy L-BFGS-B
from a small grid of starts (3 parameters, a handful of points: milliseconds).

IsoFLOP: points are bucketed by compute (greedy in sorted log C, a bucket spans at most
a factor 1 + rel_tol); each bucket with at least 3 sizes gets a parabola in log N, whose
vertex is that budget's compute-optimal N. A power law through the interior vertices
gives N_opt ~ C^a (Hoffmann et al.'s Approach 2).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from analysis.blas import single_thread_blas
from analysis.objective import huber

HUBER_DELTA = 1e-3
MIN_FRONTIER_POINTS = 3


def lower_envelope(flops, loss) -> np.ndarray:
    """Indices (sorted by C) of points with lower loss than every point of smaller-or-equal C."""
    c = np.asarray(flops, dtype=np.float64)
    l = np.asarray(loss, dtype=np.float64)
    order = np.lexsort((l, c))
    keep, best = [], np.inf
    for i in order:
        if l[i] < best:
            keep.append(i)
            best = l[i]
    return np.asarray(keep, dtype=np.int64)


def fit_frontier(flops, loss, *, envelope: bool = True, huber_delta: float = HUBER_DELTA,
                 warm_start: dict | None = None) -> dict:
    """Fit L(C) = E + A C^-gamma; returns E, A, gamma, the points used and the objective.

    warm_start (a previous fit's E, A, gamma, e.g. the full-data fit for a bootstrap
    replicate) replaces the 20-start grid by itself plus two grid starts.
    """
    c = np.asarray(flops, dtype=np.float64)
    l = np.asarray(loss, dtype=np.float64)
    idx = lower_envelope(c, l) if envelope else np.arange(c.shape[0])
    if idx.shape[0] < MIN_FRONTIER_POINTS:
        raise ValueError(f"frontier fit needs at least {MIN_FRONTIER_POINTS} points, "
                         f"the {'envelope has' if envelope else 'data have'} {idx.shape[0]}")
    log_c_ref = float(np.mean(np.log(c[idx])))
    x = np.log(c[idx]) - log_c_ref
    y = np.log(l[idx])

    def fg(theta):
        a, e, gamma = theta
        t = a - gamma * x
        top = np.maximum(t, e)
        w_t, w_e = np.exp(t - top), np.exp(e - top)
        pred = top + np.log(w_t + w_e)
        r = pred - y
        dr = np.clip(r, -huber_delta, huber_delta)
        s_t = w_t / (w_t + w_e)
        grad = np.array([np.sum(dr * s_t), np.sum(dr * (1 - s_t)), -np.sum(dr * s_t * x)])
        return float(np.sum(huber(r, huber_delta))), grad

    min_l = float(l[idx].min())
    median_l = float(np.median(l[idx]))
    grid = itertools.product((0.0, 0.5, 0.8, 0.95), (0.02, 0.05, 0.1, 0.2, 0.4))
    starts = []
    if warm_start is not None:
        grid = [(0.0, 0.1), (0.8, 0.1)]
        starts.append([np.log(warm_start["A"]) - warm_start["gamma"] * log_c_ref,
                       np.log(min(warm_start["E"], min_l)), warm_start["gamma"]])
    for frac, gamma in grid:
        starts.append([np.log(max(median_l - frac * min_l, 1e-3 * median_l)),
                       np.log(max(frac, 1e-3) * min_l), gamma])
    best = None
    with single_thread_blas():
        for x0 in starts:
            res = minimize(fg, np.array(x0), jac=True, method="L-BFGS-B",
                           bounds=[(None, None), (None, np.log(min_l)), (1e-4, 3.0)],
                           options={"ftol": 1e-13, "gtol": 1e-10, "maxiter": 5000})
            if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
                best = res
    a, e, gamma = best.x
    return {"E": float(np.exp(e)), "A": float(np.exp(a + gamma * log_c_ref)),
            "gamma": float(gamma), "objective": float(best.fun),
            "n_points": int(idx.shape[0]), "points": idx.tolist(), "envelope": envelope}


def frontier_loss(params: dict, flops) -> np.ndarray:
    return params["E"] + params["A"] * np.asarray(flops, dtype=np.float64) ** -params["gamma"]


def compute_to_reach(params: dict, target_loss: float) -> float:
    """C at which the frontier reaches target_loss; inf when target <= E (never)."""
    gap = target_loss - params["E"]
    if not gap > 0:
        return float("inf")
    return float((params["A"] / gap) ** (1.0 / params["gamma"]))


def chinchilla_optimal(params: dict, flops) -> dict:
    """Compute-optimal N, D and loss implied by a fitted parametric law, with C = 6 N D.

    From minimising A N^-alpha + B D^-beta on the line D = C / (6 N) (Hoffmann et al.
    eq. 4): N_opt = G (C/6)^(beta/(alpha+beta)), G = (alpha A / (beta B))^(1/(alpha+beta)).
    """
    c = np.asarray(flops, dtype=np.float64)
    alpha, beta = params["alpha"], params["beta"]
    g = (alpha * params["A"] / (beta * params["B"])) ** (1.0 / (alpha + beta))
    n_opt = g * (c / 6.0) ** (beta / (alpha + beta))
    d_opt = c / (6.0 * n_opt)
    loss = params["E"] + params["A"] / n_opt ** alpha + params["B"] / d_opt ** beta
    return {"n_params": n_opt, "tokens": d_opt, "loss": loss}


@dataclass(frozen=True)
class IsoFlopBucket:
    flops: float                # geometric mean C of the bucket
    members: np.ndarray         # row indices
    coeffs: tuple | None        # (c2, c1, c0) of L = c2 x^2 + c1 x + c0, x = ln N
    n_opt: float | None         # vertex, when the parabola opens upward
    loss_opt: float | None
    interior: bool              # vertex inside the bucket's N range


def bucket_by_flops(flops, rel_tol: float = 0.25) -> list[np.ndarray]:
    """Greedy buckets in sorted log C; each spans at most a factor (1 + rel_tol)."""
    log_c = np.log(np.asarray(flops, dtype=np.float64))
    order = np.argsort(log_c, kind="stable")
    if order.size == 0:
        return []
    buckets, current = [], [order[0]]
    for i in order[1:]:
        if log_c[i] - log_c[current[0]] <= np.log1p(rel_tol):
            current.append(i)
        else:
            buckets.append(np.asarray(current))
            current = [i]
    buckets.append(np.asarray(current))
    return buckets


def isoflop_parabolas(flops, n_params, loss, *, rel_tol: float = 0.25,
                      min_sizes: int = 3) -> list[IsoFlopBucket]:
    """One parabola per compute bucket that holds at least `min_sizes` distinct N."""
    c = np.asarray(flops, dtype=np.float64)
    n = np.asarray(n_params, dtype=np.float64)
    l = np.asarray(loss, dtype=np.float64)
    out = []
    for members in bucket_by_flops(c, rel_tol):
        if np.unique(n[members]).shape[0] < min_sizes:
            continue
        x = np.log(n[members])
        c2, c1, c0 = np.polyfit(x, l[members], 2)
        if c2 > 0:
            x_opt = -c1 / (2.0 * c2)
            n_opt, loss_opt = float(np.exp(x_opt)), float(c0 - c1 * c1 / (4.0 * c2))
            interior = bool(x.min() <= x_opt <= x.max())
        else:
            n_opt = loss_opt = None
            interior = False
        out.append(IsoFlopBucket(flops=float(np.exp(np.mean(np.log(c[members])))),
                                 members=members, coeffs=(float(c2), float(c1), float(c0)),
                                 n_opt=n_opt, loss_opt=loss_opt, interior=interior))
    return out


def optimal_allocation_exponent(buckets: list[IsoFlopBucket]) -> dict | None:
    """Fit N_opt = k C^a through interior vertices (needs two); None if too few."""
    good = [b for b in buckets if b.interior]
    if len(good) < 2:
        return None
    log_c = np.log([b.flops for b in good])
    log_n = np.log([b.n_opt for b in good])
    a, log_k = np.polyfit(log_c, log_n, 1)
    return {"a": float(a), "k": float(np.exp(log_k)), "n_buckets": len(good)}
