"""Pallas GPU (Triton lowering) kernels for the chunk-local WY transform and its backward.

Why this exists
    `pallas_gpu.py` runs the sequential state pass in Pallas; with prep="pallas" the
    chunk-parallel part (everything `_chunk_prep` does in XLA) runs here as one program per
    (batch x value head, chunk), forward and backward, instead of a dozen XLA ops and their
    autodiff. The backward recomputes the forward quantities of its chunk (no residuals).

Numerics
    Per chunk (C rows), with G = cumsum(g), Gd_ij = sum_{j<l<=i} g_l (each column j a running
    sum of its own terms, never a difference of cumulative sums), E = exp(G),
    F_i = exp(G_C - G_i) (a masked row sum):
        A = tril_strict(beta_i (k_i.k_j) exp(Gd_ij)),  T = (I + A)^-1 (recursive 2x2 blocks in
        log2(C) levels of [C, C] products at `dot_inv`),  u = T (beta v),
        w = T (beta E k),
        aqk = (q k^T) tril(exp(Gd)),  qd = q E,  kd = k F.
    Exponents are masked with -inf before exp. Backward (dX = cotangent of X):
        dT = du (beta v)^T + dw (beta E k)^T;  dA = -T^T dT T^T (strict lower part)
        then the product rule through A, aqk, qd, kd, u, w; the cotangents of the log-decays
        (Gd, G, log F) are mapped back to g by running and masked sums.
    Dots use the caller's `dot` (TF32x3 or bf16 operands, fp32 accumulation). Until the sixth
    session Gd and dg were products with 0/1 matrices at TF32x3 (a bf16 g would put ~0.4%
    errors into exponents); their split operands made Triton spill (prep fwd 924 B, bwd
    4 KB at B4 T4096 H16 K=V=128, "default"), and the fp32 `cumsum` (a Triton scan) has none.
    The backward's exclusive sum over j < l is the inclusive scan minus its own term: an
    absolute error of ulp(partial sum) in a gradient, as any fp32 sum of those terms has.
    `decays` says where the log-decays come from (`DECAYS`): "exact" as above (the default at
    "highest"); "outer" (the default at "default", ninth session) Gd = G_i - G_j and logF the
    chunk's total minus G, from one 1-D scan in the kernel: no [C, C] scan (`_log_decays`);
    "xla" the same differences, but of G and logF that XLA computed before the kernels
    (`decay_input`, as fla's chunk_local_cumsum does): the kernels read them and return their
    cotangents, so no kernel scans and JAX maps those cotangents back to g.

Tiling
    No dot takes an operand wider than block_d (BK = min(block_d, Kp), BV = min(block_d, Vp))
    along K or V: whole [C, Kp] and [C, Vp] fp32 tiles live at once overflowed shared memory
    at "highest" (fp32 operands of TF32x3 dots are staged there; K=96, V=192, C=64 asked XLA
    for up to 360448 B of 232448). KK and QK accumulate over K tiles; u, w, qd, kd (forward)
    and dv (backward) are written per tile. The backward walks V once and K twice: dA needs
    all of dT (sums over V and K tiles), and dq, dk need dA.

Constraints
    q, k [BH, Tp, Kp]; v [BH, Tp, Vp]; g, beta [BH, Tp]; Kp, C, block_d powers of two >= 16
    (Triton's dynamic slices need power-of-two widths >= 16); Vp a multiple of
    min(block_d, Vp's power of two) (`pallas_gpu_common._prep_v`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels.gated_delta_rule import caller_layout as lay
from kernels.gated_delta_rule.pallas_gpu_common import _NN, _NT, _TN, _params_for


# Where the in-chunk log-decays come from (see the module docstring and `_log_decays`).
DECAYS = ("exact", "outer", "xla")


def decay_input(g, C, decays):
    """What the prep kernels read for the log-decays: g [BH, Tp] itself, or with decays="xla"
    [BH, 2, Tp]: each chunk's G (inclusive cumsum of g) and logF (the chunk's total minus G),
    made by XLA ops outside the kernels' custom_vjp, so JAX differentiates them."""
    if decays != "xla":
        return g
    BH, Tp = g.shape
    G = jnp.cumsum(g.reshape(BH, Tp // C, C), axis=-1)
    return jnp.stack([G.reshape(BH, Tp), (G[..., -1:] - G).reshape(BH, Tp)], axis=1)


def _g_shape(BH, Tp, decays):
    """The shape of `decay_input`'s array (and of its cotangent)."""
    return (BH, 2, Tp) if decays == "xla" else (BH, Tp)


def _g_spec(C, decays):
    """The BlockSpec of `decay_input`'s array (and of its cotangent) over grid (BH, chunks)."""
    if decays == "xla":
        return pl.BlockSpec((None, 2, C), lambda i, n: (i, 0, n))
    return pl.BlockSpec((None, C), lambda i, n: (i, n))


def _decays(g_ref, C, decays):
    """Gd [C, C] (sum of g over (j, i]; on and above the diagonal 0, or else G_i - G_j, which
    every caller masks), G [C], logF [C]; from the kernel's g_ref (`decay_input`)."""
    row = lax.broadcasted_iota(jnp.int32, (C, C), 0)
    col = lax.broadcasted_iota(jnp.int32, (C, C), 1)
    G, logF = _log_decays(g_ref, row, col, decays)
    if decays != "exact":
        return row, col, G[:, None] - G[None, :], G, logF
    # Gd[i, j] = sum_{l <= i} g_l [l > j]: a running sum down each column of its own terms
    Gd = jnp.cumsum(jnp.where(row > col, g_ref[...][:, None], 0.0), axis=0)
    return row, col, Gd, G, logF


def _log_decays(g_ref, row, col, decays):
    """G_i = sum_{l <= i} g_l and logF_i = sum_{l > i} g_l: "exact", as masked row sums;
    "outer", from one 1-D scan (G) and the chunk's total minus it (logF), as fla computes them;
    "xla", read (XLA summed them as "outer" does). With either of the last two, Gd = G_i - G_j
    cancels: an absolute exponent error of ulp(|G|) (1e-4 at G = -1280, g = -20 a token over
    64), a relative error of 1e-4 in a decay, far below the bf16 rounding of
    precision="default"'s dot operands (~4e-3), and no [C, C] scans or row sums."""
    if decays == "xla":
        return g_ref[0, :], g_ref[1, :]
    g = g_ref[...]
    if decays == "outer":
        G = jnp.cumsum(g)
        return G, jnp.sum(g) - G
    return (jnp.sum(jnp.where(col <= row, g[None, :], 0.0), axis=1),
            jnp.sum(jnp.where(col > row, g[None, :], 0.0), axis=1))


def _masked_decays(Gd, row, col):
    """exp(Gd) on the strict lower triangle (D) and with the diagonal (Dc), 0 elsewhere: one
    exp of a [C, C] tile, masked with -inf before it."""
    Dc = jnp.exp(jnp.where(row >= col, Gd, -jnp.inf))
    return jnp.where(row > col, Dc, 0.0), Dc


def _unit_lower_inverse(A, row, col, C, dot_inv):
    """(I + A)^-1 for A zero on and above the diagonal, by recursive 2x2 blocks as
    `reference.unit_lower_inverse` but on whole [C, C] tiles: with X the inverse of the diagonal
    blocks of size s (zero elsewhere) and L the lower-left s x s block of each 2s diagonal block
    of A, X <- X - X L X inverts the 2s blocks ([[X11, 0], [-X22 L21 X11, X22]]). log2(C) - 1
    levels of two tensor-core products each, the arithmetic of blocked forward substitution:
    the first level (s = 1, X = I) needs none, its result is I - L.
    L's mask is s <= (row ^ col) < 2s (same 2s block, different s halves); its upper-right half
    is A's zeros. One int tile (row ^ col) instead of two, and no divisions (Nsight Compute
    found the integer pipe the prep forward's busiest; the change did not move its time on an
    H200, 0.423 against 0.422 ms, eighth session)."""
    rc = jnp.bitwise_xor(row, col)
    X = jnp.where(rc == 0, 1.0, jnp.where(rc == 1, -A, 0.0))
    s = 2
    while s < C:
        L = jnp.where((rc >= s) & (rc < 2 * s), A, 0.0)
        X = X - dot_inv(dot_inv(X, L, _NN), X, _NN)
        s *= 2
    return X


def _tiles(n, body, carry):
    """carry = body(j, carry) for j < n, as an scf.for rather than a Python loop: unrolled,
    Triton kept more tiles live (pip triton 3.6, sm_90, K=96/V=192 at "highest": prep bwd
    98304 B shared vs 65536, prep fwd 4.4 KB of spill stores vs 2.2 KB)."""
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
        return acc[0] + dot(k, k, _NT), acc[1] + dot(q_ref[:, cols], k, _NT)

    zero = jnp.zeros((C, C), jnp.float32)
    return _tiles(k_ref.shape[1] // BK, tile, (zero, zero))


def _chunk_terms(q_ref, k_ref, g_ref, beta, *, C, BK, dot, dot_inv, decays):
    """What both kernels need before any K or V tile of an output: masks, decays, KK = k k^T
    and QK = q k^T (accumulated over K tiles), T = (I + A)^-1, E and F."""
    KK, QK = _kk_qk(q_ref, k_ref, C=C, BK=BK, dot=dot)
    row, col, Gd, G, logF = _decays(g_ref, C, decays)
    D, Dc = _masked_decays(Gd, row, col)
    T = _unit_lower_inverse(beta[:, None] * KK * D, row, col, C, dot_inv)
    return dict(row=row, col=col, D=D, Dc=Dc, KK=KK, QK=QK, T=T, E=jnp.exp(G),
                F=jnp.exp(logF))


def _prep_fwd_kernel(q_ref, k_ref, v_ref, g_ref, b_ref, w_ref, u_ref, kd_ref, qd_ref, aqk_ref,
                     *t_ref, C, BK, BV, dot, dot_inv, decays):
    """t_ref: optionally, where T = (I + A)^-1 goes, for the split backward."""
    beta = b_ref[...]
    KK, QK = _kk_qk(q_ref, k_ref, C=C, BK=BK, dot=dot)
    row, col, Gd, G, logF = _decays(g_ref, C, decays)
    # aqk (bf16 for precision="default": half the bytes for the state pass) before the
    # inverse, so that QK and its mask are not live through the inverse's chain of products
    D, Dc = _masked_decays(Gd, row, col)
    aqk_ref[...] = (QK * Dc).astype(aqk_ref.dtype)
    A = beta[:, None] * KK * D
    T = _unit_lower_inverse(A, row, col, C, dot_inv)
    if t_ref:
        t_ref[0][...] = T.astype(t_ref[0].dtype)
    _write_wu(q_ref, k_ref, v_ref, w_ref, u_ref, qd_ref, kd_ref, T, beta, jnp.exp(G),
              jnp.exp(logF), BK=BK, BV=BV, dot=dot)


def _write_wu(q_ref, k_ref, v_ref, w_ref, u_ref, qd_ref, kd_ref, T, beta, E, F, *, BK, BV, dot):
    """u = T (beta v) per V tile; w = T (beta E k), qd = q E, kd = k F per K tile."""
    out_dt = w_ref.dtype

    def u_tile(j, carry):
        cols = _cols(j, BV)
        u_ref[:, cols] = dot(T, beta[:, None] * v_ref[:, cols], _NN).astype(out_dt)
        return carry

    def k_tile(j, carry):
        cols = _cols(j, BK)
        k, q = k_ref[:, cols], q_ref[:, cols]
        w_ref[:, cols] = dot(T, (beta * E)[:, None] * k, _NN).astype(out_dt)
        qd_ref[:, cols] = (q * E[:, None]).astype(out_dt)
        kd_ref[:, cols] = (k * F[:, None]).astype(out_dt)
        return carry

    _tiles(v_ref.shape[1] // BV, u_tile, 0)
    _tiles(k_ref.shape[1] // BK, k_tile, 0)


def _inverse_grad(T, beta, bE, k_ref, v_ref, dw_ref, du_ref, dv_ref, *, C, BK, BV, dot,
                  dk_ref=None):
    """Backward through u = T (beta v), w = T (beta E k) and T = (I + A)^-1. Writes dv (and,
    given dk_ref, the w term of dk: (beta E) T^T dw). Returns dA (strict lower part), the
    cotangent of beta through u, and s_bek = sum_k (T^T dw) k, the cotangent of beta E."""
    f32 = jnp.float32

    # u = T bv: dT = du bv^T, dbv = T^T du (sums over V tiles)
    def v_tile(j, acc):
        dT, dbeta = acc
        cols = _cols(j, BV)
        v, du = v_ref[:, cols], du_ref[:, cols].astype(f32)
        dbv = dot(T, du, _TN)
        dv_ref[:, cols] = (beta[:, None] * dbv).astype(dv_ref.dtype)
        return dT + dot(du, beta[:, None] * v, _NT), dbeta + jnp.sum(dbv * v, axis=1)

    # w = T bek: dT += dw bek^T; s_bek = d(beta E) = sum_k (T^T dw) k (sums over K tiles)
    def k_reduce(j, acc):
        dT, s_bek = acc
        cols = _cols(j, BK)
        k, dw = k_ref[:, cols], dw_ref[:, cols].astype(f32)
        dbek = dot(T, dw, _TN)
        if dk_ref is not None:
            dk_ref[:, cols] = (bE[:, None] * dbek).astype(dk_ref.dtype)
        return dT + dot(dw, bE[:, None] * k, _NT), s_bek + jnp.sum(dbek * k, axis=1)

    zc, zv = jnp.zeros((C, C), f32), jnp.zeros((C,), f32)
    dT, dbeta = _tiles(v_ref.shape[1] // BV, v_tile, (zc, zv))
    dT, s_bek = _tiles(k_ref.shape[1] // BK, k_reduce, (dT, zv))
    row = lax.broadcasted_iota(jnp.int32, (C, C), 0)
    col = lax.broadcasted_iota(jnp.int32, (C, C), 1)
    # T = (I + A)^-1: dA = -T^T dT T^T, on the strict lower triangle
    dA = jnp.where(row > col, -dot(dot(T, dT, _TN), T, _NT), 0.0)
    return dA, dbeta, s_bek


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


def _store_dg(dg_ref, dg_decay, dG, dlogF, C, decays):
    """dg from its part through Gd (`_dg_decay`) and the cotangents of G_i, which sums g over
    [0, i], and logF_i, over (i, C); with decays="xla" those of G and logF themselves."""
    if decays == "xla":
        dg_ref[0, :] = dg_decay + dG
        dg_ref[1, :] = dlogF
        return
    row = lax.broadcasted_iota(jnp.int32, (C, C), 0)
    col = lax.broadcasted_iota(jnp.int32, (C, C), 1)
    dg_ref[...] = (dg_decay + jnp.sum(jnp.where(row >= col, dG[:, None], 0.0), axis=0)
                   + jnp.sum(jnp.where(row < col, dlogF[:, None], 0.0), axis=0))


def _prep_bwd_kernel(q_ref, k_ref, v_ref, g_ref, b_ref, dw_ref, du_ref, dkd_ref, dqd_ref,
                     daqk_ref, dq_ref, dk_ref, dv_ref, dg_ref, db_ref, *, C, BK, BV, dot,
                     dot_inv, decays):
    """Tiles of BK key / BV value columns. dA needs all of dT (a sum over V and K tiles), and
    dq, dk need dA: so K is walked twice, once to reduce, once to write dq, dk."""
    f32 = jnp.float32
    beta = b_ref[...]
    t = _chunk_terms(q_ref, k_ref, g_ref, beta, C=C, BK=BK, dot=dot, dot_inv=dot_inv,
                     decays=decays)
    T, E, F = t["T"], t["E"], t["F"]
    bE = beta * E
    dA, dbeta, s_bek = _inverse_grad(T, beta, bE, k_ref, v_ref, dw_ref, du_ref, dv_ref, C=C,
                                     BK=BK, BV=BV, dot=dot)
    dbeta += E * s_bek
    dKK_sym, dQK, dbeta_A, dlogD = _decay_grads(dA, daqk_ref[...].astype(f32), t["KK"],
                                                t["QK"], beta, t["D"], t["Dc"])
    dbeta += dbeta_A

    # Second walk over K: dq, dk per tile (T^T dw recomputed: one [C, C] x [C, BK] product
    # instead of a [C, Kp] tile held across dA), and qd = q E, kd = k F.
    def k_write(j, acc):
        dE_q, s_kd = acc
        cols = _cols(j, BK)
        k, q = k_ref[:, cols], q_ref[:, cols]
        dw, dqd, dkd = (r[:, cols].astype(f32) for r in (dw_ref, dqd_ref, dkd_ref))
        dk_ref[:, cols] = (bE[:, None] * dot(T, dw, _TN) + dot(dKK_sym, k, _NN)
                           + dot(dQK, q, _TN) + dkd * F[:, None])
        dq_ref[:, cols] = dot(dQK, k, _NN) + dqd * E[:, None]
        return dE_q + jnp.sum(dqd * q, axis=1), s_kd + jnp.sum(dkd * k, axis=1)

    zv = jnp.zeros((C,), f32)
    dE_q, s_kd = _tiles(k_ref.shape[1] // BK, k_write, (zv, zv))
    dG = E * (beta * s_bek + dE_q)
    _store_dg(dg_ref, _dg_decay(dlogD, t["row"], t["col"], decays), dG, F * s_kd, C, decays)
    db_ref[...] = dbeta


def _specs(C, Kp, Vp, decays):
    """Chunk blocks over grid (BH, chunks): [C, Kp], [C, Vp], [C, C], [C]; and the log-decays'
    (`_g_spec`)."""
    tile = lambda d: pl.BlockSpec((None, C, d), lambda i, n: (i, n, 0))
    vec = pl.BlockSpec((None, C), lambda i, n: (i, n))
    return tile(Kp), tile(Vp), tile(C), vec, _g_spec(C, decays)


def _prep_call(BH, Tp, C, compiler_params, interpret):
    """pl.pallas_call over (BH, chunks) with each kernel's own launch parameters (by name)."""
    def call(kernel, *, name, **kw):
        return pl.pallas_call(kernel, grid=(BH, Tp // C), interpret=interpret, name=name,
                              compiler_params=_params_for(compiler_params, name), **kw)
    return call


def _kernel_kw(C, Kp, Vp, block_d, dot, dot_inv, decays):
    if block_d < 16 or block_d & (block_d - 1):
        raise ValueError(f"block_d must be a power of two >= 16, got {block_d}")
    if decays not in DECAYS:
        raise ValueError(f"decays={decays!r}; expected one of {DECAYS}")
    return dict(C=C, BK=min(block_d, Kp), BV=min(block_d, Vp), dot=dot, dot_inv=dot_inv,
                decays=decays)


def prep_fwd(q, k, v, g, beta, *, C, block_d, dot, dot_inv, interpret, compiler_params,
             out_dtype, decays="exact", save_inverse=False, heads=None):
    """w, u, kd, qd, aqk; and T = (I + A)^-1 [BH, Tp, C] after them if save_inverse, in
    out_dtype like them: the backward uses T only as an operand of its dots, which round their
    operands to that dtype (bf16 at "default") anyway. g: `decay_input(g, C, decays)`.
    heads: q, k, v in the caller's layout (`caller_layout`); the outputs are [BH, Tp, *]."""
    BH, Tp, Kp, Vp = lay.dims(q, v, heads)
    tk, tv, tc, vec, gs = _specs(C, Kp, Vp, decays)
    xk, xv = lay.block_spec(C, Kp, heads), lay.block_spec(C, Vp, heads)
    sds = lambda d, dt=out_dtype: jax.ShapeDtypeStruct((BH, Tp, d), dt)
    extra = [sds(C)] if save_inverse else []
    return _prep_call(BH, Tp, C, compiler_params, interpret)(
        functools.partial(_prep_fwd_kernel,
                          **_kernel_kw(C, Kp, Vp, block_d, dot, dot_inv, decays)),
        in_specs=[xk, xk, xv, gs, vec],
        out_specs=[tk, tv, tk, tk, tc] + [tc] * len(extra),
        out_shape=[sds(Kp), sds(Vp), sds(Kp), sds(Kp), sds(C)] + extra,
        name="gdr_prep_fwd",
    )(q, k, v, g, beta)


def prep_bwd(q, k, v, g, beta, dw, du, dkd, dqd, daqk, *, C, block_d, dot, dot_inv, interpret,
             compiler_params, decays="exact"):
    """dq, dk, dv, dg, dbeta (fp32); dg shaped as g, `decay_input`'s array."""
    BH, Tp, Kp = q.shape
    Vp = v.shape[-1]
    tk, tv, tc, vec, gs = _specs(C, Kp, Vp, decays)
    f32 = jnp.float32
    sds = lambda d: jax.ShapeDtypeStruct((BH, Tp, d), f32)
    return _prep_call(BH, Tp, C, compiler_params, interpret)(
        functools.partial(_prep_bwd_kernel,
                          **_kernel_kw(C, Kp, Vp, block_d, dot, dot_inv, decays)),
        in_specs=[tk, tk, tv, gs, vec, tk, tv, tk, tk, tc],
        out_specs=[tk, tk, tv, gs, vec],
        out_shape=[sds(Kp), sds(Kp), sds(Vp), jax.ShapeDtypeStruct(_g_shape(BH, Tp, decays), f32),
                   jax.ShapeDtypeStruct((BH, Tp), f32)],
        name="gdr_prep_bwd",
    )(q, k, v, g, beta, dw, du, dkd, dqd, daqk)  # dq, dk, dv, dg, dbeta
