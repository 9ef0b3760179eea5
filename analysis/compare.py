"""Family-vs-family comparisons (savings factor, compute multiplier) and rollout validation.

Definitions (a is the baseline, normally the transformer; b the challenger):

* Savings factor S = D_a / D_b: tokens each family needs to reach a target loss at the
  same N, from the fitted laws, D = (B / (L* - E - A/N^alpha))^(1/beta). S = 1.5 means
  the challenger needs 1/1.5 of the baseline's tokens (the paper's "35% fewer tokens"
  is S of about 1.5). Defaults: N is the largest size both families trained
  (min over families of their largest N, so neither law is extrapolated in N), and the
  target is the higher of the two families' best observed losses, the lowest loss that
  both families actually reached.
* Compute multiplier M = C_a / C_b at matched loss, from the compute frontiers
  (`analysis.frontier`): how much more compute the baseline needs for the same loss.

A family whose asymptote at that N (E + A/N^alpha, or E for the frontier) is at or
above the target never reaches it: its requirement is inf, and the ratio is inf, 0 or
NaN (both unreachable) with a note saying which, instead of an exception, because a
bootstrap replicate can land there even when the point estimate does not.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from analysis.fit import predict
from analysis.frontier import compute_to_reach
from analysis.results import Points


def tokens_to_reach(params: dict, n_params: float, target_loss) -> np.ndarray:
    """D at which L(N, D) = target_loss; inf where the target is at or below the asymptote."""
    target = np.asarray(target_loss, dtype=np.float64)
    gap = target - params["E"] - params["A"] / float(n_params) ** params["alpha"]
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(gap > 0, (params["B"] / np.where(gap > 0, gap, 1.0)) ** (1.0 / params["beta"]),
                     np.inf)
    return d


def default_target_loss(loss_a, loss_b) -> float:
    """The higher of the two best observed losses: the lowest loss both families reached."""
    return float(max(np.min(loss_a), np.min(loss_b)))


def default_comparison_size(n_a, n_b) -> float:
    """The largest N both families trained."""
    return float(min(np.max(n_a), np.max(n_b)))


def savings_factor(params_a: dict, params_b: dict, n_params: float, target_loss: float) -> dict:
    """S = D_a / D_b at equal N and target loss, with a note when either is unreachable."""
    d_a = float(tokens_to_reach(params_a, n_params, target_loss))
    d_b = float(tokens_to_reach(params_b, n_params, target_loss))
    return {"value": _ratio(d_a, d_b), "tokens_a": d_a, "tokens_b": d_b,
            "n_params": float(n_params), "target_loss": float(target_loss),
            "note": _reach_note(d_a, d_b, f"at N = {n_params:.3g}")}


def savings_curve(params_a: dict, params_b: dict, n_params: float, targets) -> np.ndarray:
    """S for an array of target losses (inf/NaN where unreachable)."""
    d_a = tokens_to_reach(params_a, n_params, targets)
    d_b = tokens_to_reach(params_b, n_params, targets)
    return np.array([_ratio(x, y) for x, y in zip(np.ravel(d_a), np.ravel(d_b))])


def compute_multiplier(frontier_a: dict, frontier_b: dict, target_loss: float) -> dict:
    """M = C_a / C_b at matched loss from the two fitted frontiers."""
    c_a = compute_to_reach(frontier_a, target_loss)
    c_b = compute_to_reach(frontier_b, target_loss)
    return {"value": _ratio(c_a, c_b), "flops_a": c_a, "flops_b": c_b,
            "target_loss": float(target_loss), "note": _reach_note(c_a, c_b, "on its frontier")}


def rollout_validation(points: Points, fit: Callable[[Points], dict]) -> dict:
    """Fit on every size but the largest, predict the largest size's points.

    Returns the held-out size, per-point relative errors (pred - obs) / obs, and their
    mean absolute and maximum absolute values; or {"skipped": reason} when fewer than
    three sizes or too few training points remain.
    """
    sizes = np.unique(points.n_params)
    if sizes.shape[0] < 3:
        return {"skipped": f"needs at least 3 model sizes, have {sizes.shape[0]}"}
    held_out = sizes.max()
    train = np.flatnonzero(points.n_params < held_out)
    test = np.flatnonzero(points.n_params == held_out)
    if train.shape[0] < 5:
        return {"skipped": f"only {train.shape[0]} points below the largest size"}
    params = fit(points.take(train))
    observed = points.loss[test]
    predicted = predict(params, points.n_params[test], points.tokens[test])
    rel = (predicted - observed) / observed
    return {"held_out_n_params": float(held_out), "n_train": int(train.shape[0]),
            "n_test": int(test.shape[0]), "tokens": points.tokens[test].tolist(),
            "observed": observed.tolist(), "predicted": predicted.tolist(),
            "rel_errors": rel.tolist(), "mean_abs_rel_error": float(np.mean(np.abs(rel))),
            "max_abs_rel_error": float(np.max(np.abs(rel))),
            "params": {k: params[k] for k in ("E", "A", "B", "alpha", "beta")}}


def _ratio(x_a: float, x_b: float) -> float:
    if np.isinf(x_a) and np.isinf(x_b):
        return float("nan")
    if np.isinf(x_b):
        return 0.0
    return float(x_a / x_b)


def _reach_note(x_a: float, x_b: float, where: str) -> str:
    if np.isinf(x_a) and np.isinf(x_b):
        return f"neither family reaches the target loss {where}"
    if np.isinf(x_a):
        return f"the baseline never reaches the target loss {where} (ratio is inf)"
    if np.isinf(x_b):
        return f"the challenger never reaches the target loss {where} (ratio is 0)"
    return ""
