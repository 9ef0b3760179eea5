"""The Mosaic kernels behind `chunk.py`: one chunk of the gated delta rule, forward and
backward, on prepared (fp32, scaled, head-major, padded) blocks.

Per chunk (C tokens; q, k [C, K]; v [C, V]; g, beta rows [1, C]; S the entering state [K, V]):
    G_i = sum_{l<=i} g_l,  tail_i = sum_{l>i} g_l,  G_end = sum_l g_l
    Gd_ij = sum_{j<l<=i} g_l;  Ds = exp(Gd) for i > j, Dc = exp(Gd) for i >= j (0 elsewhere:
        masked to -inf before exp)
    A = beta_i (k k^T)_ij Ds_ij;  X = (I + A)^-1
    u = X (beta v);  w = X (beta exp(G) k);  delta = u - w S
    o = (q exp(G)) S + ((q k^T) o Dc) delta
    S' = exp(G_end) S + (k exp(tail))^T delta
The backward kernel walks the chunks in reverse with dS (the gradient of the state leaving
the chunk) in VMEM and applies the chain rule to exactly these lines; the states entering
each chunk come from the forward kernel (one [K, V] per chunk, the only stored residual).
Gradients of g are gathered from those of G, tail, G_end and Gd by masked reductions and one
matmul, never by differences of cumulative sums.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

HIGHEST = jax.lax.Precision.HIGHEST


def _dot(a, b, contract):
    return jax.lax.dot_general(a, b, (contract, ((), ())), precision=HIGHEST,
                               preferred_element_type=jnp.float32)


def _mm(a, b):     # a @ b
    return _dot(a, b, ((1,), (0,)))


def _mm_nt(a, b):  # a @ b.T
    return _dot(a, b, ((1,), (1,)))


def _mm_tn(a, b):  # a.T @ b
    return _dot(a, b, ((0,), (0,)))


def _unit_lower_inverse(A_CC, row, col, C: int):
    """(I + A)^-1 for strictly lower-triangular A: X_2s = X_s - X_s (A o M_s) X_s, M_s the
    lower-left s x s corner of every 2s x 2s diagonal block (reference.unit_lower_inverse's
    recursion in full-size masked matmuls)."""
    X = (row == col).astype(jnp.float32)
    s = 1
    while s < C:
        shift = s.bit_length() - 1  # s is a power of two
        same_pair = (row >> (shift + 1)) == (col >> (shift + 1))
        corner = same_pair & ((row >> shift) != (col >> shift)) & (row > col)
        X = X - _mm(_mm(X, jnp.where(corner, A_CC, 0.0)), X)
        s *= 2
    return X


def _chunk(q, k, v, g_1C, beta_1C, C):
    """Everything of one chunk that does not depend on the entering state."""
    row = jax.lax.broadcasted_iota(jnp.int32, (C, C), 0)
    col = jax.lax.broadcasted_iota(jnp.int32, (C, C), 1)
    g_rows = jnp.broadcast_to(g_1C, (C, C))                  # g_rows[i, l] = g_l
    # Column vectors [C, 1] from rows, by lane reductions (no transposes).
    G = jnp.sum(jnp.where(col <= row, g_rows, 0.0), axis=1, keepdims=True)
    tail = jnp.sum(jnp.where(col > row, g_rows, 0.0), axis=1, keepdims=True)
    b = jnp.sum(jnp.where(col == row, jnp.broadcast_to(beta_1C, (C, C)), 0.0), axis=1,
                keepdims=True)
    G_end = jnp.sum(g_1C, axis=1, keepdims=True)             # [1, 1]
    Gd = _mm(jnp.where(col <= row, g_rows, 0.0), (row > col).astype(jnp.float32))
    Ds = jnp.exp(jnp.where(row > col, Gd, -jnp.inf))
    Dc = jnp.exp(jnp.where(row >= col, Gd, -jnp.inf))
    KK = _mm_nt(k, k)
    X = _unit_lower_inverse(b * KK * Ds, row, col, C)
    eG = jnp.exp(G)
    bv, bk = b * v, (b * eG) * k
    return dict(row=row, col=col, G=G, tail=tail, b=b, eG=eG, eE=jnp.exp(G_end), Ds=Ds, Dc=Dc,
                KK=KK, QK=_mm_nt(q, k), X=X, bv=bv, bk=bk, u=_mm(X, bv), w=_mm(X, bk),
                et=jnp.exp(tail))


def forward_kernel(q_ref, k_ref, v_ref, g_ref, beta_ref, s0_ref,
                   o_ref, sT_ref, starts_ref, S_scr, *, C: int):
    n = pl.program_id(2)

    @pl.when(n == 0)
    def _():
        S_scr[...] = s0_ref[...]

    q, k = q_ref[...], k_ref[...]
    c = _chunk(q, k, v_ref[...], g_ref[...], beta_ref[...], C)
    S = S_scr[...]
    starts_ref[...] = S
    delta = c["u"] - _mm(c["w"], S)
    o_ref[...] = _mm(q * c["eG"], S) + _mm(c["QK"] * c["Dc"], delta)
    S_new = c["eE"] * S + _mm_tn(k * c["et"], delta)
    S_scr[...] = S_new

    @pl.when(n == pl.num_programs(2) - 1)
    def _():
        sT_ref[...] = S_new


def backward_kernel(q_ref, k_ref, v_ref, g_ref, beta_ref, start_ref, do_ref, dST_ref,
                    dq_ref, dk_ref, dv_ref, dg_ref, dbeta_ref, dS0_ref, dS_scr, *, C: int):
    n = pl.program_id(2)  # the chunk is N - 1 - n (see the index maps)

    @pl.when(n == 0)
    def _():
        dS_scr[...] = dST_ref[...]

    q, k, v = q_ref[...], k_ref[...], v_ref[...]
    c = _chunk(q, k, v, g_ref[...], beta_ref[...], C)
    row, col, X, b, eG, et = c["row"], c["col"], c["X"], c["b"], c["eG"], c["et"]
    S, do, dS_out = start_ref[...], do_ref[...], dS_scr[...]
    delta = c["u"] - _mm(c["w"], S)
    P = c["QK"] * c["Dc"]
    qe, ke = q * eG, k * et

    d_delta = _mm_tn(P, do) + _mm(ke, dS_out)
    dS_scr[...] = c["eE"] * dS_out + _mm_tn(qe, do) - _mm_tn(c["w"], d_delta)
    dqe = _mm_nt(do, S)
    dP = _mm_nt(do, delta)
    dke = _mm_nt(delta, dS_out)
    deE = jnp.sum(jnp.sum(S * dS_out, axis=1, keepdims=True), axis=0, keepdims=True)
    dw = -_mm_nt(d_delta, S)
    dX = _mm_nt(d_delta, c["bv"]) + _mm_nt(dw, c["bk"])
    dbv, dbk = _mm_tn(X, d_delta), _mm_tn(X, dw)
    dA = jnp.where(row > col, -_mm_nt(_mm_tn(X, dX), X), 0.0)
    dQK = dP * c["Dc"]
    dKK = dA * b * c["Ds"]

    dq = _mm(dQK, k) + dqe * eG
    dk = (_mm_tn(dQK, q) + dke * et + dbk * (b * eG) + _mm(dKK, k) + _mm_tn(dKK, k))
    dv = dbv * b
    db = (jnp.sum(dbk * eG * k, axis=1, keepdims=True) + jnp.sum(dbv * v, axis=1, keepdims=True)
          + jnp.sum(dA * c["KK"] * c["Ds"], axis=1, keepdims=True))
    dG = eG * (jnp.sum(dqe * q, axis=1, keepdims=True) + b * jnp.sum(dbk * k, axis=1,
                                                                       keepdims=True))
    dtail = et * jnp.sum(dke * k, axis=1, keepdims=True)
    dGd = dA * b * c["KK"] * c["Ds"] + dP * c["QK"] * c["Dc"]
    # g_l enters G_i (i >= l), tail_i (i < l), G_end, and Gd_ij (j < l <= i).
    R = _mm(dGd, (row < col).astype(jnp.float32))          # R[i, l] = sum_{j < l} dGd[i, j]
    dg = (jnp.sum(jnp.where(row >= col, dG + R, 0.0), axis=0, keepdims=True)
          + jnp.sum(jnp.where(row < col, dtail, 0.0), axis=0, keepdims=True) + deE * c["eE"])
    dq_ref[...], dk_ref[...], dv_ref[...] = dq, dk, dv
    dg_ref[...] = dg
    dbeta_ref[...] = jnp.sum(jnp.where(row == col, db, 0.0), axis=0, keepdims=True)

    @pl.when(n == pl.num_programs(2) - 1)
    def _():
        dS0_ref[...] = dS_scr[...]


def _cost(steps: int, C: int, K: int, V: int, backward: bool) -> pl.CostEstimate:
    """What one call does, so XLA's cost analysis (and `hybrid-jax compile`) counts it."""
    levels = max(C - 1, 0).bit_length()
    fwd = (2 * C ** 3 + 4 * C * C * K + 4 * levels * C ** 3 + 4 * C * C * (K + V)
           + 6 * C * K * V)
    flops = fwd * (3 if backward else 1)
    io = 4 * (2 * C * K + 2 * C * V + 2 * C + K * V) * (2 if backward else 1)
    return pl.CostEstimate(flops=steps * flops, transcendentals=steps * (2 * C * C + 3 * C),
                           bytes_accessed=steps * io)


def _specs(C, Kp, Vp, group, reverse_n):
    N_of = (lambda n: pl.num_programs(2) - 1 - n) if reverse_n else (lambda n: n)
    return dict(
        qk=pl.BlockSpec((None, None, C, Kp), lambda b, h, n: (b, h // group, N_of(n), 0)),
        qk_hv=pl.BlockSpec((None, None, C, Kp), lambda b, h, n: (b, h, N_of(n), 0)),
        v=pl.BlockSpec((None, None, C, Vp), lambda b, h, n: (b, h, N_of(n), 0)),
        gate=pl.BlockSpec((None, None, None, 1, C), lambda b, h, n: (b, h, N_of(n), 0, 0)),
        state=pl.BlockSpec((None, None, Kp, Vp), lambda b, h, n: (b, h, 0, 0)),
        per_chunk=pl.BlockSpec((None, None, None, Kp, Vp),
                               lambda b, h, n: (b, h, N_of(n), 0, 0)),
    )


_PARAMS = pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "arbitrary"))


def forward_call(qh, kh, vh, gr, br, S0, *, C, interpret):
    """(o [B,HV,Tp,Vp], final state [B,HV,Kp,Vp], entering states [B,HV,N,Kp,Vp])."""
    B, HV, Tp, Vp = vh.shape
    H, Kp, N = qh.shape[1], qh.shape[3], Tp // C
    s = _specs(C, Kp, Vp, HV // H, reverse_n=False)
    f32 = jnp.float32
    return pl.pallas_call(
        functools.partial(forward_kernel, C=C), grid=(B, HV, N),
        in_specs=[s["qk"], s["qk"], s["v"], s["gate"], s["gate"], s["state"]],
        out_specs=[s["v"], s["state"], s["per_chunk"]],
        out_shape=[jax.ShapeDtypeStruct((B, HV, Tp, Vp), f32),
                   jax.ShapeDtypeStruct((B, HV, Kp, Vp), f32),
                   jax.ShapeDtypeStruct((B, HV, N, Kp, Vp), f32)],
        scratch_shapes=[pltpu.VMEM((Kp, Vp), f32)], compiler_params=_PARAMS,
        cost_estimate=_cost(B * HV * N, C, Kp, Vp, backward=False),
        interpret=interpret, name="gated_delta_rule_fwd",
    )(qh, kh, vh, gr, br, S0)


def backward_call(qh, kh, vh, gr, br, starts, do, dST, *, C, interpret):
    """Gradients (dq, dk per value head [B,HV,Tp,Kp], dv, dg, dbeta, dS0)."""
    B, HV, Tp, Vp = vh.shape
    H, Kp, N = qh.shape[1], qh.shape[3], Tp // C
    s = _specs(C, Kp, Vp, HV // H, reverse_n=True)
    f32 = jnp.float32
    return pl.pallas_call(
        functools.partial(backward_kernel, C=C), grid=(B, HV, N),
        in_specs=[s["qk"], s["qk"], s["v"], s["gate"], s["gate"], s["per_chunk"], s["v"],
                  s["state"]],
        out_specs=[s["qk_hv"], s["qk_hv"], s["v"], s["gate"], s["gate"], s["state"]],
        out_shape=[jax.ShapeDtypeStruct((B, HV, Tp, Kp), f32),
                   jax.ShapeDtypeStruct((B, HV, Tp, Kp), f32),
                   jax.ShapeDtypeStruct((B, HV, Tp, Vp), f32),
                   jax.ShapeDtypeStruct(gr.shape, f32), jax.ShapeDtypeStruct(br.shape, f32),
                   jax.ShapeDtypeStruct((B, HV, Kp, Vp), f32)],
        scratch_shapes=[pltpu.VMEM((Kp, Vp), f32)], compiler_params=_PARAMS,
        cost_estimate=_cost(B * HV * N, C, Kp, Vp, backward=True),
        interpret=interpret, name="gated_delta_rule_bwd",
    )(qh, kh, vh, gr, br, starts, do, dST)
