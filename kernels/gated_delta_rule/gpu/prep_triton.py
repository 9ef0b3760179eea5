"""Triton (Pallas GPU) kernels of the chunk-local WY transform ("prep"), forward and backward.

Why this exists
    Everything of a chunk that does not depend on the state entering it runs here, one program
    per (batch x value head, chunk), all chunks in parallel, where the Mosaic GPU kernels
    (`prep_mosaic.py`, `prep_mosaic_bwd.py`) do not take the shape or dtype. The forward is one
    kernel that also writes T = (I + A)^-1 for the backward; the backward is three kernels that
    read T instead of recomputing it (fla splits its prep likewise: kkt, solve_tril,
    recompute_w_u), each holding few [C, C] tiles so that more programs are resident per SM.

Numerics
    Per chunk (C rows), G = cumsum(g), Gd_ij = sum_{j<l<=i} g_l, E = exp(G), F_i = exp(G_C - G_i):
        A = tril_strict(beta_i (k_i.k_j) exp(Gd_ij)),  T = (I + A)^-1 (recursive 2x2 blocks in
        log2(C) levels of [C, C] products at `dot_inv`),  u = T (beta v),  w = T (beta E k),
        aqk = (q k^T) tril(exp(Gd)),  qd = q E,  kd = k F.
    Exponents are masked with -inf before exp. Backward (dX = cotangent of X):
        dT = du (beta v)^T + dw (beta E k)^T;  dA = -T^T dT T^T (strict lower part)
        then the product rule through A, aqk, qd, kd, u, w; the cotangents of the log-decays
        (Gd, G, log F) are mapped back to g by running and masked sums.
    Dots use the caller's `dot` (TF32x3 or bf16 operands, fp32 accumulation). What goes
    between the backward's kernels (dA, the w term of dk) is fp32; d(k k^T) and d(q k^T), which
    only feed dots, are stored in the chunk operands' dtype (bf16 at "default"); dq, dk, dv are
    written in q's dtype. The backward's exclusive sum over j < l is the inclusive scan minus
    its own term: an absolute error of ulp(partial sum), as any fp32 sum of those terms has.
    `decays` (`chunk_math.DECAYS`) says where the log-decays come from: "exact" as above
    (precision "highest"); "outer" Gd = G_i - G_j and logF the chunk's total minus G, from one
    1-D scan in the kernel, as fla computes them (precision "default"); "xla" the same
    differences of G and logF that XLA summed before the kernels (`chunk_math.decay_input`, as
    fla's chunk_local_cumsum; with the Mosaic prep forward, which reads them): the backward
    then returns their cotangents and JAX maps those back to g.

Tiling
    No dot takes an operand wider than block_d (BK = min(block_d, Kp), BV = min(block_d, Vp))
    along K or V: whole [C, Kp] and [C, Vp] fp32 tiles live at once overflowed shared memory
    at "highest" (K=96, V=192, C=64 asked XLA for up to 360448 B of 232448). KK and QK
    accumulate over K tiles; u, w, qd, kd (forward) and dv (backward) are written per tile.

Constraints
    q, k [BH, Tp, Kp]; v [BH, Tp, Vp]; g, beta [BH, Tp]; Kp, C, block_d powers of two >= 16
    (Triton's dynamic slices need power-of-two widths >= 16); Vp a multiple of min(block_d,
    Vp's power of two) (`triton_common.prep_v`). The backward also takes q, k, v and writes
    dq, dk, dv in the caller's layout (`layout.py`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels.gated_delta_rule.gpu import layout as lay
from kernels.gated_delta_rule.gpu.chunk_math import (DECAYS, g_shape, g_spec, iota, masked_decays,
                                                     row_decays, tile_decays,
                                                     unit_lower_inverse)
from kernels.gated_delta_rule.gpu.triton_common import NN, NT, TN

def _tiles(n, body, carry):
    """carry = body(j, carry) for j < n, as an scf.for rather than a Python loop: unrolled,
    Triton kept more tiles live (K=96/V=192 at "highest": prep bwd 98304 B shared vs 65536)."""
    if n == 1:
        return body(0, carry)
    return lax.fori_loop(0, n, body, carry)


def _cols(j, width):
    """Columns of tile j; the hint keeps Triton's loads vectorized for a traced j."""
    start = j * width if isinstance(j, int) else pl.multiple_of(j * width, width)
    return pl.ds(start, width)


def _kk_qk(q_ref, k_ref, *, C, BK, dot):
    """k k^T and q k^T [C, C], accumulated over K tiles of width BK."""
    def tile(j, acc):
        cols = _cols(j, BK)
        k = k_ref[:, cols]
        return acc[0] + dot(k, k, NT), acc[1] + dot(q_ref[:, cols], k, NT)

    zero = jnp.zeros((C, C), jnp.float32)
    return _tiles(k_ref.shape[1] // BK, tile, (zero, zero))


# ---------------------------------------------------------------------------------------------
# Forward: one kernel.

def _fwd_kernel(q_ref, k_ref, v_ref, g_ref, b_ref, w_ref, u_ref, kd_ref, qd_ref, aqk_ref,
                *t_ref, C, BK, BV, dot, dot_inv, decays):
    """t_ref: optionally, where T = (I + A)^-1 goes, for the backward."""
    beta = b_ref[...]
    KK, QK = _kk_qk(q_ref, k_ref, C=C, BK=BK, dot=dot)
    row, col, Gd, G, logF = tile_decays(g_ref, C, decays)
    # aqk before the inverse, so that QK and its mask are not live through its products
    D, Dc = masked_decays(Gd, row, col)
    aqk_ref[...] = (QK * Dc).astype(aqk_ref.dtype)
    T = unit_lower_inverse(beta[:, None] * KK * D, row, col, C, dot_inv)
    if t_ref:
        t_ref[0][...] = T.astype(t_ref[0].dtype)
    E, F = jnp.exp(G), jnp.exp(logF)

    def u_tile(j, carry):  # u = T (beta v) per V tile
        cols = _cols(j, BV)
        u_ref[:, cols] = dot(T, beta[:, None] * v_ref[:, cols], NN).astype(u_ref.dtype)
        return carry

    def k_tile(j, carry):  # w = T (beta E k), qd = q E, kd = k F per K tile
        cols = _cols(j, BK)
        k, q = k_ref[:, cols], q_ref[:, cols]
        w_ref[:, cols] = dot(T, (beta * E)[:, None] * k, NN).astype(w_ref.dtype)
        qd_ref[:, cols] = (q * E[:, None]).astype(qd_ref.dtype)
        kd_ref[:, cols] = (k * F[:, None]).astype(kd_ref.dtype)
        return carry

    _tiles(v_ref.shape[1] // BV, u_tile, 0)
    _tiles(k_ref.shape[1] // BK, k_tile, 0)


def _specs(C, Kp, Vp, decays):
    """Chunk blocks over grid (BH, chunks): [C, Kp], [C, Vp], [C, C], [C]; and the log-decays'
    (`chunk_math.g_spec`)."""
    tile = lambda d: pl.BlockSpec((None, C, d), lambda i, n: (i, n, 0))
    vec = pl.BlockSpec((None, C), lambda i, n: (i, n))
    return tile(Kp), tile(Vp), tile(C), vec, g_spec(C, decays)


def _prep_call(BH, Tp, C, compiler_params, interpret):
    """pl.pallas_call over (BH, chunks), every kernel with the same launch parameters."""
    def call(kernel, *, name, **kw):
        return pl.pallas_call(kernel, grid=(BH, Tp // C), interpret=interpret, name=name,
                              compiler_params=compiler_params, **kw)
    return call


def _kernel_kw(C, Kp, Vp, block_d, dot, dot_inv, decays):
    if block_d < 16 or block_d & (block_d - 1):
        raise ValueError(f"block_d must be a power of two >= 16, got {block_d}")
    if decays not in DECAYS:
        raise ValueError(f"decays={decays!r}; expected one of {DECAYS}")
    return dict(C=C, BK=min(block_d, Kp), BV=min(block_d, Vp), dot=dot, dot_inv=dot_inv,
                decays=decays)


def prep_fwd(q, k, v, g, beta, *, C, block_d, dot, dot_inv, interpret, compiler_params,
             out_dtype, decays, save_inverse=False):
    """w, u, kd, qd, aqk [BH, Tp, *] in out_dtype; and T = (I + A)^-1 [BH, Tp, C] after them if
    save_inverse, in out_dtype too: the backward feeds T only to its dots, which round their
    operands to that dtype (bf16 at "default") anyway. g: `decay_input(g, C, decays)`."""
    BH, Tp, Kp = q.shape
    Vp = v.shape[-1]
    tk, tv, tc, vec, gs = _specs(C, Kp, Vp, decays)
    sds = lambda d: jax.ShapeDtypeStruct((BH, Tp, d), out_dtype)
    return _prep_call(BH, Tp, C, compiler_params, interpret)(
        functools.partial(_fwd_kernel, **_kernel_kw(C, Kp, Vp, block_d, dot, dot_inv, decays)),
        in_specs=[tk, tk, tv, gs, vec],
        out_specs=[tk, tv, tk, tk, tc] + [tc] * save_inverse,
        out_shape=[sds(Kp), sds(Vp), sds(Kp), sds(Kp), sds(C)] + [sds(C)] * save_inverse,
        name="gdr_prep_fwd",
    )(q, k, v, g, beta)


# ---------------------------------------------------------------------------------------------
# Backward: three kernels, from the forward's T. Between them go dA, d(k k^T) and d(q k^T)
# ([C, C] per chunk) and the w term of dk.

def _inverse_bwd_kernel(k_ref, v_ref, g_ref, b_ref, t_ref, dw_ref, du_ref, dv_ref, dk_ref,
                        da_ref, db_ref, ds_ref, *, C, BK, BV, dot, dot_inv, decays):
    """Through u = T (beta v), w = T (beta E k) and T = (I + A)^-1: dv, the w term of dk
    ((beta E) T^T dw), dA (strict lower part), beta's cotangent so far, and s_bek =
    sum_k (T^T dw) k, the cotangent of beta E."""
    del dot_inv
    f32 = jnp.float32
    beta = b_ref[...]
    E, _ = row_decays(g_ref, C, decays)
    T, bE = t_ref[...], beta * E

    def v_tile(j, acc):  # u = T bv: dT = du bv^T, dbv = T^T du (sums over V tiles)
        dT, dbeta = acc
        cols = _cols(j, BV)
        v, du = v_ref[:, cols], du_ref[:, cols].astype(f32)
        dbv = dot(T, du, TN)
        dv_ref[:, cols] = (beta[:, None] * dbv).astype(dv_ref.dtype)
        return dT + dot(du, beta[:, None] * v, NT), dbeta + jnp.sum(dbv * v, axis=1)

    def k_tile(j, acc):  # w = T bek: dT += dw bek^T; s_bek = sum_k (T^T dw) k
        dT, s_bek = acc
        cols = _cols(j, BK)
        k, dw = k_ref[:, cols], dw_ref[:, cols].astype(f32)
        dbek = dot(T, dw, TN)
        dk_ref[:, cols] = (bE[:, None] * dbek).astype(dk_ref.dtype)
        return dT + dot(dw, bE[:, None] * k, NT), s_bek + jnp.sum(dbek * k, axis=1)

    zc, zv = jnp.zeros((C, C), f32), jnp.zeros((C,), f32)
    dT, dbeta = _tiles(v_ref.shape[1] // BV, v_tile, (zc, zv))
    dT, s_bek = _tiles(k_ref.shape[1] // BK, k_tile, (dT, zv))
    row, col = iota(C)
    # T = (I + A)^-1: dA = -T^T dT T^T, on the strict lower triangle
    da_ref[...] = jnp.where(row > col, -dot(dot(T, dT, TN), T, NT), 0.0)
    db_ref[...] = dbeta + E * s_bek
    ds_ref[...] = s_bek


def _decay_grads(dA, daqk, KK, QK, beta, D, Dc):
    """Through A = beta (k k^T) D and aqk = (q k^T) Dc: the symmetric cotangent of k k^T, that of
    q k^T, the cotangent of beta through A, and that of log D (= Gd) from both. (Ordered so
    that each input dies early: fewer live [C, C] tiles, fewer spills.)"""
    dQK = daqk * Dc
    dlogD = dQK * QK
    dAD = dA * D
    dKK = dAD * beta[:, None]
    dKKD = dAD * KK
    return (dKK + jnp.transpose(dKK), dQK, jnp.sum(dKKD, axis=1),
            dlogD + dKKD * beta[:, None])


def _dg_decay(dlogD, row, col, decays):
    """dg through Gd, which sums g over (j, i]; or, where Gd is G_i - G_j, dg through that
    ("outer"), or with decays="xla" the cotangent of G (dlogD's diagonal cancels there, and
    the exact form never reads it: Gd_ii = 0 is no function of g)."""
    if decays != "exact":  # dG = row sums - column sums
        dG = jnp.sum(dlogD, axis=1) - jnp.sum(dlogD, axis=0)
        if decays == "xla":
            return dG
        # G_i sums g over l <= i: dg_l = sum_{i>=l} dG_i (1-D; cancels as G_i - G_j does)
        return jnp.sum(dG) - jnp.cumsum(dG) + dG
    Z = jnp.cumsum(dlogD, axis=1) - dlogD                  # Z[i, l] = sum_{j<l} dlogD_ij
    return jnp.sum(jnp.where(row >= col, Z, 0.0), axis=0)  # sum over i >= l


def _decay_bwd_kernel(q_ref, k_ref, g_ref, b_ref, da_ref, daqk_ref, db_ref, dkk_ref, dqk_ref,
                      dg_ref, dbeta_ref, *, C, BK, BV, dot, dot_inv, decays):
    """Through A and aqk: d(k k^T) (symmetric) and d(q k^T) out to HBM; dbeta whole; dg
    through Gd (with decays="xla", G's cotangent through it; the qk kernel adds the rest)."""
    del BV, dot_inv
    KK, QK = _kk_qk(q_ref, k_ref, C=C, BK=BK, dot=dot)
    row, col, Gd, _, _ = tile_decays(g_ref, C, decays)
    D, Dc = masked_decays(Gd, row, col)
    dKK_sym, dQK, dbeta_A, dlogD = _decay_grads(da_ref[...], daqk_ref[...].astype(jnp.float32),
                                                KK, QK, b_ref[...], D, Dc)
    dkk_ref[...] = dKK_sym.astype(dkk_ref.dtype)
    dqk_ref[...] = dQK.astype(dqk_ref.dtype)
    dbeta_ref[...] = db_ref[...] + dbeta_A
    dg_ref[...] = _dg_decay(dlogD, row, col, decays)


def _store_dg(dg_ref, dg_decay, dG, dlogF, C, decays):
    """dg from its part through Gd (`_dg_decay`) and the cotangents of G_i, which sums g over
    [0, i], and logF_i, over (i, C); with decays="xla" those of G and logF themselves."""
    if decays == "xla":
        dg_ref[0, :] = dg_decay + dG
        dg_ref[1, :] = dlogF
        return
    row, col = iota(C)
    dg_ref[...] = (dg_decay + jnp.sum(jnp.where(row >= col, dG[:, None], 0.0), axis=0)
                   + jnp.sum(jnp.where(row < col, dlogF[:, None], 0.0), axis=0))


def _qk_bwd_kernel(q_ref, k_ref, g_ref, b_ref, ds_ref, dgd_ref, dkk_ref, dqk_ref, dk0_ref,
                   dqd_ref, dkd_ref, dq_ref, dk_ref, dg_ref, *, C, BK, BV, dot, dot_inv,
                   decays):
    """dq = d(q k^T) k + dqd E;  dk = (w term) + d(k k^T) k + d(q k^T)^T q + dkd F, per K tile;
    and dg: the decay kernel's part plus those through E (qd, w) and F (kd)."""
    del BV, dot_inv
    f32 = jnp.float32
    E, F = row_decays(g_ref, C, decays)
    dKK_sym, dQK = dkk_ref[...].astype(f32), dqk_ref[...].astype(f32)

    def k_tile(j, acc):
        dE_q, s_kd = acc
        cols = _cols(j, BK)
        k, q = k_ref[:, cols], q_ref[:, cols]
        dqd, dkd = dqd_ref[:, cols].astype(f32), dkd_ref[:, cols].astype(f32)
        dk_ref[:, cols] = (dk0_ref[:, cols] + dot(dKK_sym, k, NN) + dot(dQK, q, TN)
                           + dkd * F[:, None]).astype(dk_ref.dtype)
        dq_ref[:, cols] = (dot(dQK, k, NN) + dqd * E[:, None]).astype(dq_ref.dtype)
        return dE_q + jnp.sum(dqd * q, axis=1), s_kd + jnp.sum(dkd * k, axis=1)

    zv = jnp.zeros((C,), f32)
    dE_q, s_kd = _tiles(k_ref.shape[1] // BK, k_tile, (zv, zv))
    dG = E * (b_ref[...] * ds_ref[...] + dE_q)
    _store_dg(dg_ref, dgd_ref[...], dG, F * s_kd, C, decays)


def prep_bwd_kernels(BH, Tp, Kp, Vp, *, C, block_d, dot, dot_inv, interpret, compiler_params,
                     decays, grad_dtype, mid_dtype, heads=None):
    """The three backward kernels as separate callables (`prep_bwd` chains them; the
    benchmark's breakdown times each): inverse(k, v, g, beta, T, dw, du) -> dv, dk0, dA, db0,
    s_bek; decay(q, k, g, beta, dA, daqk, db0) -> dkk, dqk, dgd, dbeta; qk(q, k, g, beta, s_bek,
    dgd, dkk, dqk, dk0, dqd, dkd) -> dq, dk, dg. dq, dk and dv are written in grad_dtype (the
    caller's, so that no XLA pass converts them); d(k k^T) and d(q k^T) in mid_dtype; the rest
    in fp32. g and dg are `decay_input`'s array. heads: q, k, v, dq, dk and dv in the caller's
    layout (`layout.py`)."""
    tk, tv, tc, vec, gs = _specs(C, Kp, Vp, decays)
    xk, xv = lay.block_spec(C, Kp, heads), lay.block_spec(C, Vp, heads)
    grad = lambda d: jax.ShapeDtypeStruct(lay.shape(BH, Tp, d, heads), grad_dtype)
    kw = _kernel_kw(C, Kp, Vp, block_d, dot, dot_inv, decays)
    sds = lambda d, dt=jnp.float32: jax.ShapeDtypeStruct((BH, Tp, d), dt)
    svec = jax.ShapeDtypeStruct((BH, Tp), jnp.float32)
    call = _prep_call(BH, Tp, C, compiler_params, interpret)
    inverse = call(
        functools.partial(_inverse_bwd_kernel, **kw),
        in_specs=[xk, xv, gs, vec, tc, tk, tv], out_specs=[xv, tk, tc, vec, vec],
        out_shape=[grad(Vp), sds(Kp), sds(C), svec, svec], name="gdr_prep_bwd_inverse")
    decay = call(
        functools.partial(_decay_bwd_kernel, **kw),
        in_specs=[xk, xk, gs, vec, tc, tc, vec], out_specs=[tc, tc, vec, vec],
        out_shape=[sds(C, mid_dtype), sds(C, mid_dtype), svec, svec], name="gdr_prep_bwd_decay")
    qk = call(
        functools.partial(_qk_bwd_kernel, **kw),
        in_specs=[xk, xk, gs, vec, vec, vec, tc, tc, tk, tk, tk], out_specs=[xk, xk, gs],
        out_shape=[grad(Kp), grad(Kp),
                   jax.ShapeDtypeStruct(g_shape(BH, Tp, decays), jnp.float32)],
        name="gdr_prep_bwd_qk")
    return inverse, decay, qk


def prep_bwd(q, k, v, g, beta, T, dw, du, dkd, dqd, daqk, *, heads=None, **kw):
    """dq, dk, dv (in q's dtype and, with heads, in q's layout), dg (shaped as g), dbeta (fp32)
    from the forward's T and the cotangents of w, u, kd, qd, aqk."""
    inverse, decay, qk = prep_bwd_kernels(*lay.dims(q, v, heads), grad_dtype=q.dtype,
                                          mid_dtype=daqk.dtype, heads=heads, **kw)
    dv, dk0, dA, db0, s_bek = inverse(k, v, g, beta, T, dw, du)
    dkk, dqk, dgd, dbeta = decay(q, k, g, beta, dA, daqk, db0)
    dq, dk, dg = qk(q, k, g, beta, s_bek, dgd, dkk, dqk, dk0, dqd, dkd)
    return dq, dk, dv, dg, dbeta
