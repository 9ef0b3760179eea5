"""Pallas Mosaic GPU (TMA + wgmma) kernel of the chunk prep's forward.

Why this exists
    The chunk-local WY transform is parallel over chunks; in Triton (`prep_triton.prep_fwd`)
    its programs hold many [C, C] fp32 tiles and spill. Here the products are wgmmas from SMEM:
    0.315 ms against the Triton forward's 0.416 at B4 T4096 H16 K=V=128 on an H200
    (experiments/LOG.md). It runs wherever it takes the shape (`takes_shape`); its backward,
    from the T this kernel saves, is `prep_mosaic_bwd.prep_bwd` for bf16 q, k, v, else
    Triton's (`prep_triton.prep_bwd`).

What it computes: `prep_triton.prep_fwd` at precision "default" with decays="xla" (G and
logF summed by XLA, `chunk_math.decay_input`): per chunk of C = 64 rows,
    A = tril_strict(beta_i (k_i.k_j) exp(G_i - G_j)),   T = (I + A)^-1,
    u = T (beta v),  w = T (beta E k),  aqk = (q k^T) tril(exp(G_i - G_j)),  qd = q E,  kd = k F
with E = exp(G), F = exp(logF) and q scaled inside by `scale` (aqk and qd take the factor,
so XLA need not write a scaled copy of q); the same bf16 roundings as the Triton kernel's
"default" dots (q, k, v, beta v, beta E k and T as bf16 wgmma operands, fp32 accumulation),
T's recursion at TF32 (fp32 operands), exponents masked with -inf before exp. q, k, v are read
in bf16 (fp32 callers' are rounded first; the Triton prep would scale fp32 q, k before
rounding qd, kd).

One program (one warpgroup, 128 threads) per (batch x value head i, chunk n):
  1. TMA loads q, k [C, Kp], v [C, Vp] (bf16) and G, logF, beta [C] (fp32); v on its own
     barrier, waited for only before step 6.
  2. wgmma KK = k k^T and QK = q k^T (k's transposed SMEM view as B).
  3. Gd = G_i - G_j. A [C] vector broadcast along the columns of a wgmma-layout tile lowers,
     along its rows it does not (jax 0.11.2: layout inference finds no solution); so R_ij = G_i
     is stored to SMEM and read back through the transposed view (R^T_ij = G_j).
  4. A and aqk in registers; aqk (bf16) TMA-stored.
  5. T by `chunk_math.unit_lower_inverse`'s recursion, X <- X - (X L) X, as TF32 wgmmas
     on fp32 SMEM operands: 32-bit wgmma takes its B operand only K-major, so L enters as
     L^T (a mask of A^T, read once through a transposed view: the masks are symmetric in
     row ^ col) and X as X^T (stored, read back transposed, stored again).
  6. T rounded to bf16 in SMEM (TMA-stored for the backward), then u = T (beta v) and
     w = T (beta E k) with beta v, beta E k staged in place of v and k, and qd, kd staged in
     q's tile: each output is TMA-stored from the tile it replaced.
Shared memory: q, k, v tiles, two fp32 [C, C] and one bf16 [C, C] tile: the lowered kernel's
`dynamic_shared_memory_size` (MOSAIC_GPU_DUMP_MLIR_PASSES=1) is 93,192 bytes at Kp = Vp = 128,
101,384 at Kp = 128, Vp = 192 (the 7B layer), 85,000 at Kp = 64, Vp = 192: two programs an SM
fit in shared memory (228 KB on Hopper), and in registers (ptxas: 220 a thread at Kp = Vp = 128
on an H100, 28,160 a program of the SM's 65,536), but not three.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from kernels.gated_delta_rule.gpu import layout as lay
from kernels.gated_delta_rule.gpu.mosaic_common import (BF16_TR, C_SUPPORTED, F32_TR,
                                                        KP_SUPPORTED, finish_stores,
                                                        wgmma_products)

VP_MAX = 256  # u's accumulator is [C, Vp]: the N of a wgmma is at most 256


def takes_shape(C: int, Kp: int, Vp: int) -> bool:
    """Whether `prep_fwd` takes chunk size C, key dim Kp and (prep-padded) value dim Vp."""
    return C == C_SUPPORTED and Kp in KP_SUPPORTED and Vp % 64 == 0 and Vp <= VP_MAX


def _kernel(q_g, k_g, v_g, gs_g, b_g, w_g, u_g, kd_g, qd_g, aqk_g, *refs, C, save_inverse,
            heads, scale):
    t_g, refs = (refs[0], refs[1:]) if save_inverse else (None, refs)
    q_s, k_s, v_s, g_s, lf_s, b_s, x_s, l_s, c_s, bar_qk, bar_v = refs
    i, n = lax.axis_index("i"), lax.axis_index("n")
    rows = pl.ds(n * C, C)
    f32, WG = jnp.float32, plgpu.Layout.WGMMA

    chunk = lambda ref, tile_s: lay.tile(ref, i, rows, heads, tile_s.shape[1])
    # v is first read after T: its own barrier lets the products start before it arrives
    for src, dst, bar in ((chunk(k_g, k_s), k_s, bar_qk), (chunk(q_g, q_s), q_s, bar_qk),
                          (gs_g.at[i, 0, rows], g_s, bar_qk), (gs_g.at[i, 1, rows], lf_s, bar_qk),
                          (b_g.at[i, rows], b_s, bar_qk), (chunk(v_g, v_s), v_s, bar_v)):
        plgpu.copy_gmem_to_smem(src, dst, bar)
    plgpu.barrier_wait(bar_qk)

    def vec(ref):  # a [C] vector of SMEM in registers, one value per accumulator row
        return plgpu.load(ref, layout=WG.reduce(1))

    def per_row(x, width):  # [C] -> [C, width], X_ij = x_i
        return lax.broadcast_in_dim(x, (C, width), [0])

    def mm(lhs, rhs, shape):  # lhs @ rhs (SMEM refs) into a fresh fp32 accumulator, waited for
        return wgmma_products(((lhs, rhs),), (shape,))[0]

    def store(tile_s, x, dst_g):  # x -> SMEM tile (bf16) -> GMEM by TMA (dst_g None: SMEM only)
        tile_s[...] = x.astype(tile_s.dtype)
        plgpu.commit_smem()
        if dst_g is not None:
            plgpu.copy_smem_to_gmem(tile_s, dst_g)
            plgpu.commit_smem_to_gmem_group()

    def transposed(x):  # x^T in registers, through x_s
        plgpu.commit_smem()  # every earlier read of x_s is done
        x_s[...] = x
        plgpu.commit_smem()
        return plgpu.load(x_s.T, layout=WG)

    KK, QK = mm(k_s, k_s.T, (C, C)), mm(q_s, k_s.T, (C, C))
    row = plgpu.broadcasted_iota(jnp.int32, (C, C), 0, layout=WG)
    col = plgpu.broadcasted_iota(jnp.int32, (C, C), 1, layout=WG)
    G, beta = vec(g_s), vec(b_s)
    E, F = jnp.exp(G), jnp.exp(vec(lf_s))
    G_i = per_row(G, C)
    Dc = jnp.exp(jnp.where(row >= col, G_i - transposed(G_i), -jnp.inf))
    A = per_row(beta, C) * KK * jnp.where(row > col, Dc, 0.0)
    store(c_s, scale * QK * Dc, aqk_g.at[i, rows])  # q's scale is applied here and to qd

    # T = (I + A)^-1: X inverts the diagonal blocks of size s; the first level needs no product
    rc = jnp.bitwise_xor(row, col)
    A_T = transposed(A)
    X = jnp.where(rc == 0, 1.0, jnp.where(rc == 1, -A, 0.0))
    s = 2
    while s < C:
        plgpu.commit_smem()
        x_s[...] = X
        l_s[...] = jnp.where((rc >= s) & (rc < 2 * s), A_T, 0.0)  # L^T
        plgpu.commit_smem()
        Y = mm(x_s, l_s.T, (C, C))                                  # X L
        X_T = plgpu.load(x_s.T, layout=WG)
        plgpu.commit_smem()
        x_s[...] = Y
        l_s[...] = X_T
        plgpu.commit_smem()
        X = X - mm(x_s, l_s.T, (C, C))                              # (X L) X
        s *= 2

    plgpu.wait_smem_to_gmem(0, wait_read_only=True)  # aqk has left c_s
    store(c_s, X, t_g.at[i, rows] if save_inverse else None)  # bf16(T): the A of u and w

    def times_t(tile_s, scale, out_g):  # out = T (scale * tile), staged in place of tile
        x = plgpu.load(tile_s, layout=WG).astype(f32)
        plgpu.commit_smem()
        store(tile_s, per_row(scale, x.shape[1]) * x, None)
        store(tile_s, mm(c_s, tile_s, tile_s.shape), out_g)
        return x

    plgpu.barrier_wait(bar_v)
    times_t(v_s, beta, u_g.at[i, rows])
    k = times_t(k_s, beta * E, w_g.at[i, rows])
    q = plgpu.load(q_s, layout=WG).astype(f32)
    plgpu.commit_smem()
    store(q_s, per_row(scale * E, q.shape[1]) * q, qd_g.at[i, rows])
    plgpu.wait_smem_to_gmem(0, wait_read_only=True)  # qd has left q_s
    store(q_s, per_row(F, k.shape[1]) * k, kd_g.at[i, rows])
    finish_stores()


def prep_fwd(q, k, v, gs, beta, *, C, save_inverse=False, scale=1.0, interpret=None,
             heads=None):
    """w, u, kd, qd, aqk (and T = (I + A)^-1 if save_inverse), bf16, in the layouts of
    `prep_triton.prep_fwd`, from q, k [BH, Tp, Kp], v [BH, Tp, Vp] (or with heads the caller's
    [B, Tp, heads * Kp] and [B, Tp, heads * Vp]: `layout.py`), gs [BH, 2, Tp] (G and logF,
    `chunk_math.decay_input(..., "xla")`), beta [BH, Tp]. `interpret`: None to compile
    for the GPU, or a `plgpu.InterpretGPUParams()` for the Mosaic GPU interpreter. scale: q's
    factor (a Python number), applied inside: aqk and qd take it, q is read unscaled."""
    BH, Tp, Kp, Vp = lay.dims(q, v, heads)
    if not takes_shape(C, Kp, Vp) or Tp % C:
        raise ValueError(f"the Mosaic prep needs C = {C_SUPPORTED}, Kp in {KP_SUPPORTED}, "
                         f"Vp a multiple of 64 up to {VP_MAX} and Tp a multiple of C; got "
                         f"C={C}, Kp={Kp}, Vp={Vp}, Tp={Tp}")
    if gs.shape != (BH, 2, Tp) or beta.shape != (BH, Tp):
        raise ValueError(f"gs must be [BH, 2, Tp] = {(BH, 2, Tp)} (G, logF) and beta "
                         f"[BH, Tp]; got {gs.shape} and {beta.shape}")
    bf16, f32 = jnp.bfloat16, jnp.float32
    q, k, v = (x.astype(bf16) for x in (q, k, v))
    sds = lambda d: jax.ShapeDtypeStruct((BH, Tp, d), bf16)
    scratch = [
        plgpu.SMEM((C, Kp), bf16, transforms=BF16_TR),  # q, then qd, then kd
        plgpu.SMEM((C, Kp), bf16, transforms=BF16_TR),  # k, then beta E k, then w
        plgpu.SMEM((C, Vp), bf16, transforms=BF16_TR),  # v, then beta v, then u
        plgpu.SMEM((C,), f32),                          # G
        plgpu.SMEM((C,), f32),                          # logF
        plgpu.SMEM((C,), f32),                          # beta
        plgpu.SMEM((C, C), f32, transforms=F32_TR),     # X (and transposes)
        plgpu.SMEM((C, C), f32, transforms=F32_TR),     # L^T, X^T
        plgpu.SMEM((C, C), bf16, transforms=BF16_TR),   # aqk, then bf16(T)
        plgpu.Barrier(num_arrivals=5),                  # q, k, G, logF, beta
        plgpu.Barrier(num_arrivals=1),                  # v
    ]

    def gdr_prep_fwd_mgpu(*refs):
        _kernel(*refs, C=C, save_inverse=save_inverse, heads=heads, scale=float(scale))

    return plgpu.kernel(
        gdr_prep_fwd_mgpu,
        out_type=(sds(Kp), sds(Vp), sds(Kp), sds(Kp), sds(C)) + (sds(C),) * save_inverse,
        grid=(BH, Tp // C), grid_names=("i", "n"), scratch_types=scratch,
        interpret=interpret,
    )(q, k, v, gs.astype(f32), beta.astype(f32))
