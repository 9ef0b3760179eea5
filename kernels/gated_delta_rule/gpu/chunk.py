"""The chunked gated delta rule on a GPU: the one composition of the Pallas kernels, forward and
backward, each a straight list of kernel calls (as fla's chunk.py).

Why this exists
    The XLA `chunked` reference runs its inter-chunk recurrence as a `lax.scan` of tiny
    matmuls, one launch per chunk, and materialises every per-chunk intermediate in HBM. Here
    one `jax.custom_vjp` runs
        forward   prep forward   (chunk-parallel: w, u, kd, qd, aqk, and T for the backward)
                  state forward  (sequential over chunks: o, the final state, the chunk-entry
                                  states and delta for the backward)
        backward  dh             (sequential, in reverse: dS per chunk, dd = du)
                  dqk            (chunk-parallel: dw, dkd, dqd, daqk, dgc)
                  prep backward  (chunk-parallel: dq, dk, dv, dg, dbeta; one kernel in
                                  Mosaic GPU, three in Triton)
    each slot in Mosaic GPU where its kernel takes the shape, else in Triton (`config.plan`, the
    table); where every slot is Mosaic GPU, dqk and the prep backward are one kernel
    (`grad_mosaic.chunk_grads`: dw, dkd, dqd, daqk never reach HBM). With use_qk_l2norm, q
    and k enter through one more Pallas kernel each way (`qk_input.py`: L2 normalisation,
    q's scale unless the Mosaic preps apply it (`Plan.q_scale`), padding and the cast in one
    pass); head grouping, padding, the decays' sums and the layout are XLA glue around the
    custom_vjp, differentiated by JAX.
    Its speed against fla and jla, and where its time goes: docs/kernels-gpu.md.

    Per chunk n (state S_n entering it):
        delta_n = u_n - w_n S_n
        o_n     = qd_n S_n + Aqk_n delta_n                 (qd = q exp(G), Aqk = masked qk decay)
        S_n+1   = gc_n * S_n + kd_n^T delta_n               (kd = k exp(G_C - G), gc = exp(G_C))
    The backward carries dS = dL/dS_n+1 from the last chunk to the first:
        dd   = kd dS + Aqk^T dO               -> du = dd, dw = -dd S^T, dkd = delta dS^T,
        dqd  = dO S^T, dAqk = dO delta^T, dgc = rowsum(dS * S)
        dS  <- gc dS + qd^T dO - w^T dd

Numerics
    State and accumulation are float32 (inputs of any float dtype are upcast in XLA first).
    Exponents are masked with -inf before `exp`, never clipped; no term is divided by a
    cumulative decay; in-chunk log-decay differences are sums of g over (j, i] at "highest"
    and differences G_i - G_j of the chunk's own cumulative sum at "default" (at most C terms:
    an exponent error of ulp(|G|), `chunk_math.log_decays`). So g down to -20 per token,
    beta in (0, 2) and T = 65536 stay finite. `use_qk_l2norm`: fp32, eps 1e-6 (qk_input).
      "highest": kernel dots TF32x3 on GPU (about fp32 accuracy; exact fp32 in interpret
        mode); every stored intermediate float32.
      "default": kernel dot operands bfloat16 with fp32 accumulation, as fla does (2e-3 to
        6e-3 relative error against float64 in the GPU tests); the chunk operands (w, u, kd,
        qd, aqk), T, the saved states and delta, the backward's dS copies, o before its final
        cast and the key-side cotangents stored in bf16; with bf16 inputs the kernels also
        read q, k, v (after the fp32 l2norm) in bf16 and return their cotangents in bf16. The
        state itself and all accumulation stay fp32; (I + A)^-1 is formed at TF32.
    o is returned in v's dtype; the final state is float32.

Constraints
    Shapes as in `api.py`; float32 compute only (no float64 inputs). K is zero-padded to a
    power of two >= 16 (96 -> 128); V must be a multiple of 16 (Triton dots) and is walked in
    tiles (`KernelConfig.block_v`); the preps zero-pad V to a multiple of their tile
    (`config.prep_v`: 192 stays 192). T is padded to a multiple of chunk_size (a power of two
    >= 16) with q = k = v = g = beta = 0: a = 1, no write, output sliced off. The API checks
    K <= 256, V <= 256 (`supports`). Residual memory for the backward: the chunk-entry states
    [B*HV, T/C, Kp, V], delta [B*HV, T, V] and T = (I + A)^-1 [B*HV, T, C] (bf16 at
    "default", fp32 at "highest"). Under a sharded jit the call must run per shard (the API's
    `shard_map`): XLA cannot partition a Mosaic or Triton call.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from kernels.gated_delta_rule import reference
from kernels.gated_delta_rule.gpu import (chunk_math, grad_mosaic, mosaic_common, prep_mosaic,
                                          prep_mosaic_bwd, prep_triton, qk_input, state_mosaic,
                                          state_mosaic_bwd, state_triton)
from kernels.gated_delta_rule.gpu.config import (KernelConfig, Plan, padded_k, plan,
                                                 prep_v)
from kernels.gated_delta_rule.gpu.triton_common import dot_fn, triton_params

MAX_K, MAX_V = 256, 256  # the head dims the kernels are tested on


def supports(dims: Optional[tuple[int, int]], chunk_size: int) -> Optional[str]:
    """Why these kernels cannot take head dims dims = (K, V) (None: not checked) and
    chunk_size, or None."""
    if dims is not None and (dims[0] > MAX_K or dims[1] > MAX_V or dims[1] % 16):
        return (f"takes K <= {MAX_K} and V <= {MAX_V} a multiple of 16; got K={dims[0]}, "
                f"V={dims[1]}")
    if chunk_size < 16 or chunk_size & (chunk_size - 1):
        return f"takes chunk_size a power of two >= 16; got {chunk_size}"
    return None


def _operand_dtype(p: Plan):
    """Storage of w, u, kd, qd, aqk, T, the states and delta: bf16 where the dots round their
    operands to bf16 anyway."""
    return jnp.bfloat16 if p.precision == "default" else jnp.float32


def _mosaic_interpret(p: Plan):
    from jax.experimental.pallas import mosaic_gpu as plgpu
    return plgpu.InterpretGPUParams() if p.interpret else None


def _triton_prep(p: Plan):
    """The Triton prep kernels' launch and dots (T's recursion at TF32, or TF32x3 at
    "highest")."""
    return dict(C=p.C, block_d=p.block_d, dot=dot_fn(p.precision, p.interpret),
                dot_inv=dot_fn("highest" if p.precision == "highest" else "tf32", p.interpret),
                interpret=p.interpret, decays=p.decays,
                compiler_params=triton_params(p.warps_prep, p.stages_prep, p.interpret))


def _triton_state(p: Plan, backward: bool):
    return dict(precision=p.precision, interpret=p.interpret, block_v=p.block_v,
                num_warps=p.warps_bwd if backward else p.warps_fwd,
                num_stages=p.stages_bwd if backward else p.stages_fwd)


def _kernel_scale(p: Plan):
    """The factor the Mosaic preps apply to q (1: XLA scaled q before the kernels)."""
    return 1.0 if p.q_scale is None else p.q_scale


def _state_block(p: Plan):
    """The Mosaic state passes' V tile: the whole V = 96 of the ladder's heads, else 64."""
    whole = mosaic_common.BV_WHOLE_96
    return whole if p.state_v == whole else mosaic_common.BV


def _heads(p: Plan, o: bool = False):
    """The caller's layout's heads for q, k, v (or, with o, for o and dO), else None."""
    return p.heads if (p.o_caller_layout if o else p.caller_layout) else None


# ---------------------------------------------------------------------------------------------
# The kernels, forward and backward. q, k, v: [B*HV, Tp, Kp | Vp], or the caller's layout
# [B, Tp, HV * (Kp | Vp)]; g: `chunk_math.decay_input`; beta [B*HV, Tp]; gc [B*HV, Kp, N]
# (exp(G_C) repeated over Kp); s0 [B*HV, Kp, V] fp32.

def _forward(q, k, v, g, beta, gc, s0, p: Plan, residuals: bool):
    V = s0.shape[-1]
    if p.prep_fwd == "mosaic":
        prep = prep_mosaic.prep_fwd(q, k, v, g, beta, C=p.C, save_inverse=residuals,
                                    scale=_kernel_scale(p), heads=_heads(p),
                                    interpret=_mosaic_interpret(p))
    else:
        prep = prep_triton.prep_fwd(q, k, v, g, beta, out_dtype=_operand_dtype(p),
                                    save_inverse=residuals, **_triton_prep(p))
    w, u, kd, qd, aqk = prep[:5]
    if p.state == "mosaic":  # o in the operands' dtype (bf16), as the Triton forward writes it
        whole96 = _state_block(p) == mosaic_common.BV_WHOLE_96  # reads u's first 96 columns
        state = state_mosaic.state_fwd(w, u if whole96 else u[..., :V], kd, gc, qd, aqk, s0,
                                       residuals=residuals, o_dtype=w.dtype,
                                       heads=_heads(p, o=True), block_v=_state_block(p),
                                       interpret=_mosaic_interpret(p))
    else:
        state = state_triton.state_fwd(w, u[..., :V], kd, gc, qd, aqk, s0, residuals=residuals,
                                       **_triton_state(p, backward=False))
    o, sf = state[:2]
    if not residuals:
        return (o, sf), None
    (T,), (states, delta) = prep[5:], state[2:]
    return (o, sf), (q, k, v, g, beta, T, w, kd, gc, qd, aqk, states, delta)


def _backward(p: Plan, res, cts):
    q, k, v, g, beta, T, w, kd, gc, qd, aqk, states, delta = res
    do, dsf = cts
    dt = w.dtype
    if p.state == "mosaic":  # bf16 out, the operand dtype at "default"
        dstates, dd, ds0 = state_mosaic_bwd.dh(w, kd, gc, qd, aqk, do, dsf,
                                               heads=_heads(p, o=True),
                                               block_v=_state_block(p),
                                               interpret=_mosaic_interpret(p))
        dstates, dd = dstates.astype(dt), dd.astype(dt)
    else:
        dstates, dd, ds0 = state_triton.dh(w, kd, gc, qd, aqk, do, dsf,
                                           **_triton_state(p, backward=True))
    if p.dqk == "fused":  # dqk and the prep backward in one kernel
        dq, dk, dv, dg, dbeta, dgc = grad_mosaic.chunk_grads(
            q, k, v, g, beta, T, states, dstates, delta, dd, do, C=p.C,
            scale=_kernel_scale(p), heads=_heads(p), interpret=_mosaic_interpret(p))
        return _cast_grads((dq, dk, dv, dg, dbeta, dgc, ds0), (q, k, v, g, beta, gc, dsf))
    dw, dkd, dqd, daqk, dgc = state_triton.dqk(
        states, dstates, delta, dd, do, C=p.C, out_dtype=dt, heads=_heads(p, o=True),
        **_triton_state(p, backward=True))
    du = dd  # u was sliced to V for the state pass: its padding columns get no cotangent
    Vp = v.shape[-1] // (p.heads if p.caller_layout else 1)
    if Vp != du.shape[-1]:
        du = jnp.pad(du, [(0, 0), (0, 0), (0, Vp - du.shape[-1])])
    if p.prep_bwd == "mosaic":
        dq, dk, dv, dg, dbeta = prep_mosaic_bwd.prep_bwd(
            q, k, v, g, beta, T, dw, du, dkd, dqd, daqk, C=p.C, scale=_kernel_scale(p),
            heads=_heads(p), interpret=_mosaic_interpret(p))
    else:
        dq, dk, dv, dg, dbeta = prep_triton.prep_bwd(q, k, v, g, beta, T, dw, du, dkd, dqd,
                                                     daqk, heads=_heads(p), **_triton_prep(p))
    return _cast_grads((dq, dk, dv, dg, dbeta, dgc, ds0), (q, k, v, g, beta, gc, dsf))


def _cast_grads(grads, primals):
    """The cotangents in their primals' dtypes; dgc [BH, N, Kp] as gc's [BH, Kp, N]."""
    dq, dk, dv, dg, dbeta, dgc, ds0 = grads
    grads = (dq, dk, dv, dg, dbeta, jnp.swapaxes(dgc, 1, 2), ds0)
    return tuple(d.astype(x.dtype) for d, x in zip(grads, primals))


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def _kernels(q, k, v, g, beta, gc, s0, p: Plan):
    """(o [B*HV, Tp, V] or the caller's layout, in the operands' dtype; final state fp32)."""
    return _forward(q, k, v, g, beta, gc, s0, p, residuals=False)[0]


_kernels.defvjp(functools.partial(_forward, residuals=True), _backward)


def chunk_gated_delta_rule_pallas_gpu(
    q, k, v, g, beta, *,
    scale: Optional[float] = None,
    initial_state: Optional[jax.Array] = None,
    use_qk_l2norm: bool = False,
    chunk_size: int = 64,
    precision: str = "highest",
    interpret: bool = False,
    config: KernelConfig = KernelConfig(),
    pad_o: bool = False,
):
    """Same contract as `reference.chunked`: returns (o [B,T,HV,V] in v.dtype, final state fp32).
    With pad_o, o is [B, T, HV, Vo] with Vo >= V: the kernels' value width, zero past V (see
    `api.chunk_gated_delta_rule`).

    precision: "highest" (TF32x3 kernel dots) or "default" (bf16 dot operands, fp32
    accumulation; the Mosaic GPU kernels where they take the shape). interpret=True runs the
    kernels in Pallas' and the Mosaic GPU interpreters (CPU tests); otherwise they compile for
    a CUDA GPU (Hopper for the Mosaic ones). config: the Triton kernels' launch (benchmarks).
    """
    C = int(chunk_size)
    if C < 16 or C & (C - 1):
        raise ValueError(f"pallas_gpu needs chunk_size a power of two >= 16, got {C}")
    B, T, HV, K, V = (*v.shape[:3], k.shape[-1], v.shape[-1])
    N = -(-T // C)
    Tp, Kp, BH = N * C, padded_k(K), B * HV
    # bf16 callers at "default": the kernels round q, k, v to bf16 at every dot anyway and the
    # caller's gradients are bf16; handing them over in bf16 halves the bytes of their reads,
    # layout copies and residuals. fp32 callers keep fp32 (and fp32 gradients).
    qkv_dt = (jnp.bfloat16 if precision == "default"
              and jnp.result_type(q, k, v) == jnp.bfloat16 else jnp.float32)
    q_scale = reference.resolve_scale(scale, K)
    p = plan(precision, interpret, config, C=C, Kp=Kp, V=V, B=B, HV=HV,
             bf16_qkv=qkv_dt == jnp.bfloat16,
             q_scale=q_scale if isinstance(q_scale, (int, float)) else None)
    dt = reference.compute_dtype(jnp.result_type(q, k, v, g, beta))
    if dt != jnp.float32:
        raise TypeError(f"pallas_gpu computes in float32; got inputs promoting to {dt}")
    # q and k as [B, Tp, H, Kp] in qkv_dt. q's scale: inside the Mosaic preps where the plan
    # says so (a pass over q and one over dq fewer), else here. With use_qk_l2norm one kernel
    # pass each way (qk_input.py); without it XLA's scale, pad and cast fuse or vanish (a
    # bf16 -> fp32 -> bf16 round trip is dropped), where a kernel would add a pass.
    s = 1.0 if p.q_scale is not None else q_scale
    static = isinstance(s, (int, float))
    if use_qk_l2norm:
        qf, kf = (qk_input.qk_input(x, Tp, Kp, float(f), qkv_dt, interpret)
                  for x, f in ((q, s if static else 1.0), (k, 1.0)))
        if not static:
            qf = (qf * s).astype(qkv_dt)
    else:
        pad_qk = lambda x: jnp.pad(x, [(0, 0), (0, Tp - T), (0, 0), (0, Kp - K)]).astype(qkv_dt)
        qf = q.astype(jnp.float32)
        qf, kf = pad_qk(qf if static and s == 1 else qf * s), pad_qk(k.astype(jnp.float32))
    group = HV // q.shape[2]
    if group > 1:  # value head j reads key head j // group
        qf, kf = jnp.repeat(qf, group, axis=2), jnp.repeat(kf, group, axis=2)
    vf, gf, bf = v.astype(jnp.float32), g.astype(jnp.float32), beta.astype(jnp.float32)
    Vp = prep_v(V, p.block_d)
    gc_, bc = (reference._to_chunks(x, Tp, C) for x in (gf, bf))  # [B, HV, N, C]
    if p.caller_layout:  # [B, Tp, HV, d] -> [B, Tp, HV * d]: a reshape
        vf = jnp.pad(vf, [(0, 0), (0, Tp - T), (0, 0), (0, Vp - V)])
        qkv = (x.reshape(B, Tp, -1) for x in (qf, kf, vf))
    else:
        vc = reference._to_chunks(vf, Tp, C)
        vc = vc if Vp == V else jnp.pad(vc, [(0, 0)] * 4 + [(0, Vp - V)])
        qkv = (jnp.moveaxis(qf, 2, 1).reshape(BH, Tp, Kp), jnp.moveaxis(kf, 2, 1).reshape(
            BH, Tp, Kp), vc.reshape(BH, Tp, Vp))
    q_in, k_in, v_in = (x.astype(qkv_dt) for x in qkv)
    g_in = chunk_math.decay_input(gc_.reshape(BH, Tp), C, p.decays)
    gc_vec = jnp.broadcast_to(jnp.exp(jnp.sum(gc_, axis=-1)).reshape(BH, 1, N), (BH, Kp, N))
    Vs = p.state_v  # the state passes' width: V, or Vp (zero columns) behind the Mosaic prep
    if initial_state is None:
        s0 = jnp.zeros((BH, Kp, Vs), jnp.float32)
    else:
        s0 = initial_state.astype(jnp.float32).reshape(BH, K, V)
        if (Kp, Vs) != (K, V):
            s0 = jnp.pad(s0, ((0, 0), (0, Kp - K), (0, Vs - V)))
    o, sf = _kernels(q_in, k_in, v_in, g_in, bc.reshape(BH, Tp), gc_vec, s0, p)
    if p.o_caller_layout:
        o_BTHV = o.reshape(B, Tp, HV, Vs)[:, :T]
    else:
        o_BTHV = jnp.moveaxis(o.reshape(B, HV, Tp, Vs), 1, 2)[:, :T]
    # o's columns past V are zero (so are u's and the state's); a consumer that reads only the
    # first V saves the slice here and, in the backward, the pad of dO that is its transpose
    o_BTHV = o_BTHV if pad_o else o_BTHV[..., :V]
    return o_BTHV.astype(v.dtype), sf.reshape(B, HV, Kp, Vs)[:, :, :K, :V]
