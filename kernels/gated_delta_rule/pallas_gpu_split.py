"""The state pass split as flash-linear-attention splits it: short sequential kernels that only
carry the state, and parallel-over-chunks kernels for everything that does not feed it back.

Why
    The fused state pass (`pallas_gpu_state.py`) does all of a chunk's products inside the
    loop over chunks: 4 dots a step forward (w S, qd S, Aqk delta, kd^T delta), 9 backward. Only
    one program per (batch x value head, V tile) runs that loop (128 programs on 132 SMs at
    the benchmark's first shape), so its time is the latency of those dependent dots times the
    number of chunks. Here the loop keeps only what the recurrence needs, and the rest runs with
    one program per (batch x value head, chunk, V tile), thousands of programs:

    forward   _h_kernel   (sequential)  delta_n = u_n - w_n S_n;  S_n+1 = gc_n S_n + kd_n^T delta_n
                                        writes S_n and delta_n                       (2 dots a step)
              _o_kernel   (parallel)    o_n = qd_n S_n + Aqk_n delta_n
    backward  _dh_kernel  (sequential)  dd_n = kd_n dS + Aqk_n^T dO_n
                                        dS <- gc_n dS + qd_n^T dO_n - w_n^T dd_n
                                        writes dS (= dL/dS_n+1) and dd_n             (4 dots a step)
              _dqk_kernel (parallel,    dw = -dd S^T, dkd = delta dS^T, dqd = dO S^T,
                  one program per chunk, dAqk = dO delta^T, dgc = rowsum(dS * S), du = dd
                  all of V)             (sums over V in-kernel: no partials per V tile)

    The cost is HBM traffic: delta [BH, Tp, V] is written and read (saved as a residual for the
    backward, where the fused backward recomputes it), and the backward writes and reads dS per
    chunk, [BH, N*Kp, V] in the operand dtype: about 0.13 GB at B4 T4096 H16 K=V=128 in bf16,
    some 0.03 ms at H200 bandwidth. fla's `chunk_gated_delta_rule` makes the same trade.
    pallas_gpu.py's default state_pass="splitbwd" pairs the fused forward (saving delta) with
    `split_bwd`; on an H200 at that shape `split_bwd` took 0.677 ms against 1.226 for the fused
    backward (seventh session; 1.02 before its parallel kernel summed over V in-kernel).

Semantics, arguments and dtypes are those of `pallas_gpu_state.state_pass` (same custom_vjp
contract, same precision handling: bf16 dot operands at "default", TF32x3 at "highest");
`chunk_gated_delta_rule_pallas_gpu(..., state_pass="split")` selects it both ways.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels.gated_delta_rule import caller_layout as lay
from kernels.gated_delta_rule.pallas_gpu_common import (_NN, _NT, _TN, _call_cfg, _dot_fn,
                                                         _specs, _triton_params, _v_tile)

f32 = jnp.float32


# ---------------------------------------------------------------------------------------------
# Kernels. Sequential ones see whole [Tp, *] sequences and slice chunks with pl.ds; parallel
# ones see one chunk's blocks.

def _h_kernel(w_ref, u_ref, kd_ref, gc_ref, s0_ref, states_ref, delta_ref, sf_ref, *, C, Kp,
              n_chunks, dot):
    def body(n, S):
        rows = pl.ds(n * C, C)
        w, u, kd = (r[rows, :].astype(f32) for r in (w_ref, u_ref, kd_ref))
        states_ref[pl.ds(n * Kp, Kp), :] = S.astype(states_ref.dtype)
        delta = u - dot(w, S, _NN)
        delta_ref[rows, :] = delta.astype(delta_ref.dtype)
        return gc_ref[:, pl.ds(n, 1)] * S + dot(kd, delta, _TN)

    sf_ref[...] = lax.fori_loop(0, n_chunks, body, s0_ref[...])


def _o_kernel(qd_ref, aqk_ref, s_ref, delta_ref, o_ref, *, dot):
    S, delta = s_ref[...].astype(f32), delta_ref[...].astype(f32)
    o = dot(qd_ref[...].astype(f32), S, _NN) + dot(aqk_ref[...].astype(f32), delta, _NN)
    o_ref[...] = o.astype(o_ref.dtype)


def _dh_kernel(w_ref, kd_ref, gc_ref, qd_ref, aqk_ref, do_ref, dsf_ref, dstates_ref, dd_ref,
               ds0_ref, *, C, Kp, n_chunks, dot):
    def body(i, dS):
        n = n_chunks - 1 - i
        rows = pl.ds(n * C, C)
        w, kd, qd, aqk, dO = (r[rows, :].astype(f32)
                              for r in (w_ref, kd_ref, qd_ref, aqk_ref, do_ref))
        dstates_ref[pl.ds(n * Kp, Kp), :] = dS.astype(dstates_ref.dtype)
        dd = dot(kd, dS, _NN) + dot(aqk, dO, _TN)
        dd_ref[rows, :] = dd.astype(dd_ref.dtype)
        return gc_ref[:, pl.ds(n, 1)] * dS + dot(qd, dO, _TN) - dot(w, dd, _TN)

    ds0_ref[...] = lax.fori_loop(0, n_chunks, body, dsf_ref[...])


def _dqk_kernel(s_ref, ds_ref, delta_ref, dd_ref, do_ref, dw_ref, dkd_ref, dqd_ref, daqk_ref,
                dgc_ref, *, BV, NV, dot):
    """One chunk, all of V: the key-side cotangents are sums over V, so summing them here, tile
    by tile, writes each once instead of one partial per V tile for XLA to add up (at
    B4 T4096 H16 K=V=128 with two tiles, about 0.8 GB of HBM traffic less). Two loops, each
    carrying two accumulators, so that no more than two [C, Kp] fp32 tiles are live."""
    tile = lambda ref, j: ref[:, pl.ds(j * BV, BV)].astype(f32)

    def by_states(j, acc):  # the products with S
        dw, dqd = acc
        S = tile(s_ref, j)
        return dw - dot(tile(dd_ref, j), S, _NT), dqd + dot(tile(do_ref, j), S, _NT)

    def by_deltas(j, acc):  # the products with delta, and dgc
        dkd, daqk, dgc = acc
        delta, dS = tile(delta_ref, j), tile(ds_ref, j)
        return (dkd + dot(delta, dS, _NT), daqk + dot(tile(do_ref, j), delta, _NT),
                dgc + jnp.sum(dS * tile(s_ref, j), axis=1))

    C, Kp = dw_ref.shape
    zeros = lambda *shape: jnp.zeros(shape, f32)
    dw, dqd = lax.fori_loop(0, NV, by_states, (zeros(C, Kp), zeros(C, Kp)))
    dw_ref[...], dqd_ref[...] = dw.astype(dw_ref.dtype), dqd.astype(dqd_ref.dtype)
    dkd, daqk, dgc = lax.fori_loop(0, NV, by_deltas, (zeros(C, Kp), zeros(C, C), zeros(Kp)))
    dkd_ref[...], daqk_ref[...], dgc_ref[...] = (dkd.astype(dkd_ref.dtype),
                                                 daqk.astype(daqk_ref.dtype), dgc)


# ---------------------------------------------------------------------------------------------
# pallas_call wrappers. Arrays as in pallas_gpu_state.py: w, kd, qd [BH, Tp, Kp]; u, delta, dd
# [BH, Tp, V]; aqk [BH, Tp, C]; gc [BH, Kp, N]; states, dstates [BH, N*Kp, V]; s0 [BH, Kp, V].

def _launch(kernel, name, grid, in_specs, out_specs, out_shape, interpret, num_warps,
            num_stages):
    return pl.pallas_call(
        kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
        compiler_params=None if interpret else _triton_params(num_warps, num_stages),
        interpret=interpret, name=name)


def _setup(w, aqk, gc, V, precision, interpret, num_warps, num_stages, block_v):
    """What split_fwd and split_bwd share: sizes (BH, Tp, Kp, C, N, BV, NV), the in-kernel dot,
    a launcher with the Triton parameters, and the sequential and per-chunk block specs."""
    BH, Tp, Kp = w.shape
    C, N = aqk.shape[-1], gc.shape[2]
    BV = _v_tile(V, block_v)
    run = functools.partial(_launch, interpret=interpret, num_warps=num_warps,
                            num_stages=num_stages)
    return ((BH, Tp, Kp, C, N, BV, V // BV), _dot_fn(precision, interpret), run,
            _seq_specs(Tp, Kp, C, N, BV), _chunk_specs(C, Kp, BV))


def _seq_specs(Tp, Kp, C, N, BV):
    """Whole-sequence blocks for the sequential kernels, grid (BH, NV) (the fused pass's)."""
    return dict(zip(("k", "v", "c", "gc", "state", "states"), _specs(Tp, Kp, C, N, BV)))


def _chunk_specs(C, Kp, BV):
    """One chunk's blocks for the parallel kernels, grid (BH, N, NV)."""
    return dict(k=pl.BlockSpec((None, C, Kp), lambda i, n, j: (i, n, 0)),
                v=pl.BlockSpec((None, C, BV), lambda i, n, j: (i, n, j)),
                c=pl.BlockSpec((None, C, C), lambda i, n, j: (i, n, 0)),
                state=pl.BlockSpec((None, Kp, BV), lambda i, n, j: (i, n, j)))


def _chunk_specs_all_v(C, Kp, V):
    """One chunk's blocks over all of V for the parallel backward kernel, grid (BH, N)."""
    return dict(k=pl.BlockSpec((None, C, Kp), lambda i, n: (i, n, 0)),
                v=pl.BlockSpec((None, C, V), lambda i, n: (i, n, 0)),
                c=pl.BlockSpec((None, C, C), lambda i, n: (i, n, 0)),
                state=pl.BlockSpec((None, Kp, V), lambda i, n: (i, n, 0)),
                gc=pl.BlockSpec((None, None, Kp), lambda i, n: (i, n, 0)))


def split_fwd(w, u, kd, gc, qd, aqk, s0, *, precision, interpret, num_warps, num_stages,
              block_v):
    """-> o [BH, Tp, V] (operand dtype), sf fp32, and the residuals states, delta."""
    (BH, Tp, Kp, C, N, BV, NV), dot, run, s, c = _setup(
        w, aqk, gc, u.shape[-1], precision, interpret, num_warps, num_stages, block_v)
    V, dt = u.shape[-1], w.dtype
    states, delta, sf = run(
        functools.partial(_h_kernel, C=C, Kp=Kp, n_chunks=N, dot=dot), "gdr_split_h",
        (BH, NV), [s["k"], s["v"], s["k"], s["gc"], s["state"]],
        [s["states"], s["v"], s["state"]],
        [jax.ShapeDtypeStruct((BH, N * Kp, V), dt), jax.ShapeDtypeStruct((BH, Tp, V), dt),
         jax.ShapeDtypeStruct((BH, Kp, V), f32)])(w, u, kd, gc, s0)
    o = run(functools.partial(_o_kernel, dot=dot), "gdr_split_o", (BH, N, NV),
            [c["k"], c["c"], c["state"], c["v"]], c["v"],
            jax.ShapeDtypeStruct((BH, Tp, V), dt))(qd, aqk, states, delta)
    return o, sf, states, delta


def split_bwd(w, kd, gc, qd, aqk, states, delta, do, dsf, *, precision, interpret, num_warps,
              num_stages, block_v, mosaic_dh=False, mosaic_dqk=False, heads=None):
    """Cotangents (dw, du, dkd, dgc, dqd, daqk, ds0) in the primal dtypes; du in delta's.
    states: the chunk-entry states [BH, N*Kp, V], from `split_fwd` or the fused forward.
    mosaic_dh: the sequential kernel in Mosaic GPU (`pallas_mgpu_dh.py`; precision="default",
    the Mosaic state pass's shapes); mosaic_dqk: the parallel one too (`pallas_mgpu_dqk.py`;
    V <= 192), else in Triton. heads: do in the caller's
    layout [BH / heads, Tp, heads * V] (`caller_layout`)."""
    (BH, Tp, Kp, C, N, BV, NV), dot, run, s, _ = _setup(
        w, aqk, gc, delta.shape[-1], precision, interpret, num_warps, num_stages, block_v)
    V, dt = delta.shape[-1], w.dtype
    if do.shape != lay.shape(BH, Tp, V, heads):
        raise ValueError(f"do: expected {lay.shape(BH, Tp, V, heads)} (heads={heads}), got "
                         f"{do.shape}")
    c = _chunk_specs_all_v(C, Kp, V)
    if heads is not None:  # dO's tiles: whole-sequence [Tp, BV] for dh, [C, V] for dqk
        s = dict(s, do=pl.BlockSpec((None, Tp, BV),
                                    lambda i, j: (i // heads, 0, (i % heads) * NV + j)))
        c = dict(c, do=lay.block_spec(C, V, heads))
    # The carried dS stays fp32 inside the sequential kernel; the per-chunk copies it writes
    # for the parallel one are in the operand dtype like the saved states (bf16 at "default",
    # where every dot casts them to bf16 anyway; only dgc's elementwise sum sees the rounding).
    if mosaic_dh:
        from jax.experimental.pallas import mosaic_gpu as plgpu
        from kernels.gated_delta_rule.pallas_mgpu_dh import split_dh_mgpu
        if precision != "default":
            raise ValueError('the Mosaic sequential kernel has bf16 operands only: use '
                             'precision="default"')
        dstates, dd, ds0 = split_dh_mgpu(
            w, kd, gc, qd, aqk, do, dsf, heads=heads,
            interpret=plgpu.InterpretGPUParams() if interpret else None)
        dstates, dd = dstates.astype(dt), dd.astype(dt)  # bf16 already at "default"
    else:
        dstates, dd, ds0 = run(
            functools.partial(_dh_kernel, C=C, Kp=Kp, n_chunks=N, dot=dot), "gdr_split_dh",
            (BH, NV), [s["k"], s["k"], s["gc"], s["k"], s["c"], s.get("do", s["v"]),
                       s["state"]],
            [s["states"], s["v"], s["state"]],
            [jax.ShapeDtypeStruct((BH, N * Kp, V), dt), jax.ShapeDtypeStruct((BH, Tp, V), dt),
             jax.ShapeDtypeStruct((BH, Kp, V), f32)])(w, kd, gc, qd, aqk, do, dsf)
    if mosaic_dqk:
        from jax.experimental.pallas import mosaic_gpu as plgpu
        from kernels.gated_delta_rule.pallas_mgpu_dqk import split_dqk_mgpu
        dw, dkd, dqd, daqk, dgc = split_dqk_mgpu(
            states, dstates, delta, dd, do, C=C, out_dtype=dt, heads=heads,
            interpret=plgpu.InterpretGPUParams() if interpret else None)
    else:
        dw, dkd, dqd, daqk, dgc = run(
            functools.partial(_dqk_kernel, BV=BV, NV=NV, dot=dot), "gdr_split_dqk", (BH, N),
            [c["state"], c["state"], c["v"], c["v"], c.get("do", c["v"])],
            [c["k"], c["k"], c["k"], c["c"], c["gc"]],
            [jax.ShapeDtypeStruct(w.shape, dt), jax.ShapeDtypeStruct(kd.shape, dt),
             jax.ShapeDtypeStruct(qd.shape, dt), jax.ShapeDtypeStruct(aqk.shape, dt),
             jax.ShapeDtypeStruct((BH, N, Kp), f32)],
        )(states, dstates, delta, dd, do)
    dgc = jnp.swapaxes(dgc, 1, 2)  # [BH, N, Kp] -> gc's [BH, Kp, N]
    return (dw.astype(w.dtype), dd, dkd.astype(kd.dtype), dgc.astype(gc.dtype),
            dqd.astype(qd.dtype), daqk.astype(aqk.dtype), ds0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def state_pass_split(w, u, kd, gc, qd, aqk, s0, cfg):
    """(o, final state) of the chunked recurrence; `pallas_gpu_state.state_pass`'s contract."""
    o, sf, _, _ = split_fwd(w, u, kd, gc, qd, aqk, s0, **_call_cfg(cfg, "fwd"))
    return o, sf


def split_residuals(w, u, kd, gc, qd, aqk, states, delta):
    """What `split_bwd_from_residuals` reads: the operands, the forward's states and delta.
    Residuals are arrays, so u's dtype (that of du) rides on a scalar instead of u itself."""
    return (w, jnp.zeros((), u.dtype), kd, gc, qd, aqk, states, delta)


def split_bwd_from_residuals(cfg, res, cts, mosaic_dh=False, mosaic_dqk=False, heads=None):
    """The custom_vjp backward of a state pass whose forward saved `split_residuals`: the split
    backward (here, and after the fused forward of `pallas_gpu_state`)."""
    w, u_like, kd, gc, qd, aqk, states, delta = res
    dw, du, dkd, dgc, dqd, daqk, ds0 = split_bwd(w, kd, gc, qd, aqk, states, delta, *cts,
                                                 mosaic_dh=mosaic_dh, mosaic_dqk=mosaic_dqk,
                                                 heads=heads,
                                                 **_call_cfg(cfg, "bwd_split"))
    return dw, du.astype(u_like.dtype), dkd, dgc, dqd, daqk, ds0


def _vjp_fwd(w, u, kd, gc, qd, aqk, s0, cfg):
    o, sf, states, delta = split_fwd(w, u, kd, gc, qd, aqk, s0, **_call_cfg(cfg, "fwd"))
    return (o, sf), split_residuals(w, u, kd, gc, qd, aqk, states, delta)


state_pass_split.defvjp(_vjp_fwd, split_bwd_from_residuals)
