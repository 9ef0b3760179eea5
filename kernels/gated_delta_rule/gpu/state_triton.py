"""Triton (Pallas GPU) kernels of the state pass: the sequential walk over chunks that carries
the [K, V] state (forward) or its gradient (backward), split as fla splits it.

Why this exists
    Where the Mosaic GPU kernels do not take the shape (`state_mosaic.py`,
    `state_mosaic_bwd.py`: precision "highest", K > 128 or K <= 32, V not a multiple of 64
    (behind the Triton prep), chunk size other than 64, or V > 192 for the parallel backward kernel), these run. Only one
    program per (batch x value head, V tile) can walk the chunks, so the sequential kernels do
    as little per step as the recurrence allows, and everything else runs in a kernel with one
    program per (batch x value head, chunk):

    forward   `state_fwd` (sequential)   delta_n = u_n - w_n S_n
                                         o_n     = qd_n S_n + Aqk_n delta_n
                                         S_n+1   = gc_n S_n + kd_n^T delta_n        (4 dots a step)
                                         writes o, and before a backward S_n and delta_n
    backward  `dh` (sequential)          dd_n = kd_n dS + Aqk_n^T dO_n
                                         dS  <- gc_n dS + qd_n^T dO_n - w_n^T dd_n   (4 dots a step)
                                         writes dS (= dL/dS_n+1) and dd_n (= du_n)
              `dqk` (parallel, one       dw = -dd S^T, dkd = delta dS^T, dqd = dO S^T,
                  program per chunk,     dAqk = dO delta^T, dgc = rowsum(dS * S)
                  all of V)              (summed over V in-kernel)

    (qd = q exp(G), kd = k exp(G_C - G), Aqk the masked q k^T decay, gc = exp(G_C).) Saving
    delta [BH, Tp, V] and dS per chunk costs HBM traffic (about 0.13 GB at B4 T4096 H16 K=V=128
    in bf16); fla's chunk_gated_delta_rule makes the same trade. On an H200 at that shape this
    backward took 0.677 ms against 1.226 for one fused sequential backward kernel.

Numerics
    The state and dS are carried in fp32; every dot is the caller's precision (`dot_fn`: bf16
    operands at "default", TF32x3 at "highest"). o, the saved states, delta, dd and the
    per-chunk dS copies are stored in the operands' dtype (bf16 at "default", where every dot
    rounds them to bf16 anyway; only dgc's elementwise sum sees dS's rounding).

Constraints
    w, kd, qd [BH, Tp, Kp]; u, o, delta, dd [BH, Tp, V]; aqk [BH, Tp, C]; gc [BH, Kp, N]
    (exp(G_C) repeated over Kp); states, dstates [BH, N * Kp, V]; s0, sf [BH, Kp, V] fp32. V is
    walked in tiles of BV = `v_tile(V, block_v)` >= 16 (Triton dots), so V % 16 == 0. `dqk`
    reads dO in the caller's layout with heads (`layout.py`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels.gated_delta_rule.gpu import layout as lay
from kernels.gated_delta_rule.gpu.triton_common import (NN, NT, TN, dot_fn, seq_specs,
                                                        triton_params, v_tile)

f32 = jnp.float32


# ---------------------------------------------------------------------------------------------
# Kernels. Sequential ones see whole [Tp, *] sequences and slice chunks with pl.ds; the parallel
# one sees one chunk's blocks.

def _fwd_kernel(w_ref, u_ref, kd_ref, gc_ref, qd_ref, aqk_ref, s0_ref,
                o_ref, sf_ref, *saved_refs, C, Kp, n_chunks, dot):
    def body(n, S):
        rows = pl.ds(n * C, C)
        w, u, kd, qd, aqk = (r[rows, :].astype(f32)
                             for r in (w_ref, u_ref, kd_ref, qd_ref, aqk_ref))
        gc = gc_ref[:, pl.ds(n, 1)]  # [Kp, 1]
        if saved_refs:  # residuals for the backward only: the states and delta
            saved_refs[0][pl.ds(n * Kp, Kp), :] = S.astype(saved_refs[0].dtype)
        delta = u - dot(w, S, NN)
        if saved_refs:
            saved_refs[1][rows, :] = delta.astype(saved_refs[1].dtype)
        o_ref[rows, :] = (dot(qd, S, NN) + dot(aqk, delta, NN)).astype(o_ref.dtype)
        return gc * S + dot(kd, delta, TN)

    sf_ref[...] = lax.fori_loop(0, n_chunks, body, s0_ref[...])


def _dh_kernel(w_ref, kd_ref, gc_ref, qd_ref, aqk_ref, do_ref, dsf_ref, dstates_ref, dd_ref,
               ds0_ref, *, C, Kp, n_chunks, dot):
    def body(i, dS):
        n = n_chunks - 1 - i
        rows = pl.ds(n * C, C)
        w, kd, qd, aqk, dO = (r[rows, :].astype(f32)
                              for r in (w_ref, kd_ref, qd_ref, aqk_ref, do_ref))
        dstates_ref[pl.ds(n * Kp, Kp), :] = dS.astype(dstates_ref.dtype)
        dd = dot(kd, dS, NN) + dot(aqk, dO, TN)
        dd_ref[rows, :] = dd.astype(dd_ref.dtype)
        return gc_ref[:, pl.ds(n, 1)] * dS + dot(qd, dO, TN) - dot(w, dd, TN)

    ds0_ref[...] = lax.fori_loop(0, n_chunks, body, dsf_ref[...])


def _dqk_kernel(s_ref, ds_ref, delta_ref, dd_ref, do_ref, dw_ref, dkd_ref, dqd_ref, daqk_ref,
                dgc_ref, *, BV, NV, dot):
    """One chunk, all of V: the key-side cotangents are sums over V, so summing them here, tile
    by tile, writes each once instead of one partial per V tile for XLA to add up. Two loops,
    each carrying two accumulators, so that no more than two [C, Kp] fp32 tiles are live."""
    tile = lambda ref, j: ref[:, pl.ds(j * BV, BV)].astype(f32)

    def by_states(j, acc):  # the products with S
        dw, dqd = acc
        S = tile(s_ref, j)
        return dw - dot(tile(dd_ref, j), S, NT), dqd + dot(tile(do_ref, j), S, NT)

    def by_deltas(j, acc):  # the products with delta, and dgc
        dkd, daqk, dgc = acc
        delta, dS = tile(delta_ref, j), tile(ds_ref, j)
        return (dkd + dot(delta, dS, NT), daqk + dot(tile(do_ref, j), delta, NT),
                dgc + jnp.sum(dS * tile(s_ref, j), axis=1))

    C, Kp = dw_ref.shape
    zeros = lambda *shape: jnp.zeros(shape, f32)
    dw, dqd = lax.fori_loop(0, NV, by_states, (zeros(C, Kp), zeros(C, Kp)))
    dw_ref[...], dqd_ref[...] = dw.astype(dw_ref.dtype), dqd.astype(dqd_ref.dtype)
    dkd, daqk, dgc = lax.fori_loop(0, NV, by_deltas, (zeros(C, Kp), zeros(C, C), zeros(Kp)))
    dkd_ref[...], daqk_ref[...], dgc_ref[...] = (dkd.astype(dkd_ref.dtype),
                                                 daqk.astype(daqk_ref.dtype), dgc)


# ---------------------------------------------------------------------------------------------
# pallas_call wrappers.

def _launch(kernel, name, grid, in_specs, out_specs, out_shape, *, interpret, num_warps,
            num_stages):
    return pl.pallas_call(
        kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
        compiler_params=triton_params(num_warps, num_stages, interpret), interpret=interpret,
        name=name)


def state_fwd(w, u, kd, gc, qd, aqk, s0, *, residuals, precision, interpret, num_warps,
              num_stages, block_v):
    """-> o [BH, Tp, V] (in w's dtype), sf fp32, and with residuals the chunk-entry states
    [BH, N * Kp, V] and delta = u - w S [BH, Tp, V] (in w's dtype), what the backward reads."""
    BH, Tp, Kp = w.shape
    V, C, N = u.shape[-1], aqk.shape[-1], gc.shape[2]
    BV = v_tile(V, block_v)
    s = seq_specs(Tp, Kp, C, N, BV)
    dt = w.dtype
    kernel = functools.partial(_fwd_kernel, C=C, Kp=Kp, n_chunks=N,
                               dot=dot_fn(precision, interpret))
    return _launch(
        kernel, "gdr_state_pass_fwd", (BH, V // BV),
        [s["k"], s["v"], s["k"], s["gc"], s["k"], s["c"], s["state"]],
        [s["v"], s["state"]] + [s["states"], s["v"]] * residuals,
        [jax.ShapeDtypeStruct((BH, Tp, V), dt), jax.ShapeDtypeStruct((BH, Kp, V), f32)]
        + [jax.ShapeDtypeStruct((BH, N * Kp, V), dt),
           jax.ShapeDtypeStruct((BH, Tp, V), dt)] * residuals,
        interpret=interpret, num_warps=num_warps, num_stages=num_stages,
    )(w, u, kd, gc, qd, aqk, s0)


def dh(w, kd, gc, qd, aqk, do, dsf, *, precision, interpret, num_warps, num_stages, block_v):
    """The backward's sequential kernel: (dstates [BH, N * Kp, V], dd [BH, Tp, V], both in w's
    dtype; ds0 [BH, Kp, V] fp32) from dO [BH, Tp, V] and dsf = dL/dS_final [BH, Kp, V]."""
    BH, Tp, Kp = w.shape
    V, C, N = do.shape[-1], aqk.shape[-1], gc.shape[2]
    if do.shape != (BH, Tp, V):
        raise ValueError(f"do: expected {(BH, Tp, V)}, got {do.shape}")
    BV = v_tile(V, block_v)
    s = seq_specs(Tp, Kp, C, N, BV)
    dt = w.dtype
    kernel = functools.partial(_dh_kernel, C=C, Kp=Kp, n_chunks=N,
                               dot=dot_fn(precision, interpret))
    return _launch(
        kernel, "gdr_split_dh", (BH, V // BV),
        [s["k"], s["k"], s["gc"], s["k"], s["c"], s["v"], s["state"]],
        [s["states"], s["v"], s["state"]],
        [jax.ShapeDtypeStruct((BH, N * Kp, V), dt), jax.ShapeDtypeStruct((BH, Tp, V), dt),
         jax.ShapeDtypeStruct((BH, Kp, V), f32)],
        interpret=interpret, num_warps=num_warps, num_stages=num_stages,
    )(w, kd, gc, qd, aqk, do, dsf)


def dqk(states, dstates, delta, dd, do, *, C, out_dtype, heads=None, precision, interpret,
        num_warps, num_stages, block_v):
    """The backward's parallel kernel: (dw, dkd, dqd [BH, Tp, Kp], daqk [BH, Tp, C] in
    out_dtype; dgc [BH, N, Kp] fp32) from the forward's states and delta and `dh`'s dstates
    and dd. heads: dO in the caller's layout [BH / heads, Tp, heads * V] (`layout.py`)."""
    BH, Tp, V = delta.shape
    N = Tp // C
    Kp = states.shape[1] // N
    if do.shape != lay.shape(BH, Tp, V, heads):
        raise ValueError(f"do: expected {lay.shape(BH, Tp, V, heads)} (heads={heads}), got "
                         f"{do.shape}")
    BV = v_tile(V, block_v)
    k = pl.BlockSpec((None, C, Kp), lambda i, n: (i, n, 0))
    v = pl.BlockSpec((None, C, V), lambda i, n: (i, n, 0))
    c = pl.BlockSpec((None, C, C), lambda i, n: (i, n, 0))
    state = pl.BlockSpec((None, Kp, V), lambda i, n: (i, n, 0))
    gc = pl.BlockSpec((None, None, Kp), lambda i, n: (i, n, 0))
    sds = lambda *shape, dt=out_dtype: jax.ShapeDtypeStruct(shape, dt)
    return _launch(
        functools.partial(_dqk_kernel, BV=BV, NV=V // BV, dot=dot_fn(precision, interpret)),
        "gdr_split_dqk", (BH, N),
        [state, state, v, v, v if heads is None else lay.block_spec(C, V, heads)],
        [k, k, k, c, gc],
        [sds(BH, Tp, Kp), sds(BH, Tp, Kp), sds(BH, Tp, Kp), sds(BH, Tp, C),
         sds(BH, N, Kp, dt=f32)],
        interpret=interpret, num_warps=num_warps, num_stages=num_stages,
    )(states, dstates, delta, dd, do)
