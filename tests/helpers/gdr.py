"""The gated delta rule's float64 oracle, its test inputs and the relative error used by every
gated delta rule test (no tests here).

Errors are relative: max|a - b| / max|b| (taken as the absolute error when b is all zero)."""

import numpy as np


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    denom = np.abs(b).max()
    return np.abs(a - b).max() / (denom if denom > 0 else 1.0)


def np_gated_delta_rule(q, k, v, g, beta, *, scale=None, initial_state=None,
                        use_qk_l2norm=False):
    """The definition, token by token, in float64."""
    q, k, v, g, beta = (np.asarray(x, np.float64) for x in (q, k, v, g, beta))
    B, T, H, K = q.shape
    HV, V = v.shape[2:]
    if use_qk_l2norm:
        q = q / np.sqrt((q * q).sum(-1, keepdims=True) + 1e-6)
        k = k / np.sqrt((k * k).sum(-1, keepdims=True) + 1e-6)
    q = q * (K ** -0.5 if scale is None else scale)
    q, k = np.repeat(q, HV // H, axis=2), np.repeat(k, HV // H, axis=2)
    S = np.zeros((B, HV, K, V)) if initial_state is None else np.array(initial_state, np.float64)
    o = np.zeros((B, T, HV, V))
    for t in range(T):
        # a (I - beta k k^T) S + beta k v^T as rank-one updates: O(K V) per token, not O(K^2 V),
        # so the benchmark shapes (T 8192, 32 heads of 128 x 128) take seconds
        S *= np.exp(g[:, t])[..., None, None]
        kt = k[:, t]
        delta = beta[:, t, :, None] * (v[:, t] - (kt[..., None, :] @ S)[..., 0, :])
        S += kt[..., :, None] * delta[..., None, :]
        o[:, t] = (q[:, t, :, None, :] @ S)[..., 0, :]
    return o, S


def make_inputs(seed, B, T, H, HV, K, V, *, decay="mild", init=True, unit_k=True):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(B, T, H, K))
    k = rng.normal(size=(B, T, H, K))
    if unit_k:  # keeps the recurrence a contraction for beta in (0, 2)
        k = k / np.linalg.norm(k, axis=-1, keepdims=True)
    v = rng.normal(size=(B, T, HV, V))
    g = {"zero": np.zeros((B, T, HV)),
         "mild": -rng.uniform(0.0, 0.5, size=(B, T, HV)),
         "strong": -rng.uniform(0.0, 20.0, size=(B, T, HV))}[decay]
    beta = rng.uniform(0.0, 2.0, size=(B, T, HV))
    S0 = rng.normal(size=(B, HV, K, V)) if init else None
    f32 = lambda x: None if x is None else np.asarray(x, np.float32)
    return tuple(map(f32, (q, k, v, g, beta, S0)))
