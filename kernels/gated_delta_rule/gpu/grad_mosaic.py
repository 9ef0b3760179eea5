"""Pallas Mosaic GPU (TMA + wgmma) kernel of the backward's per-chunk gradients: the cotangents
of the state pass's chunk operands (w, kd, qd, aqk, gc) and, through the prep, those of q, k,
v, the decays and beta, in one program per (batch x value head, chunk).

Why this exists
    Both halves are one program per chunk. Written as two kernels, the first wrote dw, dkd,
    dqd [C, Kp] and daqk [C, C] and the second read them back, and both read du: 537 MB of
    the 3,053 MB the five kernels moved at B4 T4096 H16 K=V=128. Here those tiles pass
    through shared memory. Forward+backward with it took 0.885-0.935x the time it took with
    the two kernels at the three K=V=128 benchmark shapes on an H100, and 0.992x at the 7B
    layer on an H200 (experiments/LOG.md).

What it computes, per chunk n of C = 64 rows, from the forward's chunk-entry state S_n, dh's
dS_n = dL/dS_{n+1} [Kp, V] and dd_n (= du) [C, V], the forward's delta_n and dO_n [C, V]:
  phase 1 (the state pass's chunk operands)
    dw  = -dd S^T,  dqd = dO S^T,  dkd = delta dS^T   ([C, Kp], rounded to bf16)
    daqk = dO delta^T                                 ([C, C], rounded to bf16)
    dgc = rowsum(dS * S)                              ([Kp], fp32, over V tiles of 64)
  phase 2 (the prep: u = T (beta v), w = T (bE k), T = (I + A)^-1, A = beta (k k^T) D,
  kd = F k, qd = E s q, aqk = s (q k^T) Dc; E = exp(G), F = exp(logF), bE = beta E, s q's
  scale, D and Dc exp(G_i - G_j) masked strictly below and on and below the diagonal)
    dbv = T^T du,  dv = beta dbv
    dT = du (beta v)^T + dw (bE k)^T,  dA = -T^T dT T^T on the strict lower triangle
    dQK = s daqk Dc,  dAD = dA D,  d(k k^T) = beta dAD + (beta dAD)^T
    dq = dQK k + s E dqd,  dk = bE T^T dw + d(k k^T) k + dQK^T (s q) + F dkd
    dbeta = rowsum(dbv v) + E rowsum((T^T dw) k) + rowsum(dAD KK)
    dG = rowsum(dlogD) - colsum(dlogD) + E (beta rowsum((T^T dw) k) + s rowsum(dqd q)),
    dlogF = F rowsum(dkd k),  dlogD = dQK QK + beta dAD KK
dq is the cotangent of the unscaled q (s is applied inside: `scale`).

Two warpgroups (`prep_grads_mosaic`). CHAIN issues the loads, computes dw, dqd and daqk in
phase 1 and the [C, C] chain in phase 2; TILES computes dkd and dgc in phase 1 and the [C, Kp]
and [C, V] tiles in phase 2. A barrier both arrive at ends phase 1.

Shared memory. The tiles each phase reads alone share one region (a `plgpu.RefUnion` of the
two phases' tiles):
    both phases   dw, dkd, dqd [C, Kp], du [C, V] (bf16); G, logF, beta [C] and dgc [Kp]
                  (fp32); daqk [C, C] passes in registers (bf16)
    phase 1 only  S, dS [Kp, V], delta, dO [C, V]
    phase 2 only  q, k and a staging tile [C, Kp], v [C, V], T, dQK and a staging tile
                  [C, C] (bf16), one [C, C] fp32 (transposes)
At V <= 128 (`EARLY_V_MAX`) q, k, v and T sit outside the shared region and load with phase
1's tiles, so their latency hides behind phase 1 (without that, the kernel took 1.055-1.069x
the two kernels' time at the K=V=128 shapes on an H200). At V = 192 they would not fit; they
load once phase 1 is done. The lowered kernel asks for 227,384 bytes of dynamic shared memory
at Kp = 128 and V = 128 or 192 (Hopper: 232,448 a block): one program an SM.

The ladder's heads (Kp 64, V 96). The state passes run V = 96 unpadded there, so the states,
dstates, delta, dd and dO are 96 wide while v keeps the prep's padded width 128: the kernel
reads v's first 96 columns and writes dv's (the padding's cotangent is dropped by the pad's
transpose). Every bf16 operand then takes the 64-byte swizzle (`mosaic_common.bf16_transforms`).

Numerics
    bf16 wgmma operands (S, dS, delta, dO, dd, T, q, k, beta v, bE k, dT, T^T dT, d(k k^T),
    dQK), fp32 accumulation and vector sums; T's and the decays' products as the two kernels it
    replaced: bitwise their outputs (tests/kernels/gated_delta_rule/gpu/test_grad_mosaic.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from kernels.gated_delta_rule.gpu import layout as lay
from kernels.gated_delta_rule.gpu import prep_grads_mosaic as pg
from kernels.gated_delta_rule.gpu.mosaic_common import (BV, C_SUPPORTED, F32_TR,
                                                        KP_SUPPORTED, bf16_transforms,
                                                        expect_shapes, meet, store_tile,
                                                        wgmma_products)

__all__ = ["chunk_grads", "takes_shape"]

V_MAX = 192  # phase 1 holds S, dS [Kp, V] and delta, dO [C, V] of the whole V


def takes_shape(C: int, Kp: int, V: int) -> bool:
    """Whether `chunk_grads` takes chunk size C, padded key dim Kp and value dim V."""
    return C == C_SUPPORTED and Kp in KP_SUPPORTED and V % BV == 0 and V <= V_MAX


# Phase 2's inputs q, k, v and T load with phase 1's where shared memory holds both: their
# latency then hides behind phase 1. 227,384 bytes at Kp = V = 128; V = 192 would need 262,144.
EARLY_V_MAX = 128


def _kernel(q_g, k_g, v_g, gs_g, b_g, t_g, st_g, dst_g, delta_g, dd_g, do_g,
            dq_g, dk_g, dv_g, dg_g, db_g, dgc_g,
            dw_s, dkd_s, dqd_s, du_s, g_s, lf_s, b_s, dgc_s, bar_s, bar_ds, bar2, phase1_done,
            bv, dt, dqk, done, union, *early_s, C, Kp, V, Vs, heads, scale):
    """Two warpgroups (`prep_grads_mosaic`): CHAIN issues the loads and takes dw, dqd, daqk
    in phase 1 and the [C, C] chain in phase 2; TILES takes dkd and dgc, then the [C, Kp] and
    [C, V] tiles. union: phase 1's S, dS, delta, dO, and phase 2's staging tiles (with q, k,
    v, T unless early_s holds them), which reuse the same SMEM. Loads are issued in the order
    they are used, each group on its own barrier: bar_s (S, du, dO and the vectors: dw, dqd),
    bar_ds (dS, delta: dkd, daqk, dgc), bar2 (phase 2's q, k, v, T)."""
    i, n = lax.axis_index("i"), lax.axis_index("n")
    wg = lax.axis_index("wg")
    rows, srows = pl.ds(n * C, C), pl.ds(n * Kp, Kp)
    f32, bf16, WG = jnp.float32, jnp.bfloat16, plgpu.Layout.WGMMA
    chunk = lambda ref, d: lay.tile(ref, i, rows, heads, d)  # noqa: E731
    (st_s, dst_s, delta_s, do_s), staged = union
    q_s, k_s, v_s, t_s = early_s or staged[4:]
    dqk_s, ck_s, cc_s, x_s = staged[:4]
    phase2_loads = tuple(zip((chunk(q_g, Kp), chunk(k_g, Kp),
                              lay.tile(v_g, i, rows, heads, V, 0, Vs), t_g.at[i, rows]),
                             (q_s, k_s, v_s, t_s)))
    tiles = pg.Tiles(q=q_s, k=k_s, v=v_s, t=t_s, dw=dw_s, du=du_s, dkd=dkd_s, dqd=dqd_s,
                     dqk=dqk_s, ck=ck_s, cc=cc_s, x=x_s, g=g_s, lf=lf_s, b=b_s)
    h = pg.Handovers(bv=bv, dt=dt, dqk=dqk, done=done)

    @pl.when(wg == pg.CHAIN)
    def _():
        loads = ((st_g.at[i, srows], st_s, bar_s), (dd_g.at[i, rows], du_s, bar_s),
                 (chunk(do_g, Vs), do_s, bar_s), (gs_g.at[i, 0, rows], g_s, bar_s),
                 (gs_g.at[i, 1, rows], lf_s, bar_s), (b_g.at[i, rows], b_s, bar_s),
                 (dst_g.at[i, srows], dst_s, bar_ds), (delta_g.at[i, rows], delta_s, bar_ds))
        for src, dst, bar in loads + tuple((src, dst, bar2) for src, dst in phase2_loads
                                           if early_s):
            plgpu.copy_gmem_to_smem(src, dst, bar)
        plgpu.barrier_wait(bar_s)
        dw, dqd = wgmma_products(((du_s, st_s.T), (do_s, st_s.T)), ((C, Kp), (C, Kp)))
        store_tile(dw_s, -dw)
        store_tile(dqd_s, dqd)
        plgpu.barrier_wait(bar_ds)
        (daqk,) = wgmma_products(((do_s, delta_s.T),), ((C, C),))
        daqk = daqk.astype(bf16)  # in registers: shared memory is full at V = 192
        meet(phase1_done)  # phase 2's tiles overwrite phase 1's: both warpgroups are done
        if not early_s:
            for src, dst in phase2_loads:
                plgpu.copy_gmem_to_smem(src, dst, bar2)
        plgpu.barrier_wait(bar2)
        pg.chain(daqk, tiles, h, scale=scale)

    @pl.when(wg == pg.TILES)
    def _():
        plgpu.barrier_wait(bar_ds)
        (dkd,) = wgmma_products(((delta_s, dst_s.T),), ((C, Kp),))
        store_tile(dkd_s, dkd)
        plgpu.barrier_wait(bar_s)
        dgc = jnp.zeros((Kp,), f32)
        step = BV if Vs % BV == 0 else Vs // 3  # V = 96: three tiles of 32
        for j in range(Vs // step):  # [Kp, step] tiles: the whole [Kp, V] pair would not fit
            cols = pl.ds(j * step, step)
            S, dS = (plgpu.load(r.at[:, cols], layout=WG).astype(f32) for r in (st_s, dst_s))
            dgc = dgc + jnp.sum(dS * S, axis=1)
        store_tile(dgc_s, dgc, dgc_g.at[i, n])
        meet(phase1_done)
        plgpu.barrier_wait(bar2)
        pg.tiles(tiles, h, scale=scale,
                 out=(chunk(dq_g, Kp), chunk(dk_g, Kp), lay.tile(dv_g, i, rows, heads, V, 0, Vs),
                      dg_g.at[i, 0, rows],
                      dg_g.at[i, 1, rows], db_g.at[i, rows]))


def _phase2_inputs(C, Kp, V, tr):
    """SMEM for q, k [C, Kp], v [C, V] and T [C, C] (bf16)."""
    return [plgpu.SMEM(shape, jnp.bfloat16, transforms=tr)
            for shape in ((C, Kp), (C, Kp), (C, V), (C, C))]


def chunk_grads(q, k, v, gs, beta, T, states, dstates, delta, dd, do, *, C, scale=1.0,
                heads=None, interpret=None):
    """(dq, dk [BH, Tp, Kp], dv [BH, Tp, V] bf16; dg [BH, 2, Tp], dbeta [BH, Tp], dgc
    [BH, N, Kp] fp32): the cotangents of q, k, v, of `chunk_math.decay_input(..., "xla")`'s
    G and logF, of beta and of gc, from
      the forward's operands q, k [BH, Tp, Kp], v [BH, Tp, V] (bf16), gs [BH, 2, Tp] (G, logF)
      and beta [BH, Tp], its saved T [BH, Tp, C], chunk-entry states [BH, N*Kp, V] and delta
      [BH, Tp, V]; dh's dstates [BH, N*Kp, V] and dd [BH, Tp, V]; dO [BH, Tp, V].
    With heads, q, k, v, dO, dq, dk and dv are in the caller's layout [BH / heads, Tp,
    heads * d] (`layout.py`). Operands are cast to bf16 (gs, beta to fp32) in XLA. scale: q's
    factor as `prep_mosaic.prep_fwd` applied it (dq is the unscaled q's cotangent).
    `interpret`: None to compile for the GPU, or a `plgpu.InterpretGPUParams()` for the Mosaic
    GPU interpreter."""
    BH, Tp, Kp, V = lay.dims(q, v, heads)
    N = Tp // C
    Vs = states.shape[-1]  # the state passes' width: V, or 96 of a V padded to 128
    if Vs != V and (Vs, V, Kp) != (96, 128, 64):
        raise ValueError(f"the states' width must be v's, or 96 with v padded to 128 at Kp = "
                         f"64; got {Vs}, {V}, Kp={Kp}")
    tr = bf16_transforms(Vs)
    if not takes_shape(C, Kp, V) or Tp % C:
        raise ValueError(f"the Mosaic chunk gradients need C = {C_SUPPORTED}, Kp in "
                         f"{KP_SUPPORTED}, V a multiple of {BV} up to {V_MAX} and Tp a "
                         f"multiple of C; got C={C}, Kp={Kp}, V={V}, Tp={Tp}")
    if q.dtype != jnp.bfloat16:
        raise ValueError(f"the Mosaic chunk gradients write dq, dk, dv in bf16, so they take "
                         f"bf16 q, k, v; got {q.dtype}")
    sv, cv = (BH, N * Kp, Vs), (BH, Tp, Vs)
    want = dict(gs=(BH, 2, Tp), beta=(BH, Tp), T=(BH, Tp, C), states=sv, dstates=sv,
                delta=cv, dd=cv, do=cv)
    expect_shapes(want, gs=gs, beta=beta, T=T, states=states, dstates=dstates, delta=delta,
                  dd=dd, do=lay.flat(do, heads, BH))
    bf16, f32 = jnp.bfloat16, jnp.float32
    ins = [x.astype(bf16) for x in (q, k, v)] + [gs.astype(f32), beta.astype(f32)]
    ins += [x.astype(bf16) for x in (T, states, dstates, delta, dd, do)]
    early = Vs <= EARLY_V_MAX
    scratch = [
        plgpu.SMEM((C, Kp), bf16, transforms=tr),  # dw
        plgpu.SMEM((C, Kp), bf16, transforms=tr),  # dkd, then dk
        plgpu.SMEM((C, Kp), bf16, transforms=tr),  # dqd
        plgpu.SMEM((C, Vs), bf16, transforms=tr),  # du, then dv
        plgpu.SMEM((C,), f32),                          # G, then dG
        plgpu.SMEM((C,), f32),                          # logF, then dlogF
        plgpu.SMEM((C,), f32),                          # beta, then dbeta
        plgpu.SMEM((Kp,), f32),                         # dgc
        plgpu.Barrier(num_arrivals=6),                  # S, du, dO, G, logF, beta
        plgpu.Barrier(num_arrivals=2),                  # dS, delta
        plgpu.Barrier(num_arrivals=4),                  # q, k, v, T
        plgpu.Barrier(num_arrivals=2),                  # both warpgroups are done with phase 1
        *pg.Handovers.scratch(),
        plgpu.RefUnion(
            [plgpu.SMEM(shape, bf16, transforms=tr)           # S, dS, delta, dO
             for shape in ((Kp, Vs), (Kp, Vs), (C, Vs), (C, Vs))],
            [plgpu.SMEM((C, C), bf16, transforms=tr),         # daqk's dQK
             plgpu.SMEM((C, Kp), bf16, transforms=tr),        # bE k, then dq
             plgpu.SMEM((C, C), bf16, transforms=tr),         # dT, T^T dT, d(k k^T)
             plgpu.SMEM((C, C), f32, transforms=F32_TR)]      # transposes
            + ([] if early else _phase2_inputs(C, Kp, Vs, tr))),
        *(_phase2_inputs(C, Kp, Vs, tr) if early else ()),
    ]

    def gdr_chunk_grads_mgpu(*refs):
        _kernel(*refs, C=C, Kp=Kp, V=V, Vs=Vs, heads=heads, scale=float(scale))

    grad = lambda d: jax.ShapeDtypeStruct(lay.shape(BH, Tp, d, heads), bf16)  # noqa: E731
    return plgpu.kernel(
        gdr_chunk_grads_mgpu,
        out_type=(grad(Kp), grad(Kp), grad(V), jax.ShapeDtypeStruct((BH, 2, Tp), f32),
                  jax.ShapeDtypeStruct((BH, Tp), f32), jax.ShapeDtypeStruct((BH, N, Kp), f32)),
        grid=(BH, N), grid_names=("i", "n"), scratch_types=scratch,
        num_threads=pg.WARPGROUPS, thread_name="wg", interpret=interpret,
    )(*ins)
