"""Pallas Mosaic GPU (TMA + wgmma) kernel of the chunk prep's backward: the three Triton kernels
of `prep_triton.prep_bwd` (inverse, decay, qk) as one program per chunk.

Why this exists
    The Triton prep backward was the largest block of the backward: three launches that pass
    dA, d(k k^T), d(q k^T) and the w term of dk through HBM, 0.795 ms of 1.833 for forward +
    backward at B4 T4096 H16 K=V=128 on an H100 (experiments/LOG.md). Here every [C, C]
    intermediate stays in registers or shared memory, and the products are wgmmas. Where the
    state kernels are Mosaic GPU too and V <= 192, `grad_mosaic.chunk_grads` runs this
    kernel's math (`prep_grads`) fused with dqk; this kernel runs where that one does not take
    the shape (after the Triton dqk: V = 256).

What it computes: `prep_triton.prep_bwd` at precision "default" with decays="xla" (the
forward's saved T = (I + A)^-1 and the cotangents dw, du, dkd, dqd, daqk of w, u, kd, qd,
aqk), per chunk of C = 64 rows, with E = exp(G), F = exp(logF), bE = beta E:
    dbv = T^T du,  dv = beta dbv                           (u = T (beta v))
    dT = du (beta v)^T + dw (bE k)^T                        (and w = T (bE k))
    dA = -T^T dT T^T on the strict lower triangle           (T = (I + A)^-1)
    dQK = daqk Dc,  dAD = dA D,  d(k k^T) = beta dAD + (beta dAD)^T
    dq = dQK k + E dqd,  dk = bE T^T dw + d(k k^T) k + dQK^T q + F dkd
    dbeta = rowsum(dbv v) + E rowsum((T^T dw) k) + rowsum(dAD KK)
    dG = rowsum(dlogD) - colsum(dlogD) + E (beta rowsum((T^T dw) k) + rowsum(dqd q)),
    dlogF = F rowsum(dkd k),  dlogD = dQK QK + beta dAD KK
where D, Dc are exp(G_i - G_j) masked strictly below and on and below the diagonal; with
q's scale s applied inside (`scale`), q above is s q: dQK takes s, and so do E dqd in dq and
rowsum(dqd q) in dG, so that dq is the cotangent of the unscaled q. The same
bf16 roundings as the Triton kernels' "default" dots: T, du, dw, q, k, beta v, bE k, dT,
T^T dT, d(k k^T) and dQK are bf16 wgmma operands; accumulation fp32.

One program of two warpgroups per (batch x value head i, chunk n). The chain warpgroup
issues the TMA loads of the chunk (q, k, dw, dkd, dqd [C, Kp], v, du [C, Vp], T, daqk [C, C]
bf16; G, logF, beta [C] fp32; one barrier); then the two split the math as
`prep_grads_mosaic` describes: the tiles warpgroup takes dbv, dv, T^T dw, the row sums, dq
and dk; the chain warpgroup dT, dA = -(T^T dT) T^T, the decays and d(k k^T). T's transposed
SMEM view is the A of T^T products; G_j comes through a transpose in SMEM, as in the
forward; every wgmma operand is in SMEM (the Mosaic GPU interpreter takes no register
operand). dv leaves from du's tile, dq from a staging tile, dk from dkd's, and dG, dlogF,
dbeta from the tiles G, logF and beta came in.
Shared memory: six [C, Kp] and two [C, Vp] bf16 tiles, three [C, C] bf16 and one [C, C] fp32;
the lowered kernel's `dynamic_shared_memory_size` is 177,184 bytes at Kp = Vp = 128, 193,568
at Kp = 128, Vp = 192, 209,952 at Kp = 128, Vp = 256 and 144,416 at Kp = 64, Vp = 192: one
program an SM (232,448 bytes on Hopper).
q, k, v, dq, dk and dv may be in the caller's layout (`layout.py`); dq, dk, dv are bf16, so
the plan runs this kernel for bf16 q, k, v (the Triton kernels write fp32 callers' fp32).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from kernels.gated_delta_rule.gpu import layout as lay
from kernels.gated_delta_rule.gpu import prep_grads_mosaic as pg
from kernels.gated_delta_rule.gpu.mosaic_common import (BF16_TR, C_SUPPORTED, F32_TR,
                                                        KP_SUPPORTED, expect_shapes)
from kernels.gated_delta_rule.gpu.prep_mosaic import VP_MAX, takes_shape

__all__ = ["prep_bwd", "takes_shape"]


def _kernel(q_g, k_g, v_g, gs_g, b_g, t_g, dw_g, du_g, dkd_g, dqd_g, daqk_g,
            dq_g, dk_g, dv_g, dg_g, db_g,
            q_s, k_s, v_s, g_s, lf_s, b_s, t_s, dw_s, du_s, dkd_s, dqd_s, daqk_s, ck_s, cc_s,
            x_s, bar, bv, dt, dqk, done, *, C, heads, scale):
    i, n = lax.axis_index("i"), lax.axis_index("n")
    wg = lax.axis_index("wg")
    rows = pl.ds(n * C, C)
    Kp, Vp = q_s.shape[1], v_s.shape[1]
    chunk = lambda ref, d: lay.tile(ref, i, rows, heads, d)  # noqa: E731
    s = pg.Tiles(q=q_s, k=k_s, v=v_s, t=t_s, dw=dw_s, du=du_s, dkd=dkd_s, dqd=dqd_s,
                 dqk=daqk_s, ck=ck_s, cc=cc_s, x=x_s, g=g_s, lf=lf_s, b=b_s)
    h = pg.Handovers(bv=bv, dt=dt, dqk=dqk, done=done)

    @pl.when(wg == pg.CHAIN)
    def _():
        for src, dst in ((chunk(q_g, Kp), q_s), (chunk(k_g, Kp), k_s), (chunk(v_g, Vp), v_s),
                         (gs_g.at[i, 0, rows], g_s), (gs_g.at[i, 1, rows], lf_s),
                         (b_g.at[i, rows], b_s), (t_g.at[i, rows], t_s),
                         (dw_g.at[i, rows], dw_s), (du_g.at[i, rows], du_s),
                         (dkd_g.at[i, rows], dkd_s), (dqd_g.at[i, rows], dqd_s),
                         (daqk_g.at[i, rows], daqk_s)):
            plgpu.copy_gmem_to_smem(src, dst, bar)
        plgpu.barrier_wait(bar)
        pg.chain(plgpu.load(daqk_s, layout=plgpu.Layout.WGMMA), s, h, scale=scale)

    @pl.when(wg == pg.TILES)
    def _():
        plgpu.barrier_wait(bar)
        pg.tiles(s, h, scale=scale,
                 out=(chunk(dq_g, Kp), chunk(dk_g, Kp), chunk(dv_g, Vp), dg_g.at[i, 0, rows],
                      dg_g.at[i, 1, rows], db_g.at[i, rows]))


def prep_bwd(q, k, v, gs, beta, T, dw, du, dkd, dqd, daqk, *, C, scale=1.0, heads=None,
             interpret=None):
    """dq, dk [BH, Tp, Kp], dv [BH, Tp, Vp] (bf16; with heads, in the caller's layout
    [B, Tp, heads * d] as q, k, v are: `layout.py`), dg [BH, 2, Tp] (the cotangents of G and
    logF, `chunk_math.decay_input(..., "xla")`) and dbeta [BH, Tp] (fp32), from the
    forward's operands (q, k, v bf16, gs [BH, 2, Tp], beta [BH, Tp]), its saved T [BH, Tp, C]
    and the cotangents dw, dkd, dqd [BH, Tp, Kp], du [BH, Tp, Vp], daqk [BH, Tp, C]: what
    `prep_triton.prep_bwd` returns with decays="xla" at "default". Operands are cast to bf16
    (gs, beta to fp32) in XLA. scale: q's factor as `prep_mosaic.prep_fwd` applied it inside
    (q is the unscaled q; dq is its cotangent). `interpret`: None to compile for the GPU, or a
    `plgpu.InterpretGPUParams()` for the Mosaic GPU interpreter."""
    BH, Tp, Kp, Vp = lay.dims(q, v, heads)
    if not takes_shape(C, Kp, Vp) or Tp % C:
        raise ValueError(f"the Mosaic prep backward needs C = {C_SUPPORTED}, Kp in "
                         f"{KP_SUPPORTED}, Vp a multiple of 64 up to {VP_MAX} and Tp a "
                         f"multiple of C; got C={C}, Kp={Kp}, Vp={Vp}, Tp={Tp}")
    if q.dtype != jnp.bfloat16:
        raise ValueError(f"the Mosaic prep backward writes dq, dk, dv in bf16, so it takes "
                         f"bf16 q, k, v; got {q.dtype}")
    want = dict(gs=(BH, 2, Tp), beta=(BH, Tp), T=(BH, Tp, C), dw=(BH, Tp, Kp), du=(BH, Tp, Vp),
                dkd=(BH, Tp, Kp), dqd=(BH, Tp, Kp), daqk=(BH, Tp, C))
    expect_shapes(want, gs=gs, beta=beta, T=T, dw=dw, du=du, dkd=dkd, dqd=dqd, daqk=daqk)
    bf16, f32 = jnp.bfloat16, jnp.float32
    ins = [x.astype(bf16) for x in (q, k, v)] + [gs.astype(f32), beta.astype(f32)]
    ins += [x.astype(bf16) for x in (T, dw, du, dkd, dqd, daqk)]
    ck, cv, cc = ((C, d) for d in (Kp, Vp, C))
    scratch = [
        plgpu.SMEM(ck, bf16, transforms=BF16_TR),   # q
        plgpu.SMEM(ck, bf16, transforms=BF16_TR),   # k
        plgpu.SMEM(cv, bf16, transforms=BF16_TR),   # v, then beta v
        plgpu.SMEM((C,), f32),                      # G, then dG
        plgpu.SMEM((C,), f32),                      # logF, then dlogF
        plgpu.SMEM((C,), f32),                      # beta, then dbeta
        plgpu.SMEM(cc, bf16, transforms=BF16_TR),   # T
        plgpu.SMEM(ck, bf16, transforms=BF16_TR),   # dw
        plgpu.SMEM(cv, bf16, transforms=BF16_TR),   # du, then dv
        plgpu.SMEM(ck, bf16, transforms=BF16_TR),   # dkd, then dk
        plgpu.SMEM(ck, bf16, transforms=BF16_TR),   # dqd
        plgpu.SMEM(cc, bf16, transforms=BF16_TR),   # daqk, then dQK
        plgpu.SMEM(ck, bf16, transforms=BF16_TR),   # bE k, then dq
        plgpu.SMEM(cc, bf16, transforms=BF16_TR),   # dT, then T^T dT, then d(k k^T)
        plgpu.SMEM(cc, f32, transforms=F32_TR),     # transposes
        plgpu.Barrier(num_arrivals=12),
        *pg.Handovers.scratch(),
    ]

    def gdr_prep_bwd_mgpu(*refs):
        _kernel(*refs, C=C, heads=heads, scale=float(scale))

    grad = lambda d: jax.ShapeDtypeStruct(lay.shape(BH, Tp, d, heads), bf16)  # noqa: E731
    return plgpu.kernel(
        gdr_prep_bwd_mgpu,
        out_type=(grad(Kp), grad(Kp), grad(Vp), jax.ShapeDtypeStruct((BH, 2, Tp), f32),
                  jax.ShapeDtypeStruct((BH, Tp), f32)),
        grid=(BH, Tp // C), grid_names=("i", "n"), scratch_types=scratch,
        num_threads=pg.WARPGROUPS, thread_name="wg", interpret=interpret,
    )(*ins)
