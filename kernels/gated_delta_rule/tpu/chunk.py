"""Pallas TPU (Mosaic) kernel for the chunked gated delta rule.

Why this exists
    On TPU the plain-jnp `reference.chunked` runs its chunk-to-chunk state scan as a
    `lax.scan` of small HBM-resident products, and XLA compiles its backward slowly. These
    kernels keep the [K, V] state (forward) and its gradient (backward) of one (batch, value
    head) in VMEM for the whole sequence and do every chunk's work in one grid step, so every
    chunk product is a full-tile MXU matmul (the kernels are in `kernels.py`).

Numerics
    Same algorithm and contract as `reference.chunked` (read its docstring). Inputs are
    upcast to float32, L2-normalised (use_qk_l2norm: applied *outside* the kernels, in XLA,
    exactly as `reference.prepare` does, and differentiated by JAX), scaled, made head-major
    and padded in XLA; the kernels see float32 only and use precision=HIGHEST matmuls.
    Decay exponents are masked before exp, never clipped: G_i - G_j is formed as
    sum_{j < l <= i} g_l by a matmul of a masked g with a 0/1 matrix, and entries above the
    diagonal become -inf before exp. (I + A)^-1 uses the recursion of
    `reference.unit_lower_inverse` in full [C, C] masked matmuls.
    jax.custom_vjp: the forward kernel also writes the state entering every chunk (one
    [K, V] per chunk, the only residual); the backward kernel walks the chunks in reverse
    and recomputes everything else. dq, dk come out per value head and are summed over each
    key head's group in XLA. Nothing differentiates through a pallas_call.

Constraints
    q, k [B, T, H, K]; v [B, T, HV, V], HV a multiple of H; g, beta [B, T, HV]; initial_state
    [B, HV, K, V] float32. chunk_size must be a multiple of 8 (the f32 sublane tile).
    T is zero-padded to a multiple of chunk_size (g = beta = 0 there: the state passes
    through unchanged), K and V to multiples of 128 (lanes; zero rows/columns of the state
    stay zero). Grid (B, HV, chunks), chunks sequential ("arbitrary"): one TensorCore walks
    a head's sequence. Mosaic kernels cannot be partitioned by XLA: under a sharded jit the
    call must run per shard of batch and heads (the API's `shard_map`); the sequence is never
    split. The backward residual is T/C states of [Kp, Vp] fp32 per (batch, value head):
    8 MiB at T = 8192, C = 64, K = V = 128.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
from jax.experimental.pallas import tpu as pltpu

from kernels.gated_delta_rule import reference
from kernels.gated_delta_rule.tpu.kernels import backward_call, forward_call
from kernels.mesh_context import target_platform

LANES, SUBLANES = 128, 8


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def resolve_interpret(interpret):
    """None: compile with Mosaic when compiling for TPU (`target_platform`: the backend, or
    the abstract mesh's TPU device when lowering ahead of time), else TPU interpret mode on
    the host. True means interpret mode (pltpu.InterpretParams()), False compiles."""
    if interpret is None:
        return False if target_platform() == "tpu" else pltpu.InterpretParams()
    if interpret is True:
        return pltpu.InterpretParams()
    return interpret


def _prepared(q, k, v, g, beta, initial_state, scale, use_qk_l2norm, C):
    """fp32, normalised, scaled, head-major, padded: ([B,H,Tp,Kp], .., [B,HV,Tp,Vp],
    g/beta [B,HV,N,1,C], S0 [B,HV,Kp,Vp])."""
    f32 = jnp.float32
    q, k = q.astype(f32), k.astype(f32)
    if use_qk_l2norm:
        q, k = reference.l2norm(q), reference.l2norm(k)
    q = q * reference.resolve_scale(scale, q.shape[-1])
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    Tp, Kp, Vp = _round_up(T, C), _round_up(K, LANES), _round_up(V, LANES)
    N = Tp // C

    def heads_major(x, D, Dp):  # [B, T, h, D] -> [B, h, Tp, Dp]
        x = jnp.moveaxis(x, 2, 1)
        return jnp.pad(x, ((0, 0), (0, 0), (0, Tp - T), (0, Dp - D)))

    def gate_rows(x):  # [B, T, HV] -> [B, HV, N, 1, C]
        x = jnp.pad(jnp.moveaxis(x.astype(f32), 2, 1), ((0, 0), (0, 0), (0, Tp - T)))
        return x.reshape(B, HV, N, 1, C)

    S0 = (jnp.zeros((B, HV, K, V), f32) if initial_state is None
          else initial_state.astype(f32))
    S0 = jnp.pad(S0, ((0, 0), (0, 0), (0, Kp - K), (0, Vp - V)))
    return (heads_major(q, K, Kp), heads_major(k, K, Kp), heads_major(v.astype(f32), V, Vp),
            gate_rows(g), gate_rows(beta), S0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _core(qh, kh, vh, gr, br, S0, C, interpret):
    o, S_T, _ = forward_call(qh, kh, vh, gr, br, S0, C=C, interpret=interpret)
    return o, S_T


def _core_fwd(qh, kh, vh, gr, br, S0, C, interpret):
    o, S_T, starts = forward_call(qh, kh, vh, gr, br, S0, C=C, interpret=interpret)
    return (o, S_T), (qh, kh, vh, gr, br, starts)


def _core_bwd(C, interpret, res, cotangents):
    qh, kh, vh, gr, br, starts = res
    do, dST = cotangents
    dq, dk, dv, dg, dbeta, dS0 = backward_call(qh, kh, vh, gr, br, starts, do, dST, C=C,
                                               interpret=interpret)
    B, H, Tp, Kp = qh.shape
    group = vh.shape[1] // H  # value heads h*group .. h*group+group-1 read key head h
    dq = dq.reshape(B, H, group, Tp, Kp).sum(axis=2)
    dk = dk.reshape(B, H, group, Tp, Kp).sum(axis=2)
    return dq, dk, dv, dg, dbeta, dS0


_core.defvjp(_core_fwd, _core_bwd)


def _forward(q, k, v, g, beta, initial_state, scale, use_qk_l2norm, C, interpret):
    """Prepare in XLA (differentiated by JAX), run the kernels, unpad."""
    T, K, V = q.shape[1], q.shape[3], v.shape[3]
    prepared = _prepared(q, k, v, g, beta, initial_state, scale, use_qk_l2norm, C)
    o, S_T = _core(*prepared, C, interpret)
    o_BTHV = jnp.moveaxis(o[:, :, :T, :V], 1, 2).astype(v.dtype)
    return o_BTHV, S_T[:, :, :K, :V]


def chunk_gated_delta_rule_pallas_tpu(q, k, v, g, beta, *, scale: Optional[float] = None,
                                      initial_state: Optional[jax.Array] = None,
                                      use_qk_l2norm: bool = False, chunk_size: int = 64,
                                      interpret=None):
    """Returns (o [B, T, HV, V] in v.dtype, final state [B, HV, K, V] float32).

    Inputs are assumed validated by `api.validate`. interpret: None (compile on TPU, TPU
    interpret mode elsewhere), True/False, or a `pltpu.InterpretParams`. Under a sharded jit
    call it per shard (the API does).
    """
    C = int(chunk_size)
    if C % SUBLANES:
        raise ValueError(f"pallas_tpu needs chunk_size to be a multiple of {SUBLANES} "
                         f"(the f32 sublane tile), got {C}")
    B, _, _, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    if initial_state is None:
        initial_state = jnp.zeros((B, HV, K, V), jnp.float32)
    S0 = initial_state.astype(jnp.float32)
    return _forward(q, k, v, g, beta, S0, scale, bool(use_qk_l2norm), C,
                    resolve_interpret(interpret))
