"""The fused state pass of the Pallas GPU (Triton) gated delta rule: the sequential kernels
that walk the chunks with the state in registers, forward (`_fwd_kernel`) and backward
(`_bwd_kernel`), their pallas_call wrappers, and the state passes' custom_vjps:
    state_pass           fused both ways (state_pass="triton")
    state_pass_splitbwd  the fused forward, also saving delta (or the Mosaic GPU forward of
                         `pallas_mgpu.py`), then the split backward of `pallas_gpu_split.py`
                         (state_pass="splitbwd", "mosaic_splitbwd", "mosaic_dh" with
                         that backward's sequential kernel from `pallas_mgpu_dh.py`, and
                         "mosaic_dqk" with its parallel one from `pallas_mgpu_dqk.py` too;
                         "auto", the default, picks "mosaic_dqk", "mosaic_dh" or "splitbwd")
The math per chunk, the numerics and the launch defaults are in `pallas_gpu.py`'s docstring,
which also holds the public function; split out of it in the seventh session."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels.gated_delta_rule.pallas_gpu_common import (_NN, _NT, _TN, _call_cfg, _dot_fn,
                                                         _specs, _triton_params, _v_tile)
from kernels.gated_delta_rule.pallas_gpu_split import split_bwd_from_residuals, split_residuals


# ---------------------------------------------------------------------------------------------
# Kernels. Refs are per program: [T_pad, *] sequences, chunks sliced with pl.ds.

def _fwd_kernel(w_ref, u_ref, kd_ref, gc_ref, qd_ref, aqk_ref, s0_ref,
                o_ref, sf_ref, *saved_refs, C, Kp, n_chunks, dot):
    def body(n, S):
        rows = pl.ds(n * C, C)
        w, u, kd, qd, aqk = (r[rows, :].astype(jnp.float32)
                             for r in (w_ref, u_ref, kd_ref, qd_ref, aqk_ref))
        gc = gc_ref[:, pl.ds(n, 1)]  # [Kp, 1]
        if saved_refs:  # residuals for the backward only: the states, and maybe delta
            saved_refs[0][pl.ds(n * Kp, Kp), :] = S.astype(saved_refs[0].dtype)
        delta = u - dot(w, S, _NN)
        if len(saved_refs) == 2:
            saved_refs[1][rows, :] = delta.astype(saved_refs[1].dtype)
        o_ref[rows, :] = (dot(qd, S, _NN) + dot(aqk, delta, _NN)).astype(o_ref.dtype)
        return gc * S + dot(kd, delta, _TN)

    sf_ref[...] = lax.fori_loop(0, n_chunks, body, s0_ref[...])


def _bwd_kernel(w_ref, u_ref, kd_ref, gc_ref, qd_ref, aqk_ref, states_ref, do_ref, dsf_ref,
                du_ref, dw_ref, dkd_ref, dgc_ref, dqd_ref, daqk_ref, ds0_ref,
                *, C, Kp, n_chunks, dot):
    def body(i, dS):
        n = n_chunks - 1 - i
        rows = pl.ds(n * C, C)
        w, u, kd, qd, aqk = (r[rows, :].astype(jnp.float32)
                             for r in (w_ref, u_ref, kd_ref, qd_ref, aqk_ref))
        gc = gc_ref[:, pl.ds(n, 1)]  # [Kp, 1]
        S = states_ref[pl.ds(n * Kp, Kp), :].astype(jnp.float32)
        dO = do_ref[rows, :].astype(jnp.float32)
        delta = u - dot(w, S, _NN)
        dd = dot(kd, dS, _NN) + dot(aqk, dO, _TN)
        du_ref[rows, :] = dd.astype(du_ref.dtype)
        dw_ref[rows, :] = (-dot(dd, S, _NT)).astype(dw_ref.dtype)
        dkd_ref[rows, :] = dot(delta, dS, _NT).astype(dkd_ref.dtype)
        dqd_ref[rows, :] = dot(dO, S, _NT).astype(dqd_ref.dtype)
        daqk_ref[rows, :] = dot(dO, delta, _NT).astype(daqk_ref.dtype)
        dgc_ref[:, pl.ds(n, 1)] = jnp.sum(dS * S, axis=1)[:, None]
        return gc * dS + dot(qd, dO, _TN) - dot(w, dd, _TN)

    ds0_ref[...] = lax.fori_loop(0, n_chunks, body, dsf_ref[...])


# ---------------------------------------------------------------------------------------------
# pallas_call wrappers. Arrays: w, kd, qd [BH, Tp, Kp]; u [BH, Tp, V]; aqk [BH, Tp, C];
# gc [BH, Kp, N] (exp(G_C) repeated over Kp); states [BH, N*Kp, V]; s0, sf [BH, Kp, V].

def state_pass_fwd_call(w, u, kd, gc, qd, aqk, s0, *, save_states, precision, interpret,
                         num_warps, num_stages, block_v, save_delta=False):
    """-> o, sf, and with save_states the chunk-entry states, with save_delta also delta =
    u - w S [BH, Tp, V] (what the split backward reads, `pallas_gpu_split.split_bwd`)."""
    BH, Tp, Kp = w.shape
    V, C, N = u.shape[-1], aqk.shape[-1], gc.shape[2]
    BV = _v_tile(V, block_v)
    seq_k, seq_v, seq_c, gcs, state, states = _specs(Tp, Kp, C, N, BV)
    f32 = jnp.float32
    kernel = functools.partial(_fwd_kernel, C=C, Kp=Kp, n_chunks=N,
                               dot=_dot_fn(precision, interpret))
    return pl.pallas_call(
        kernel,
        grid=(BH, V // BV),
        in_specs=[seq_k, seq_v, seq_k, gcs, seq_k, seq_c, state],
        out_specs=[seq_v, state] + [states] * save_states + [seq_v] * save_delta,
        # o, and the saved states and delta, in the operand dtype (bf16 for "default")
        out_shape=[jax.ShapeDtypeStruct((BH, Tp, V), w.dtype),
                   jax.ShapeDtypeStruct((BH, Kp, V), f32)]
        + [jax.ShapeDtypeStruct((BH, N * Kp, V), w.dtype)] * save_states
        + [jax.ShapeDtypeStruct((BH, Tp, V), w.dtype)] * save_delta,
        compiler_params=None if interpret else _triton_params(num_warps, num_stages),
        interpret=interpret,
        name="gdr_state_pass_fwd",
    )(w, u, kd, gc, qd, aqk, s0)


def state_pass_bwd_call(w, u, kd, gc, qd, aqk, states, do, dsf, *, precision, interpret,
                         num_warps, num_stages, block_v):
    BH, Tp, Kp = w.shape
    V, C, N = u.shape[-1], aqk.shape[-1], gc.shape[2]
    BV = _v_tile(V, block_v)
    NV = V // BV
    seq_k, seq_v, seq_c, gcs, state, states_spec = _specs(Tp, Kp, C, N, BV)
    part = lambda last: pl.BlockSpec((None, None, Tp, last), lambda i, j: (j, i, 0, 0))
    part_gc = pl.BlockSpec((None, None, Kp, N), lambda i, j: (j, i, 0, 0))
    f32, dt = jnp.float32, w.dtype  # per-tile cotangents in the operand dtype
    kernel = functools.partial(_bwd_kernel, C=C, Kp=Kp, n_chunks=N,
                               dot=_dot_fn(precision, interpret))
    du, dw, dkd, dgc, dqd, daqk, ds0 = pl.pallas_call(
        kernel,
        grid=(BH, NV),
        in_specs=[seq_k, seq_v, seq_k, gcs, seq_k, seq_c, states_spec, seq_v, state],
        out_specs=[seq_v, part(Kp), part(Kp), part_gc, part(Kp), part(C), state],
        out_shape=[jax.ShapeDtypeStruct((BH, Tp, V), dt),
                   jax.ShapeDtypeStruct((NV, BH, Tp, Kp), dt),
                   jax.ShapeDtypeStruct((NV, BH, Tp, Kp), dt),
                   jax.ShapeDtypeStruct((NV, BH, Kp, N), f32),
                   jax.ShapeDtypeStruct((NV, BH, Tp, Kp), dt),
                   jax.ShapeDtypeStruct((NV, BH, Tp, C), dt),
                   jax.ShapeDtypeStruct((BH, Kp, V), f32)],
        compiler_params=None if interpret else _triton_params(num_warps, num_stages),
        interpret=interpret,
        name="gdr_state_pass_bwd",
    )(w, u, kd, gc, qd, aqk, states, do, dsf)
    # Cotangents in the primal dtypes (bf16 operands for precision="default"), summed over
    # V tiles in fp32 first.
    s = lambda x, like: jnp.sum(x.astype(f32), axis=0).astype(like.dtype)
    return (s(dw, w), du.astype(u.dtype), s(dkd, kd), s(dgc, gc), s(dqd, qd), s(daqk, aqk),
            ds0)  # order of state_pass's args


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def state_pass(w, u, kd, gc, qd, aqk, s0, cfg):
    return state_pass_fwd_call(w, u, kd, gc, qd, aqk, s0, save_states=False,
                                **_call_cfg(cfg, "fwd"))


def _vjp_fwd(w, u, kd, gc, qd, aqk, s0, cfg):
    o, sf, states = state_pass_fwd_call(w, u, kd, gc, qd, aqk, s0, save_states=True,
                                         **_call_cfg(cfg, "fwd"))
    return (o, sf), (w, u, kd, gc, qd, aqk, states)


def _vjp_bwd(cfg, res, cts):
    do, dsf = cts
    return state_pass_bwd_call(*res, do, dsf, **_call_cfg(cfg, "bwd"))


state_pass.defvjp(_vjp_fwd, _vjp_bwd)


# state_pass="splitbwd": the fused forward above (4 dots a step, o written in the loop), also
# saving delta, then the split backward (`pallas_gpu_split.split_bwd`: a sequential kernel of 4
# dots a step, then one parallel-over-chunks kernel summing the key-side cotangents over V).
# mosaic="fwd" (state_pass="mosaic_splitbwd"): the same with the Mosaic GPU forward
# (`pallas_mgpu.py`) instead; "fwd_dh" ("mosaic_dh"): also the backward's sequential kernel in
# Mosaic GPU (`pallas_mgpu_dh.py`); "fwd_dh_dqk" ("mosaic_dqk"): also its parallel kernel
# (`pallas_mgpu_dqk.py`); "" (False): Triton throughout.
# heads (with a Mosaic forward only): o and dO in the caller's layout (`caller_layout`).
@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9))
def state_pass_splitbwd(w, u, kd, gc, qd, aqk, s0, cfg, mosaic, heads=None):
    return _splitbwd_fwd(w, u, kd, gc, qd, aqk, s0, cfg, mosaic, heads, residuals=False)


def _splitbwd_fwd(w, u, kd, gc, qd, aqk, s0, cfg, mosaic, heads=None, residuals=True):
    if heads is not None and not mosaic:
        raise ValueError("o in the caller's layout needs the Mosaic forward (mosaic='fwd', "
                         "'fwd_dh' or 'fwd_dh_dqk')")
    if mosaic:
        from jax.experimental.pallas import mosaic_gpu as plgpu
        from kernels.gated_delta_rule.pallas_mgpu import state_pass_fwd_mgpu
        ip = plgpu.InterpretGPUParams() if dict(cfg)["interpret"] else None
        # o in the operands' dtype (bf16 at "default"), as the Triton forward writes it
        out = state_pass_fwd_mgpu(w, u, kd, gc, qd, aqk, s0, save_states=residuals,
                                  save_delta=residuals, interpret=ip, o_dtype=w.dtype,
                                  heads=heads)
    else:
        out = state_pass_fwd_call(w, u, kd, gc, qd, aqk, s0, save_states=residuals,
                                   save_delta=residuals, **_call_cfg(cfg, "fwd"))
    if not residuals:
        return tuple(out)
    o, sf, states, delta = out
    return (o, sf), split_residuals(w, u, kd, gc, qd, aqk, states, delta)


def _splitbwd_bwd(cfg, mosaic, heads, res, cts):
    return split_bwd_from_residuals(cfg, res, cts, mosaic_dh=mosaic.startswith("fwd_dh"),
                                    mosaic_dqk=mosaic == "fwd_dh_dqk", heads=heads)


state_pass_splitbwd.defvjp(_splitbwd_fwd, _splitbwd_bwd)
