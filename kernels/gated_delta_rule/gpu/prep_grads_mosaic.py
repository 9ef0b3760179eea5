"""The prep backward's per-chunk math in Mosaic GPU, split over a program's two warpgroups:
what `prep_mosaic_bwd.prep_bwd` and `grad_mosaic.chunk_grads` both run once a chunk's tiles
are in shared memory.

Why two warpgroups
    One warpgroup ran it as one chain of about twenty dependent wgmmas, SMEM round trips and
    transposes, in 255 registers a thread with spills; ptxas then serialized its wgmmas
    (warning C7514). It was about 0.30 ms of the fused gradient kernel's 0.51 at B4 T4096
    H16 K=V=128 on an H100 (experiments/LOG.md). Here the [C, C] chain and the [C, Kp] /
    [C, V] tiles go to different warpgroups. Each holds half the values, and the tile
    warpgroup's products and row sums run while the chain runs.

The math (see `prep_mosaic_bwd` for the symbols), per chunk of C rows:
  tiles warpgroup (TILES)                       chain warpgroup (CHAIN)
  dbv = T^T du; dv = beta dbv; dbeta_v          Dc from G (a transpose in SMEM); dQK
  beta v -> v's tile, bE k -> ck_s   --bv-->    dT = du (beta v)^T + dw (bE k)^T
  dv -> du's tile (TMA out)        <--dt--      dA = -T^T dT T^T (strict lower), dAD = dA D
  T^T dw; rowsums with k, dkd, q, dqd           KK, QK; dlogD, dG_chain, dbeta_kk, d(k k^T)
  dq = dQK k + s E dqd             <--dqk--     bf16(dQK) -> dqk_s, bf16(d(k k^T)) -> cc_s,
  dk = d(k k^T) k + dQK^T q + ...               dG_chain -> G's tile, dbeta_kk -> beta's
  dG, dlogF, dbeta (TMA out)
The three handovers are one-phase barriers of one arrival (the writer's warpgroup): "bv"
(beta v and bE k staged), "dt" (dT's product has read du, beta v, bE k) and "dqk". Every
value, product and rounding is the one-warpgroup version's, so the outputs are bitwise its.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from kernels.gated_delta_rule.gpu.mosaic_common import (finish_stores, meet, store_tile,
                                                        wgmma_products)

CHAIN, TILES = 0, 1  # warpgroup indices (thread axis "wg" of the kernels)
WARPGROUPS = 2


class Tiles(NamedTuple):
    """One chunk's SMEM: q, k, dw, dkd (then dk), dqd, ck (staging: bE k, then dq) [C, Kp];
    v (then beta v), du (then dv) [C, V]; T, dqk (daqk or nothing, then bf16(dQK)), cc
    (staging: dT, T^T dT, d(k k^T)) [C, C] bf16; x [C, C] fp32 (transposes); G, logF, beta
    [C] fp32 (then their cotangents)."""
    q: object
    k: object
    v: object
    t: object
    dw: object
    du: object
    dkd: object
    dqd: object
    dqk: object
    ck: object
    cc: object
    x: object
    g: object
    lf: object
    b: object


class Handovers(NamedTuple):
    """The barriers between the warpgroups (one phase per program): three handovers of one
    arrival, and `done`, which both warpgroups meet at the end (`mosaic_common.meet`) so that
    neither exits while the other still issues wgmmas (on sm_90 that pattern is reported to
    end kernels with CUDA_ERROR_ILLEGAL_INSTRUCTION at times)."""
    bv: object    # TILES -> CHAIN: beta v in v's tile, bE k in ck
    dt: object    # CHAIN -> TILES: dT's product is done reading du, v, dw, ck
    dqk: object   # CHAIN -> TILES: bf16(dQK), bf16(d(k k^T)), dG_chain, dbeta_kk in SMEM
    done: object  # both: the program's work is issued and waited for

    @staticmethod
    def scratch():
        return [plgpu.Barrier(num_arrivals=1) for _ in range(3)] + [
            plgpu.Barrier(num_arrivals=WARPGROUPS)]


_WG = plgpu.Layout.WGMMA
_f32 = jnp.float32


def _vec(ref):  # a [C] vector of SMEM in registers, one value per accumulator row
    return plgpu.load(ref, layout=_WG.reduce(1))


def _tile(ref):  # a bf16 SMEM tile in registers, fp32
    return plgpu.load(ref, layout=_WG).astype(_f32)


def _per_row(x, width):  # [C] -> [C, width], X_ij = x_i
    return lax.broadcast_in_dim(x, (x.shape[0], width), [0])


def _mm(pairs, shape):
    """The sum of lhs @ rhs over pairs of SMEM refs (or transposed views) in one fp32
    accumulator, waited for."""
    def run(acc):
        for lhs, rhs in pairs:
            plgpu.wgmma(acc, lhs, rhs)
        plgpu.wgmma_wait(0)
        return acc[...]
    return pl.run_scoped(run, plgpu.ACC(shape, _f32))


def handover(bar):
    """This warpgroup's SMEM writes are visible to the other's reads, TMA and wgmma; then it
    arrives on bar."""
    plgpu.commit_smem()
    plgpu.barrier_arrive(bar)


def chain(daqk, s: Tiles, h: Handovers, *, scale):
    """The CHAIN warpgroup's half, from daqk (bf16 registers, the wgmma layout); it ends
    meeting the TILES warpgroup on `h.done`."""
    C = s.t.shape[0]

    def transposed(x):  # x^T in registers ([C, C] fp32), through x
        store_tile(s.x, x)
        return plgpu.load(s.x.T, layout=_WG)

    G, beta = _vec(s.g), _vec(s.b)
    row = plgpu.broadcasted_iota(jnp.int32, (C, C), 0, layout=_WG)
    col = plgpu.broadcasted_iota(jnp.int32, (C, C), 1, layout=_WG)
    G_i = _per_row(G, C)
    Dc = jnp.exp(jnp.where(row >= col, G_i - transposed(G_i), -jnp.inf))
    dQK = scale * daqk.astype(_f32) * Dc  # with respect to (q k^T) Dc of the unscaled q
    D = jnp.where(row > col, Dc, 0.0)

    plgpu.barrier_wait(h.bv)
    dT = _mm(((s.du, s.v.T), (s.dw, s.ck.T)), (C, C))
    plgpu.barrier_arrive(h.dt)  # the product is waited for: du, v, dw, ck are read
    store_tile(s.cc, dT)
    (TdT,) = wgmma_products(((s.t.T, s.cc),), ((C, C),))
    store_tile(s.cc, TdT)
    dAD = jnp.where(row > col, -_mm(((s.cc, s.t.T),), (C, C)), 0.0) * D

    KK, QK = wgmma_products(((s.k, s.k.T), (s.q, s.k.T)), ((C, C), (C, C)))
    dKKD = dAD * KK
    dbeta_kk = jnp.sum(dKKD, axis=1)
    dlogD = dQK * QK + _per_row(beta, C) * dKKD
    dG = jnp.sum(dlogD, axis=1) - jnp.sum(transposed(dlogD), axis=1)
    dKK = _per_row(beta, C) * dAD
    dKK_sym = dKK + transposed(dKK)
    store_tile(s.dqk, dQK)     # bf16(dQK)
    store_tile(s.cc, dKK_sym)  # bf16(d(k k^T))
    store_tile(s.g, dG)        # G and beta were read by both warpgroups before "bv"
    store_tile(s.b, dbeta_kk)
    handover(h.dqk)
    meet(h.done)


def tiles(s: Tiles, h: Handovers, *, out, scale):
    """The TILES warpgroup's half. dq, dk, dv, dG, dlogF and dbeta leave by TMA to the GMEM
    refs `out`; the program ends once they have left SMEM (`finish_stores`)."""
    C, Kp, V = s.q.shape[0], s.q.shape[1], s.v.shape[1]
    dq_g, dk_g, dv_g, dG_g, dlogF_g, db_g = out
    G, beta = _vec(s.g), _vec(s.b)
    E, F = jnp.exp(G), jnp.exp(_vec(s.lf))
    bE = beta * E

    (dbv,) = wgmma_products(((s.t.T, s.du),), ((C, V),))
    v = _tile(s.v)
    dbeta_v = jnp.sum(dbv * v, axis=1)
    dv = _per_row(beta, V) * dbv
    store_tile(s.v, _per_row(beta, V) * v)            # beta v, in place of v
    store_tile(s.ck, _per_row(bE, Kp) * _tile(s.k))  # bE k
    handover(h.bv)
    plgpu.barrier_wait(h.dt)
    store_tile(s.du, dv, dv_g)  # du is consumed: dv leaves from its tile

    (dbek,) = wgmma_products(((s.t.T, s.dw),), ((C, Kp),))  # T^T dw: w's term of dk
    k, dkd = _tile(s.k), _tile(s.dkd)
    s_bek = jnp.sum(dbek * k, axis=1)
    s_kd = jnp.sum(dkd * k, axis=1)
    dk_rows = _per_row(bE, Kp) * dbek + _per_row(F, Kp) * dkd
    dE_q = scale * jnp.sum(_tile(s.dqd) * _tile(s.q), axis=1)

    plgpu.barrier_wait(h.dqk)
    dq = _mm(((s.dqk, s.k),), (C, Kp)) + _per_row(scale * E, Kp) * _tile(s.dqd)
    store_tile(s.ck, dq, dq_g)
    dk = _mm(((s.cc, s.k), (s.dqk.T, s.q)), (C, Kp)) + dk_rows
    store_tile(s.dkd, dk, dk_g)
    dG, dbeta_kk = _vec(s.g), _vec(s.b)
    store_tile(s.g, dG + E * (beta * s_bek + dE_q), dG_g)
    store_tile(s.lf, F * s_kd, dlogF_g)
    store_tile(s.b, (dbeta_v + dbeta_kk) + E * s_bek, db_g)
    finish_stores()
    meet(h.done)
