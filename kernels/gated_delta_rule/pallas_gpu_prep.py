"""Pallas GPU (Triton lowering) kernels for the chunk-local WY transform and its backward.

Why this exists
    `pallas_gpu.py` runs the sequential state pass in Pallas; with prep="pallas" the
    chunk-parallel part (everything `_chunk_prep` does in XLA) runs here as one program per
    (batch x value head, chunk), forward and backward, instead of a dozen XLA ops and their
    autodiff. The backward recomputes the forward quantities of its chunk (no residuals).

Numerics
    Per chunk (C rows), with G = cumsum(g), Gd_ij = sum_{j<l<=i} g_l (a masked product of g
    with 0/1 matrices, never a difference of cumulative sums), E = exp(G), F_i = exp(G_C - G_i):
        A = tril_strict(beta_i (k_i.k_j) exp(Gd_ij)),  T = (I + A)^-1 (recursive 2x2 blocks in
        log2(C) levels of [C, C] products at `dot_inv`),  u = T (beta v),
        w = T (beta E k),
        aqk = (q k^T) tril(exp(Gd)),  qd = q E,  kd = k F.
    Exponents are masked with -inf before exp. Backward (dX = cotangent of X):
        dT = du (beta v)^T + dw (beta E k)^T;  dA = -T^T dT T^T (strict lower part)
        then the product rule through A, aqk, qd, kd, u, w; the cotangents of the log-decays
        (Gd, G, log F) are mapped back to g with the same 0/1 matrices.
    Dots use the caller's `dot` (TF32x3 or bf16 operands, fp32 accumulation), except the
    two products with 0/1 matrices that sum log-decays (forward Gd, backward dg), which
    always use `dot_exact` (TF32x3 on GPU): a bf16 g would put ~0.4% errors into exponents.

Constraints
    q, k [BH, Tp, Kp]; v [BH, Tp, Vp]; g, beta [BH, Tp]; Kp, Vp, C powers of two >= 16.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels.gated_delta_rule.pallas_gpu_common import _NN, _NT, _TN


def _decays(g, C, dot_exact):
    """Gd [C, C] (sum of g over (j, i]; 0 on and above the diagonal), G [C], logF [C]."""
    row = lax.broadcasted_iota(jnp.int32, (C, C), 0)
    col = lax.broadcasted_iota(jnp.int32, (C, C), 1)
    P = jnp.where(col <= row, g[None, :], 0.0)          # P[i, l] = g_l [l <= i]
    Q = jnp.where(row > col, 1.0, 0.0)                  # Q[l, j] = [l > j]
    Gd = jnp.where(row > col, dot_exact(P, Q, _NN), 0.0)  # sum_{j < l <= i} g_l
    G = jnp.sum(P, axis=1)
    logF = jnp.sum(jnp.where(col > row, g[None, :], 0.0), axis=1)  # sum_{l > i} g_l
    return row, col, Gd, G, logF


def _unit_lower_inverse(A, row, col, C, dot_inv):
    """(I + A)^-1 for strictly lower A, by recursive 2x2 blocks as `reference.unit_lower_inverse`
    but on whole [C, C] tiles: with X the inverse of the diagonal blocks of size s (zero
    elsewhere) and L the lower-left s x s block of each 2s diagonal block of A,
    X <- X - X L X inverts the 2s blocks ([[X11, 0], [-X22 L21 X11, X22]]). log2(C) levels of
    two tensor-core products each, the arithmetic of blocked forward substitution."""
    X = jnp.where(row == col, 1.0, 0.0)
    s = 1
    while s < C:
        lower_left = ((row // (2 * s)) == (col // (2 * s))) & ((row // s) % 2 == 1) \
            & ((col // s) % 2 == 0)
        L = jnp.where(lower_left, A, 0.0)
        X = X - dot_inv(dot_inv(X, L, _NN), X, _NN)
        s *= 2
    return X


def _forward_terms(q, k, v, g, beta, C, dot, dot_exact, dot_inv):
    row, col, Gd, G, logF = _decays(g, C, dot_exact)
    strict, causal = row > col, row >= col
    D = jnp.exp(jnp.where(strict, Gd, -jnp.inf))
    Dc = jnp.exp(jnp.where(causal, Gd, -jnp.inf))
    KK = dot(k, k, _NT)
    A = beta[:, None] * KK * D
    T = _unit_lower_inverse(A, row, col, C, dot_inv)
    E = jnp.exp(G)
    bv = beta[:, None] * v
    bek = (beta * E)[:, None] * k
    return dict(row=row, col=col, strict=strict, causal=causal, D=D, Dc=Dc, KK=KK, T=T, E=E,
                F=jnp.exp(logF), bv=bv, bek=bek)


def _prep_fwd_kernel(q_ref, k_ref, v_ref, g_ref, b_ref, w_ref, u_ref, kd_ref, qd_ref, aqk_ref,
                     *, C, dot, dot_exact, dot_inv):
    q, k, v, g, beta = q_ref[...], k_ref[...], v_ref[...], g_ref[...], b_ref[...]
    t = _forward_terms(q, k, v, g, beta, C, dot, dot_exact, dot_inv)
    out_dt = w_ref.dtype  # bf16 for precision="default": half the bytes for the state pass
    u_ref[...] = dot(t["T"], t["bv"], _NN).astype(out_dt)
    w_ref[...] = dot(t["T"], t["bek"], _NN).astype(out_dt)
    aqk_ref[...] = (dot(q, k, _NT) * t["Dc"]).astype(out_dt)
    qd_ref[...] = (q * t["E"][:, None]).astype(out_dt)
    kd_ref[...] = (k * t["F"][:, None]).astype(out_dt)


def _prep_bwd_kernel(q_ref, k_ref, v_ref, g_ref, b_ref, dw_ref, du_ref, dkd_ref, dqd_ref,
                     daqk_ref, dq_ref, dk_ref, dv_ref, dg_ref, db_ref, *, C, dot, dot_exact,
                     dot_inv):
    q, k, v, g, beta = q_ref[...], k_ref[...], v_ref[...], g_ref[...], b_ref[...]
    dw, du, dkd, dqd, daqk = (r[...].astype(jnp.float32)
                              for r in (dw_ref, du_ref, dkd_ref, dqd_ref, daqk_ref))
    t = _forward_terms(q, k, v, g, beta, C, dot, dot_exact, dot_inv)
    T, E, F, D, Dc, KK = t["T"], t["E"], t["F"], t["D"], t["Dc"], t["KK"]
    row, col, strict = t["row"], t["col"], t["strict"]

    # u = T bv, w = T bek
    dT = dot(du, t["bv"], _NT) + dot(dw, t["bek"], _NT)
    dbv = dot(T, du, _TN)                                  # T^T du
    dbek = dot(T, dw, _TN)                                 # T^T dw
    dv = beta[:, None] * dbv
    dbeta = jnp.sum(dbv * v, axis=1)
    s_bek = jnp.sum(dbek * k, axis=1)                      # d(beta E)
    dk = (beta * E)[:, None] * dbek
    dbeta += E * s_bek
    dE = beta * s_bek
    # T = (I + A)^-1: dA = -T^T dT T^T, on the strict lower triangle
    dA = jnp.where(strict, -dot(dot(T, dT, _TN), T, _NT), 0.0)
    dKK = dA * beta[:, None] * D
    dbeta += jnp.sum(dA * KK * D, axis=1)
    dlogD = dA * beta[:, None] * KK * D
    dk += dot(dKK + jnp.transpose(dKK), k, _NN)
    # aqk = (q k^T) Dc
    QK = dot(q, k, _NT)
    dQK = daqk * Dc
    dq = dot(dQK, k, _NN)
    dk += dot(dQK, q, _TN)
    dlogD += daqk * QK * Dc
    # qd = q E, kd = k F
    dq += dqd * E[:, None]
    dE += jnp.sum(dqd * q, axis=1)
    dk += dkd * F[:, None]
    dlogF = F * jnp.sum(dkd * k, axis=1)
    dG = E * dE
    # Back to g: Gd_ij sums g over (j, i]; G_i over [0, i]; logF_i over (i, C).
    Lt = jnp.where(row < col, 1.0, 0.0)                   # Lt[j, l] = [j < l]
    Z = dot_exact(dlogD, Lt, _NN)                          # Z[i, l] = sum_{j<l} dlogD_ij
    dg = jnp.sum(jnp.where(row >= col, Z, 0.0), axis=0)   # sum over i >= l
    dg += jnp.sum(jnp.where(row >= col, dG[:, None], 0.0), axis=0)
    dg += jnp.sum(jnp.where(row < col, dlogF[:, None], 0.0), axis=0)
    dq_ref[...] = dq
    dk_ref[...] = dk
    dv_ref[...] = dv
    dg_ref[...] = dg
    db_ref[...] = dbeta


def _specs(C, Kp, Vp):
    tile = lambda d: pl.BlockSpec((None, C, d), lambda i, n: (i, n, 0))
    vec = pl.BlockSpec((None, C), lambda i, n: (i, n))
    return tile(Kp), tile(Vp), tile(C), vec


def prep_fwd(q, k, v, g, beta, *, C, dot, dot_exact, dot_inv, interpret, compiler_params,
             out_dtype):
    BH, Tp, Kp = q.shape
    Vp = v.shape[-1]
    tk, tv, tc, vec = _specs(C, Kp, Vp)
    sds = lambda d: jax.ShapeDtypeStruct((BH, Tp, d), out_dtype)
    return pl.pallas_call(
        functools.partial(_prep_fwd_kernel, C=C, dot=dot, dot_exact=dot_exact, dot_inv=dot_inv),
        grid=(BH, Tp // C),
        in_specs=[tk, tk, tv, vec, vec],
        out_specs=[tk, tv, tk, tk, tc],
        out_shape=[sds(Kp), sds(Vp), sds(Kp), sds(Kp), sds(C)],
        compiler_params=compiler_params, interpret=interpret, name="gdr_prep_fwd",
    )(q, k, v, g, beta)  # w, u, kd, qd, aqk


def prep_bwd(q, k, v, g, beta, dw, du, dkd, dqd, daqk, *, C, dot, dot_exact, dot_inv,
             interpret, compiler_params):
    BH, Tp, Kp = q.shape
    Vp = v.shape[-1]
    tk, tv, tc, vec = _specs(C, Kp, Vp)
    f32 = jnp.float32
    sds = lambda d: jax.ShapeDtypeStruct((BH, Tp, d), f32)
    return pl.pallas_call(
        functools.partial(_prep_bwd_kernel, C=C, dot=dot, dot_exact=dot_exact, dot_inv=dot_inv),
        grid=(BH, Tp // C),
        in_specs=[tk, tk, tv, vec, vec, tk, tv, tk, tk, tc],
        out_specs=[tk, tk, tv, vec, vec],
        out_shape=[sds(Kp), sds(Kp), sds(Vp), jax.ShapeDtypeStruct((BH, Tp), f32),
                   jax.ShapeDtypeStruct((BH, Tp), f32)],
        compiler_params=compiler_params, interpret=interpret, name="gdr_prep_bwd",
    )(q, k, v, g, beta, dw, du, dkd, dqd, daqk)  # dq, dk, dv, dg, dbeta
