"""The chunk prep's forward as three small Pallas GPU (Triton) kernels, as fla splits it.

Why this exists
    `pallas_gpu_prep.prep_fwd` does the whole chunk-local WY transform in one program per
    (batch x value head, chunk): decays, k k^T and q k^T, (I + A)^-1 by log2(C) dependent
    [C, C] products, then w and u. On an H200 it took 1.39 ms at B4 T4096 H16 K=V=128, and
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
    The backward is unchanged (`pallas_gpu_prep.prep_bwd` recomputes from q, k, v, g, beta).

Numerics
    The same formulas, helpers and dot precisions as `pallas_gpu_prep` (see there); A and T
    round-trip through HBM in fp32, so the outputs equal the fused kernel's up to the
    compiler's reassociation.

Constraints
    As `pallas_gpu_prep`: q, k [BH, Tp, Kp]; v [BH, Tp, Vp]; g, beta [BH, Tp]; Kp, Vp, C,
    block_d powers of two >= 16.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels.gated_delta_rule.pallas_gpu_prep import (_decays, _kernel_kw, _kk_qk, _specs,
                                                      _unit_lower_inverse, _write_wu)


def _kkt_kernel(q_ref, k_ref, g_ref, b_ref, a_ref, aqk_ref, *, C, BK, BV, dot, dot_exact,
                dot_inv):
    del BV, dot_inv
    row, col, Gd, _, _ = _decays(g_ref[...], C, dot_exact)
    KK, QK = _kk_qk(q_ref, k_ref, C=C, BK=BK, dot=dot)
    a_ref[...] = b_ref[...][:, None] * KK * jnp.exp(jnp.where(row > col, Gd, -jnp.inf))
    aqk_ref[...] = (QK * jnp.exp(jnp.where(row >= col, Gd, -jnp.inf))).astype(aqk_ref.dtype)


def _solve_kernel(a_ref, t_ref, *, C, dot_inv):
    row = lax.broadcasted_iota(jnp.int32, (C, C), 0)
    col = lax.broadcasted_iota(jnp.int32, (C, C), 1)
    t_ref[...] = _unit_lower_inverse(a_ref[...], row, col, C, dot_inv)


def _wu_kernel(q_ref, k_ref, v_ref, g_ref, b_ref, t_ref, w_ref, u_ref, qd_ref, kd_ref, *, C, BK,
               BV, dot, dot_exact, dot_inv):
    del dot_exact, dot_inv
    g, beta, T = g_ref[...], b_ref[...], t_ref[...]
    row = lax.broadcasted_iota(jnp.int32, (C, C), 0)
    col = lax.broadcasted_iota(jnp.int32, (C, C), 1)
    E = jnp.exp(jnp.sum(jnp.where(col <= row, g[None, :], 0.0), axis=1))   # G, as _decays
    F = jnp.exp(jnp.sum(jnp.where(col > row, g[None, :], 0.0), axis=1))    # logF, as _decays
    _write_wu(q_ref, k_ref, v_ref, w_ref, u_ref, qd_ref, kd_ref, T, beta, E, F, BK=BK, BV=BV,
              dot=dot)


def prep_fwd_split(q, k, v, g, beta, *, C, block_d, dot, dot_exact, dot_inv, interpret,
                   compiler_params, out_dtype):
    """w, u, kd, qd, aqk as `pallas_gpu_prep.prep_fwd` returns them, from three kernels."""
    BH, Tp, Kp = q.shape
    Vp = v.shape[-1]
    tk, tv, tc, vec = _specs(C, Kp, Vp)
    kw = _kernel_kw(C, Kp, Vp, block_d, dot, dot_exact, dot_inv)
    sds = lambda d, dt=out_dtype: jax.ShapeDtypeStruct((BH, Tp, d), dt)
    call = functools.partial(pl.pallas_call, grid=(BH, Tp // C), compiler_params=compiler_params,
                             interpret=interpret)
    A, aqk = call(
        functools.partial(_kkt_kernel, **kw), in_specs=[tk, tk, vec, vec], out_specs=[tc, tc],
        out_shape=[sds(C, jnp.float32), sds(C)], name="gdr_prep_kkt")(q, k, g, beta)
    T = call(functools.partial(_solve_kernel, C=C, dot_inv=dot_inv), in_specs=[tc],
             out_specs=tc, out_shape=sds(C, jnp.float32), name="gdr_prep_solve")(A)
    w, u, qd, kd = call(
        functools.partial(_wu_kernel, **kw), in_specs=[tk, tk, tv, vec, vec, tc],
        out_specs=[tk, tv, tk, tk], out_shape=[sds(Kp), sds(Vp), sds(Kp), sds(Kp)],
        name="gdr_prep_wu")(q, k, v, g, beta, T)
    return w, u, kd, qd, aqk
