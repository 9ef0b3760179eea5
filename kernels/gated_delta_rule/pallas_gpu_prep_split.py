"""The chunk prep, forward and backward, as three small Pallas GPU (Triton) kernels each, as
fla splits it.

Why this exists
    `pallas_gpu_prep.prep_fwd` does the whole chunk-local WY transform in one program per
    (batch x value head, chunk): decays, k k^T and q k^T, (I + A)^-1 by log2(C) dependent
    [C, C] products, then w and u. On an H200 it took 1.39 ms at B4 T4096 H16 K=V=128 (and
    its backward 2.98 ms), and
    neither fewer products (16x16 diagonal blocks: 23% slower) nor a saved inverse helped:
    it is not bound by tensor-core products (experiments/LOG.md, fifth session). Its programs
    hold many [C, C] fp32 tiles at once (255 registers a thread, spills), so few are resident
    per SM to hide latency. fla splits the same work into kkt, solve_tril and recompute_w_u
    kernels; here likewise, each with a few live tiles, at the price of writing A and T
    ([BH, Tp, C] fp32 each) to HBM and reading them back (~0.27 GB at the headline shape).
      1. `_kkt_kernel`: decays, A = tril_strict(beta (k k^T) exp(Gd)) (fp32) and
         aqk = (q k^T) tril(exp(Gd));
      2. `_solve_kernel`: T = (I + A)^-1 by the same recursion as the fused kernel;
      3. `_wu_kernel`: w = T (beta E k), u = T (beta v), qd = q E, kd = k F.
    Measured (H200, same shape, "default"): 0.973 ms for the three against 1.426 ms fused
    (experiments/LOG.md, sixth session). The backward likewise, from the forward's saved T
    ([BH, Tp, C]: fp32 from these kernels, the chunk operands' dtype from the fused forward,
    `prep_fwd_saving_inverse`; kept until the backward) instead of
    recomputing kkt and the inverse:
      1. `_inverse_bwd_kernel`: through u, w and the inverse: dv, the w term of dk, dA;
      2. `_decay_bwd_kernel`: through A and aqk: d(k k^T), d(q k^T) to HBM; dbeta, and dg
         through the decays Gd;
      3. `_qk_bwd_kernel`: dq, dk from those, per K tile, and the rest of dg.

Numerics
    The same formulas, helpers and dot precisions as `pallas_gpu_prep` (see there); what
    goes between kernels (A, T, dA, d(k k^T), d(q k^T), the w term of dk) round-trips through
    HBM in fp32, so the outputs equal the fused kernels' up to the compiler's reassociation;
    except that where the dots take bf16 operands ("default"), T from the fused forward and
    d(k k^T), d(q k^T), which only ever feed dots, are stored in bf16 (the same values the dots
    see), and that dq, dk, dv are written in q's dtype (bf16 for bf16 callers at "default").

Constraints
    As `pallas_gpu_prep`: q, k [BH, Tp, Kp]; v [BH, Tp, Vp]; g, beta [BH, Tp]; Kp, C, block_d
    powers of two >= 16; Vp a multiple of the V tile.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from kernels.gated_delta_rule import caller_layout as lay
from kernels.gated_delta_rule.pallas_gpu_common import _NN, _TN
from kernels.gated_delta_rule.pallas_gpu_prep import (_cols, _decay_grads, _decays, _dg_decay,
                                                      _g_shape, _inverse_grad, _kernel_kw,
                                                      _kk_qk, _log_decays, _masked_decays,
                                                      _prep_call, _specs, _store_dg, _tiles,
                                                      _unit_lower_inverse, _write_wu, prep_fwd)


def _kkt_kernel(q_ref, k_ref, g_ref, b_ref, a_ref, aqk_ref, *, C, BK, BV, dot, dot_inv, decays):
    del BV, dot_inv
    KK, QK = _kk_qk(q_ref, k_ref, C=C, BK=BK, dot=dot)
    row, col, Gd, _, _ = _decays(g_ref, C, decays)
    D, Dc = _masked_decays(Gd, row, col)
    a_ref[...] = b_ref[...][:, None] * KK * D
    aqk_ref[...] = (QK * Dc).astype(aqk_ref.dtype)


def _solve_kernel(a_ref, t_ref, *, C, dot_inv):
    row = lax.broadcasted_iota(jnp.int32, (C, C), 0)
    col = lax.broadcasted_iota(jnp.int32, (C, C), 1)
    t_ref[...] = _unit_lower_inverse(a_ref[...], row, col, C, dot_inv)


def _row_decays(g_ref, C, decays):
    """E = exp(G) and F = exp(logF) [C], summed (or read) as `_decays` does."""
    row = lax.broadcasted_iota(jnp.int32, (C, C), 0)
    col = lax.broadcasted_iota(jnp.int32, (C, C), 1)
    G, logF = _log_decays(g_ref, row, col, decays)
    return jnp.exp(G), jnp.exp(logF)


def _wu_kernel(q_ref, k_ref, v_ref, g_ref, b_ref, t_ref, w_ref, u_ref, qd_ref, kd_ref, *, C, BK,
               BV, dot, dot_inv, decays):
    del dot_inv
    beta, T = b_ref[...], t_ref[...]
    E, F = _row_decays(g_ref, C, decays)
    _write_wu(q_ref, k_ref, v_ref, w_ref, u_ref, qd_ref, kd_ref, T, beta, E, F, BK=BK, BV=BV,
              dot=dot)


def prep_fwd_split(q, k, v, g, beta, *, C, block_d, dot, dot_inv, interpret, compiler_params,
                   out_dtype, decays="exact"):
    """(w, u, kd, qd, aqk), as `pallas_gpu_prep.prep_fwd` returns them, from three kernels; and
    the residuals (T,) for `prep_bwd_split`: T = (I + A)^-1 [BH, Tp, C] fp32."""
    BH, Tp, Kp = q.shape
    Vp = v.shape[-1]
    tk, tv, tc, vec, gs = _specs(C, Kp, Vp, decays)
    kw = _kernel_kw(C, Kp, Vp, block_d, dot, dot_inv, decays)
    sds = lambda d, dt=out_dtype: jax.ShapeDtypeStruct((BH, Tp, d), dt)
    call = _prep_call(BH, Tp, C, compiler_params, interpret)
    A, aqk = call(
        functools.partial(_kkt_kernel, **kw), in_specs=[tk, tk, gs, vec], out_specs=[tc, tc],
        out_shape=[sds(C, jnp.float32), sds(C)], name="gdr_prep_kkt")(q, k, g, beta)
    T = call(functools.partial(_solve_kernel, C=C, dot_inv=dot_inv), in_specs=[tc],
             out_specs=tc, out_shape=sds(C, jnp.float32), name="gdr_prep_solve")(A)
    w, u, qd, kd = call(
        functools.partial(_wu_kernel, **kw), in_specs=[tk, tk, tv, gs, vec, tc],
        out_specs=[tk, tv, tk, tk], out_shape=[sds(Kp), sds(Vp), sds(Kp), sds(Kp)],
        name="gdr_prep_wu")(q, k, v, g, beta, T)
    return (w, u, kd, qd, aqk), (T,)


def prep_fwd_saving_inverse(q, k, v, g, beta, **kw):
    """The fused forward (`pallas_gpu_prep.prep_fwd`), also writing T for `prep_bwd_split`:
    (w, u, kd, qd, aqk), (T,). For prep="pallas_splitbwd"."""
    *out, T = prep_fwd(q, k, v, g, beta, save_inverse=True, **kw)
    return tuple(out), (T,)


# ---------------------------------------------------------------------------------------------
# Backward: the fused `_prep_bwd_kernel` in three parts, each holding at most a few [C, C]
# tiles. Between them go dA, d(k k^T) and d(q k^T) ([C, C] fp32 per chunk) and the w term of dk.

def _inverse_bwd_kernel(k_ref, v_ref, g_ref, b_ref, t_ref, dw_ref, du_ref, dv_ref, dk_ref, da_ref,
                        db_ref, ds_ref, *, C, BK, BV, dot, dot_inv, decays):
    """dv, the w term of dk, dA, and beta's cotangent so far with s_bek (see `_inverse_grad`)."""
    del dot_inv
    beta = b_ref[...]
    E, _ = _row_decays(g_ref, C, decays)
    dA, dbeta, s_bek = _inverse_grad(t_ref[...], beta, beta * E, k_ref, v_ref, dw_ref, du_ref,
                                     dv_ref, C=C, BK=BK, BV=BV, dot=dot, dk_ref=dk_ref)
    da_ref[...] = dA
    db_ref[...] = dbeta + E * s_bek
    ds_ref[...] = s_bek


def _decay_bwd_kernel(q_ref, k_ref, g_ref, b_ref, da_ref, daqk_ref, db_ref, dkk_ref, dqk_ref,
                      dg_ref, dbeta_ref, *, C, BK, BV, dot, dot_inv, decays):
    """Through A and aqk: d(k k^T) (symmetric) and d(q k^T) out to HBM; dbeta whole; dg
    through Gd (with decays="xla", G's cotangent through it; the qk kernel adds the rest)."""
    del BV, dot_inv
    KK, QK = _kk_qk(q_ref, k_ref, C=C, BK=BK, dot=dot)
    row, col, Gd, _, _ = _decays(g_ref, C, decays)
    D, Dc = _masked_decays(Gd, row, col)
    dKK_sym, dQK, dbeta_A, dlogD = _decay_grads(da_ref[...], daqk_ref[...].astype(jnp.float32),
                                                KK, QK, b_ref[...], D, Dc)
    dkk_ref[...] = dKK_sym.astype(dkk_ref.dtype)
    dqk_ref[...] = dQK.astype(dqk_ref.dtype)
    dbeta_ref[...] = db_ref[...] + dbeta_A
    dg_ref[...] = _dg_decay(dlogD, row, col, decays)


def _qk_bwd_kernel(q_ref, k_ref, g_ref, b_ref, ds_ref, dgd_ref, dkk_ref, dqk_ref, dk0_ref,
                   dqd_ref, dkd_ref, dq_ref, dk_ref, dg_ref, *, C, BK, BV, dot, dot_inv,
                   decays):
    """dq = d(q k^T) k + dqd E;  dk = (w term) + d(k k^T) k + d(q k^T)^T q + dkd F, per K tile;
    and dg: the decay kernel's part plus those through E (qd, w) and F (kd)."""
    del BV, dot_inv
    f32 = jnp.float32
    E, F = _row_decays(g_ref, C, decays)
    dKK_sym, dQK = dkk_ref[...].astype(f32), dqk_ref[...].astype(f32)

    def k_tile(j, acc):
        dE_q, s_kd = acc
        cols = _cols(j, BK)
        k, q = k_ref[:, cols], q_ref[:, cols]
        dqd, dkd = dqd_ref[:, cols].astype(f32), dkd_ref[:, cols].astype(f32)
        dk_ref[:, cols] = (dk0_ref[:, cols] + dot(dKK_sym, k, _NN) + dot(dQK, q, _TN)
                           + dkd * F[:, None]).astype(dk_ref.dtype)
        dq_ref[:, cols] = (dot(dQK, k, _NN) + dqd * E[:, None]).astype(dq_ref.dtype)
        return dE_q + jnp.sum(dqd * q, axis=1), s_kd + jnp.sum(dkd * k, axis=1)

    zv = jnp.zeros((C,), f32)
    dE_q, s_kd = _tiles(k_ref.shape[1] // BK, k_tile, (zv, zv))
    dG = E * (b_ref[...] * ds_ref[...] + dE_q)
    _store_dg(dg_ref, dgd_ref[...], dG, F * s_kd, C, decays)


def prep_bwd_kernels(BH, Tp, Kp, Vp, *, C, block_d, dot, dot_inv, interpret, compiler_params,
                     decays="exact", grad_dtype=jnp.float32, mid_dtype=jnp.float32,
                     heads=None):
    """The three backward kernels as separate callables (`prep_bwd_split` chains them; the
    benchmark's breakdown times each): inverse(k, v, g, beta, T, dw, du) -> dv, dk0, dA, db0,
    s_bek; decay(q, k, g, beta, dA, daqk, db0) -> dkk, dqk, dgd, dbeta; qk(q, k, g, beta, s_bek,
    dgd, dkk, dqk, dk0, dqd, dkd) -> dq, dk, dg. dq, dk and dv are written in grad_dtype (the
    caller's, so that no XLA pass converts them); d(k k^T) and d(q k^T) in mid_dtype (they only
    feed dots: the chunk operands' dtype loses nothing); the rest in fp32. g and dg are
    `decay_input`'s array: [BH, Tp], or [BH, 2, Tp] with decays="xla". heads: q, k, v, dq,
    dk and dv in the caller's layout (`caller_layout`)."""
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
        out_shape=[grad(Vp), sds(Kp), sds(C), svec, svec],
        name="gdr_prep_bwd_inverse")
    decay = call(
        functools.partial(_decay_bwd_kernel, **kw),
        in_specs=[xk, xk, gs, vec, tc, tc, vec], out_specs=[tc, tc, vec, vec],
        out_shape=[sds(C, mid_dtype), sds(C, mid_dtype), svec, svec], name="gdr_prep_bwd_decay")
    qk = call(
        functools.partial(_qk_bwd_kernel, **kw),
        in_specs=[xk, xk, gs, vec, vec, vec, tc, tc, tk, tk, tk], out_specs=[xk, xk, gs],
        out_shape=[grad(Kp), grad(Kp), jax.ShapeDtypeStruct(_g_shape(BH, Tp, decays), jnp.float32)],
        name="gdr_prep_bwd_qk")
    return inverse, decay, qk


def prep_bwd_split(q, k, v, g, beta, T, dw, du, dkd, dqd, daqk, heads=None, **kw):
    """dq, dk, dv, dg, dbeta, as `pallas_gpu_prep.prep_bwd` returns them (but dq, dk, dv in
    q's dtype and, with heads, in q's layout), from three kernels and the forward's T."""
    inverse, decay, qk = prep_bwd_kernels(*lay.dims(q, v, heads), grad_dtype=q.dtype,
                                          mid_dtype=daqk.dtype, heads=heads, **kw)
    dv, dk0, dA, db0, s_bek = inverse(k, v, g, beta, T, dw, du)
    dkk, dqk, dgd, dbeta = decay(q, k, g, beta, dA, daqk, db0)
    dq, dk, dg = qk(q, k, g, beta, s_bek, dgd, dkk, dqk, dk0, dqd, dkd)
    return dq, dk, dv, dg, dbeta
