"""Pallas GPU (Triton lowering) kernel for the chunked gated delta rule, forward and backward.

Why this exists
    The XLA `chunked` reference runs its inter-chunk recurrence as a `lax.scan` of tiny
    matmuls, one launch per chunk, and materialises every per-chunk intermediate in HBM.
    Here the work is three kinds of Pallas program, each under its own `jax.custom_vjp`:
      1. prep: the chunk-local WY transform (A, (I + A)^-1 by recursive 2x2 blocks, w, u,
         the masked q k^T, q exp(G), k exp(G_C - G)), parallel over (batch x value head,
         chunk). prep="pallas_splitbwd" runs the forward as one Triton kernel that also
         saves (I + A)^-1 and the backward as three kernels reading it
         (`pallas_gpu_prep_split.py`); prep="pallas_split" three kernels each way;
         prep="pallas" (`pallas_gpu_prep.py`) one kernel each way, the backward recomputing
         everything per chunk; prep="xla" batched XLA ops (`_chunk_prep`) differentiated by
         JAX autodiff; prep="mosaic" the forward in Mosaic GPU (`pallas_mgpu_prep.py`,
         "default" only) with the three backward kernels. All are tested. prep="auto" (the
         default) is "mosaic" where it takes the shape, else "pallas_splitbwd"
         (`pallas_gpu_auto.auto_prep`).
      2. the state pass: one program per (batch x value head, V tile) walks the chunks with
         the state [K, BV] in registers, writing o (and, for the backward, each chunk's entry
         state and, for the split backward, delta); by default (state_pass="auto") the Mosaic
         GPU kernel of `pallas_mgpu.py` where it takes the shape, else the Triton one;
      3. its backward: by default ("auto" resolves to "mosaic_dqk", "mosaic_dh" or
         "splitbwd") split as fla splits it (`pallas_gpu_split.split_bwd`): a sequential
         kernel carries dS over the chunks in reverse and writes each chunk's dS and dd (a
         Mosaic GPU kernel under "mosaic_dh" and "mosaic_dqk", `pallas_mgpu_dh.py`), then one
         parallel-over-chunks kernel computes the rest (Mosaic GPU under "mosaic_dqk",
         `pallas_mgpu_dqk.py`). state_pass="triton" instead does all of it in one sequential
         kernel (the fused backward, `pallas_gpu_state.py`).
    With the Mosaic prep the kernels read q, k, v, dO and write o, dq, dk, dv in the caller's
    layout (caller_layout, `caller_layout.py`), so XLA transposes none of them.
    H200, B4 T4096 H16 K=V=128, "default", forward+backward: 1.569 ms against fla's 2.742
    (do_bench, host launches included) or 1.687 (its GPU time alone, a CUDA graph) and XLA's
    `chunked` 9.997, one run (twelfth session; every version in experiments/LOG.md).
    q/k L2 normalisation, scale, head grouping and padding are XLA glue around them.

    Per chunk n (state S_n entering it; shapes per program: C x Kp, C x BV, Kp x BV):
        delta_n = u_n - w_n S_n
        o_n     = qd_n S_n + Aqk_n delta_n                 (qd = q exp(G), Aqk = masked qk decay)
        S_n+1   = gc_n * S_n + kd_n^T delta_n               (kd = k exp(G_C - G), gc = exp(G_C))
    The backward carries dS = dL/dS_n+1 from the last chunk to the first:
        dd   = kd dS + Aqk^T dO               -> du = dd, dw = -dd S^T, dkd = delta dS^T,
        dqd  = dO S^T, dAqk = dO delta^T, dgc = rowsum(dS * S)
        dS  <- gc dS + qd^T dO - w^T dd
    The fused backward writes key-side gradients per V tile, summed in XLA; the split one sums
    them over V in its parallel kernel.

Numerics
    State and accumulation are float32 (inputs of any float dtype are upcast in XLA first);
    with precision="highest" every stored intermediate is float32 too. Exponents are masked
    with -inf before `exp`, never clipped; no term is divided by a cumulative decay; in-chunk
    log-decay differences are sums of g over (j, i] at "highest" and, at "default",
    differences G_i - G_j of the chunk's own cumulative sum (at most C terms, never the
    sequence's: an exponent error of ulp(|G|), see `exact_decays`). So g down to -20 per
    token, beta in (0, 2) and T = 65536 stay finite.
    `use_qk_l2norm` is applied outside the kernels, in XLA glue (fp32, eps 1e-6), not fused.
    `precision` (the API uses "highest"; call this module for "default"):
      "highest": kernel dots TF32x3 on GPU (three tensor-core passes, about fp32 accuracy;
        exact fp32 in interpret mode); the XLA prep (prep="xla") at Precision.HIGHEST.
      "default": kernel dot operands cast to bfloat16 with fp32 accumulation, as
        flash-linear-attention does (~4e-3 relative error measured in interpret mode); the
        chunk operands (w, u, kd, qd, Aqk), the saved states and delta, the backward's dS
        copies, o before its final cast and the per-tile cotangents are stored in bf16 (half
        the bytes); with bf16 inputs the Pallas preps also read q, k, v (after the fp32
        l2norm) in bf16 and return their cotangents in bf16; the state itself and all
        accumulation stay fp32. XLA prep at DEFAULT (TF32 on GPU). The log-decay sums are
        fp32 scans and (I + A)^-1 is at TF32 (the Pallas preps).
    o is returned in v's dtype; the final state is float32.

Constraints
    Shapes as in `api.py`. K is zero-padded to a power of two >= 16 (96 -> 128, 192 -> 256);
    zero columns of q, k, w, kd change nothing. V is split into tiles BV = the largest power of
    two dividing V, capped at block_v (32 or 64; 96 -> 32, 192 -> 64 at 64); Triton dots need
    BV >= 16, so V must be a multiple of 16 on GPU (64, 96, 128, 192, 256 all are). The Pallas
    preps zero-pad V to a multiple of their V tile (`_prep_v`: 192 stays 192). T is padded to
    a multiple of chunk_size (a power of two >= 16) with q = k = v = g = beta = 0: a = 1, no
    write, output sliced off.
    Residual memory for the backward: the chunk-entry states [B*HV, T/C, Kp, V] (bf16 at
    "default", fp32 at "highest"), with state_pass="splitbwd" or "split" delta [B*HV, T, V] in
    the same dtype, and with prep="pallas_split" or "pallas_splitbwd" (I + A)^-1
    [B*HV, T, C] (float32; with "pallas_splitbwd" in the states' dtype).

Mosaic GPU plan (the Triton lowering is deprecated in jax 0.11; steps 1-2 are built, in
pallas_mgpu.py and pallas_mgpu_bwd.py: state_pass="mosaic" and "mosaic_splitbwd"; step 3's
forward in pallas_mgpu_prep.py, prep="mosaic", still reading the [BH, Tp, *] layout)
    1. Same split. The state pass as a `plgpu.kernel` with one warpgroup per (bh, V tile of
       64), S [Kp, 64] fp32 as a wgmma accumulator in registers. Per chunk, TMA-load w, kd, qd
       (bf16, C x Kp), u (C x 64), Aqk (C x C) into a 2-3 stage SMEM ring with mbarriers
       (`plgpu.emit_pipeline` over chunks), so loads of chunk n+1 overlap the math of chunk n.
    2. The products w S and qd S need S as a wgmma B operand in SMEM: store S (bf16 for
       "default", split hi/lo bf16 for "highest") to SMEM once per chunk, fence, then
       `plgpu.wgmma(acc, w_smem, S_smem)`; kd^T delta uses the transposed SMEM view of kd.
    3. The prep as a parallel-over-chunks Mosaic kernel reading q, k, v, g, beta in their
       [B, T, H, *] bf16 layout (BlockSpec index maps do the head grouping, no XLA repeat or
       transpose), fusing the l2norm, and writing bf16 w, u, kd, qd, Aqk: half the bytes the
       state pass reads now. (I + A)^-1 by the same 2x2-block recursion as wgmma products.
    4. Warp specialisation: one producer warp issuing TMA, two consumer warpgroups each
       owning a 64-wide V tile, to fill 132 SMs at B*HV*V/64 programs.
    Measure each step against this Triton version with benchmarks/gdn_kernel.py.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

# pallas_gpu_state as a module: its `state_pass` would be shadowed by the argument of that name
from kernels.gated_delta_rule import pallas_gpu_prep, pallas_gpu_state, reference
from kernels.gated_delta_rule.pallas_gpu_prep_split import (prep_bwd_split, prep_fwd_saving_inverse,
                                                            prep_fwd_split)
from kernels.gated_delta_rule.pallas_gpu_common import (_next_pow2, _operand_dtype, _prep_cfg,
                                                         _prep_v, kernel_config)
from kernels.gated_delta_rule.pallas_gpu_auto import (auto_caller_layout, auto_prep,
                                                      auto_state_pass)
from kernels.gated_delta_rule.pallas_gpu_split import state_pass_split

PRECISIONS = ("highest", "default")
# Where the chunk-local WY transform runs: XLA ops, or Pallas kernels, one each way ("pallas"),
# three each way ("pallas_split", `pallas_gpu_prep_split.py`), or one forward saving T and three
# backward ("pallas_splitbwd"); or "mosaic": that forward in Mosaic GPU (`pallas_mgpu_prep.py`,
# tenth session; the default where it takes the shape since the eleventh) with the same
# backward. name -> (forward alone, returning the
# outputs; forward before a backward, returning (outputs, residuals beyond the inputs);
# backward, taking the inputs, those residuals and the cotangents). A forward alone
# (evaluation) writes no T it won't read.


def _prep_fwd_mosaic(*args, **kw):
    from kernels.gated_delta_rule.pallas_mgpu_prep import prep_fwd_mosaic  # imports Mosaic GPU
    return prep_fwd_mosaic(*args, **kw)


def _prep_fwd_mosaic_saving_inverse(*args, **kw):
    *out, T = _prep_fwd_mosaic(*args, save_inverse=True, **kw)
    return tuple(out), (T,)


_PREP = {"pallas": (pallas_gpu_prep.prep_fwd,
                    lambda *a, **kw: (pallas_gpu_prep.prep_fwd(*a, **kw), ()),
                    pallas_gpu_prep.prep_bwd),
         "pallas_split": (lambda *a, **kw: prep_fwd_split(*a, **kw)[0], prep_fwd_split,
                          prep_bwd_split),
         "pallas_splitbwd": (pallas_gpu_prep.prep_fwd, prep_fwd_saving_inverse, prep_bwd_split),
         "mosaic": (_prep_fwd_mosaic, _prep_fwd_mosaic_saving_inverse, prep_bwd_split)}
PREPS = ("xla", *_PREP)
# The preps whose kernels can read q, k, v (and write their gradients) in the caller's layout
# [B, Tp, HV * K] (`caller_layout.py`; caller_layout=True).
_CALLER_LAYOUT = ("pallas_splitbwd", "mosaic")
# Which kernels walk the chunks: "triton" (fused both ways, pallas_gpu_state.py), "split"
# (Triton, sequential state kernels plus parallel ones for the rest: pallas_gpu_split.py),
# "splitbwd" (the fused forward, the split backward), "mosaic" (pallas_mgpu.py),
# "mosaic_splitbwd" (its forward, the split backward), "mosaic_dh" (also the split backward's
# sequential kernel in Mosaic GPU, pallas_mgpu_dh.py), "mosaic_dqk" (its parallel kernel too,
# pallas_mgpu_dqk.py; the default since the twelfth session).
STATE_PASSES = ("triton", "split", "splitbwd", "mosaic", "mosaic_splitbwd", "mosaic_dh",
                "mosaic_dqk")

# The state passes with the split backward, and which of their kernels run in Mosaic GPU.
_SPLITBWD_MOSAIC = {"splitbwd": "", "mosaic_splitbwd": "fwd", "mosaic_dh": "fwd_dh",
                    "mosaic_dqk": "fwd_dh_dqk"}


# ---------------------------------------------------------------------------------------------
# Chunk-local WY transform in Pallas (the preps of _PREP), under its own custom_vjp.

def _heads(heads):  # q, k, v in the caller's layout: only the _CALLER_LAYOUT preps take it
    return {} if heads is None else {"heads": heads}


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
def _prep_pallas(q, k, v, g, beta, C, cfg, prep, heads):
    return _PREP[prep][0](q, k, v, g, beta, C=C, out_dtype=_operand_dtype(cfg),
                          **_prep_cfg(cfg), **_heads(heads))


def _prep_pallas_fwd(q, k, v, g, beta, C, cfg, prep, heads):
    out, saved = _PREP[prep][1](q, k, v, g, beta, C=C, out_dtype=_operand_dtype(cfg),
                                **_prep_cfg(cfg), **_heads(heads))
    return out, (q, k, v, g, beta, *saved)


def _prep_pallas_bwd(C, cfg, prep, heads, res, cts):
    grads = _PREP[prep][2](*res, *cts, C=C, **_prep_cfg(cfg), **_heads(heads))
    # dq, dk, dv: fp32 from prep="pallas" (XLA fuses the cast to bf16 into its layout copy),
    # already in q's dtype from prep_bwd_split (the casts below are then no-ops).
    return tuple(d.astype(x.dtype) for d, x in zip(grads, res[:5]))


_prep_pallas.defvjp(_prep_pallas_fwd, _prep_pallas_bwd)


# ---------------------------------------------------------------------------------------------
# XLA side: chunk-local WY transform (parallel over chunks), layout and padding.

def _chunk_prep(q, k, v, g, beta, *, C, xla_precision):
    """Prepared [B, T_pad, HV, *] fp32 inputs -> per-chunk operands of the state pass.

    Same formulas as `reference.chunked` (see there for why G_diff is a direct masked sum).
    Returns w, kd, qd [B,HV,N,C,K]; u [B,HV,N,C,V]; aqk [B,HV,N,C,C]; gc [B,HV,N].
    """
    _einsum = functools.partial(jnp.einsum, precision=xla_precision)
    row = jnp.arange(C)[:, None]
    col = jnp.arange(C)[None, :]
    G = jnp.cumsum(g, axis=-1)
    G_diff = jnp.cumsum(jnp.where(row > col, g[..., :, None], 0.0), axis=-2)
    decay_strict = jnp.exp(jnp.where(row > col, G_diff, -jnp.inf))
    decay_causal = jnp.exp(jnp.where(row >= col, G_diff, -jnp.inf))
    kk = _einsum("bhnik,bhnjk->bhnij", k, k)
    T_inv = reference.unit_lower_inverse(beta[..., :, None] * kk * decay_strict, xla_precision)
    u = _einsum("bhnij,bhnjv->bhniv", T_inv, beta[..., None] * v)
    w = _einsum("bhnij,bhnjk->bhnik", T_inv, (beta * jnp.exp(G))[..., None] * k)
    aqk = _einsum("bhnik,bhnjk->bhnij", q, k) * decay_causal
    qd = q * jnp.exp(G)[..., None]
    kd = k * jnp.exp(G_diff[..., -1, :])[..., None]
    gc = jnp.exp(G[..., -1])
    return w, u, kd, qd, aqk, gc


def chunk_gated_delta_rule_pallas_gpu(
    q, k, v, g, beta, *,
    scale: Optional[float] = None,
    initial_state: Optional[jax.Array] = None,
    use_qk_l2norm: bool = False,
    chunk_size: int = 64,
    precision: str = "highest",
    interpret: bool = False,
    num_warps: Optional[int] = None,
    num_warps_bwd: Optional[int] = None,
    num_warps_prep: int = 4,
    num_stages: Optional[int] = None,
    block_v: Optional[int] = None,
    prep: str = "auto",
    block_d: int = 64,
    state_pass: str = "auto",
    exact_decays: Optional[bool] = None,
    prep_launch: Optional[dict] = None,
    decays_in_xla: bool = False,
    caller_layout: Optional[bool] = None,
):
    """Same contract as `reference.chunked`: returns (o [B,T,HV,V] in v.dtype, final state fp32).

    interpret=True runs the kernels in Pallas interpret mode (CPU tests); otherwise they are
    compiled by the Triton lowering and need a CUDA GPU. num_warps / num_warps_bwd / num_stages
    are the Triton launch parameters of the forward and backward state-pass kernels, and
    num_warps_prep of the prep kernels (4: measured faster than 8, see `_prep_cfg`);
    num_warps=None picks 4, or 8 when the state tile Kp x BV exceeds 128 x 64;
    num_warps_bwd=None picks 8 for the fused backward (state_pass="triton"), 4 for the split
    one; num_stages=None pipelines the bf16 ("default") state-pass kernels 3 deep at Kp <= 128
    (at Kp = 256 the forward 2 deep, the backward not), and nothing at "highest" (see
    `_call_cfg`; the prep kernels take num_stages or 1).
    block_v caps the V tile (more, narrower programs fill more SMs when B*HV is small);
    None picks 32 at precision="highest"; at "default" 64, or 32 where B*HV x (V / 32)
    sequential programs still fit the GPU's multiprocessors one each (`_default_block_v`).
    Why 32 at "highest": at TF32x3 the fp32
    operands of every dot are staged in shared memory, and the backward state pass at Kp=128,
    BV=64 over-filled it on an H200 (2026-11-27); BV=32 halves its shared memory
    (benchmarks/triton_resources.py: 196608 -> 98304 B with pip triton 3.6). Not yet timed.
    block_d caps the K and V width of every dot operand in the Pallas prep kernels,
    which loop over tiles of that width to bound their live registers and shared memory.
    state_pass="split" keeps only the recurrence in the sequential kernels and computes the
    output and the non-recurrent gradients in parallel-over-chunks kernels
    (`pallas_gpu_split.py`, as fla does); any precision. state_pass="splitbwd"
    runs the fused forward, which also saves delta, and the split backward. "triton" is fused
    both ways. state_pass="mosaic" walks the chunks
    with the Mosaic GPU kernels of `pallas_mgpu.py` (TMA + wgmma; precision="default" only,
    K <= 128, V a multiple of 64; interpret=True runs them in the Mosaic GPU interpreter)
    instead of the Triton ones; state_pass="mosaic_splitbwd" runs the Mosaic forward (saving
    delta) with the Triton split backward (same constraints); "mosaic_dh" also runs that
    backward's sequential kernel in Mosaic GPU (`pallas_mgpu_dh.py`; the parallel one stays
    Triton; same constraints); "mosaic_dqk" the parallel one too (`pallas_mgpu_dqk.py`; also
    V <= 192). state_pass="auto" (the default) picks "mosaic_dqk" where those constraints
    hold and interpret=False, "mosaic_dh" where only V > 192 fails, else "splitbwd"
    (`pallas_gpu_auto.auto_state_pass`, with the measurements). prep: see the
    module docstring; "auto" (the default) picks "mosaic" on the same terms
    (`pallas_gpu_auto.auto_prep`).
    exact_decays (Pallas preps only): True sums each in-chunk log-decay difference over its own
    terms (masked [C, C] scans); False takes differences of one cumulative sum, G_i - G_j, as
    fla does, with an absolute exponent error of ulp(|G|) (see
    `pallas_gpu_prep._log_decays`). None: True at "highest", False at "default".
    decays_in_xla (with exact_decays False): the chunks' cumulative log-decays G and the
    chunk-total complements logF are summed by XLA ops before the prep kernels, which then run
    no scans and return cotangents of G and logF for JAX to map back to g (as fla's
    chunk_local_cumsum does; `pallas_gpu_prep.decay_input`). prep="mosaic" always does. With
    the Triton prep on an H200 (eleventh session): 3-4% off forward+backward.
    caller_layout (preps "pallas_splitbwd" and "mosaic"): the prep kernels read q, k, v and
    write dq, dk, dv in the caller's [B, T, HV, K] layout (seen as [B, Tp, HV * Kp]), and
    with a split-backward Mosaic state pass (each "mosaic_*") the state kernels write
    o and read dO in it, instead of XLA transposing each to [B * HV, Tp, *] and back (0.34 ms
    of 2.2 forward+backward at the headline shape, H100 trace, eleventh session;
    `caller_layout.py`). Bitwise the same results. None (the default): True with the Mosaic
    prep, where it was timed (`pallas_gpu_auto.auto_caller_layout`), else False.
    prep_launch: {prep kernel name: (num_warps, num_stages)} for single Pallas prep kernels
    (`pallas_gpu_common.PREP_KERNELS`, e.g. {"gdr_prep_bwd_decay": (8, 3)}); the others run
    at num_warps_prep and num_stages (or 1). For launch sweeps and per-kernel tuning.
    """
    if prep not in PREPS + ("auto",):
        raise ValueError(f"prep={prep!r}; expected 'auto' or one of {PREPS}")
    if state_pass not in STATE_PASSES + ("auto",):
        raise ValueError(f"state_pass={state_pass!r}; expected 'auto' or one of {STATE_PASSES}")
    if state_pass.startswith("mosaic") and precision != "default":
        raise ValueError(f'state_pass="{state_pass}" has bf16 wgmma operands only: use '
                         'precision="default"')
    if prep == "mosaic" and (precision != "default" or exact_decays):  # bf16 wgmma operands
        raise ValueError('prep="mosaic" needs precision="default" and the outer-difference '
                         f'decays; got precision={precision!r}, exact_decays={exact_decays}')
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {PRECISIONS}")
    C = int(chunk_size)
    if C < 16 or C & (C - 1):
        raise ValueError(f"pallas_gpu needs chunk_size a power of two >= 16, got {C}")
    xla_precision = lax.Precision.HIGHEST if precision == "highest" else lax.Precision.DEFAULT
    qf, kf, vf, gf, bf, dt = reference.prepare(q, k, v, g, beta, scale, use_qk_l2norm)
    if dt != jnp.float32:
        raise TypeError(f"pallas_gpu computes in float32; got inputs promoting to {dt}")
    B, T, HV, K = kf.shape
    V = vf.shape[-1]
    N = -(-T // C)
    Tp = N * C
    Kp = max(16, _next_pow2(K))
    if state_pass == "auto":
        state_pass = auto_state_pass(precision, interpret, C, Kp, V)
    if Kp != K:  # zero key columns: no effect on any product
        padk = lambda x: jnp.pad(x, [(0, 0)] * 3 + [(0, Kp - K)])
        qf, kf = padk(qf), padk(kf)
    qc, kc, vc, gc_, bc = (reference._to_chunks(x, Tp, C) for x in (qf, kf, vf, gf, bf))
    BH = B * HV
    flat = lambda x: x.reshape(BH, Tp, x.shape[-1])
    make_cfg = functools.partial(
        kernel_config, precision, interpret, Kp, V, num_warps=num_warps,
        num_warps_bwd=num_warps_bwd, num_warps_prep=num_warps_prep, num_stages=num_stages,
        block_v=block_v, block_d=block_d, BH=B * HV, exact_decays=exact_decays,
        prep_launch=prep_launch)
    cfg = make_cfg(decays_in_xla=decays_in_xla)
    Vp = _prep_v(V, dict(cfg)["block_d"])
    if prep == "auto":
        prep = auto_prep(precision, interpret, dict(cfg)["decays"], C, Kp, Vp)
    if caller_layout is None:
        caller_layout = auto_caller_layout(prep)
    if caller_layout and prep not in _CALLER_LAYOUT:
        raise ValueError(f"caller_layout needs prep in {_CALLER_LAYOUT}; got prep={prep!r}")
    if prep == "mosaic":
        from kernels.gated_delta_rule.pallas_mgpu_prep import takes_shape
        if not takes_shape(C, Kp, Vp):
            raise ValueError(f'prep="mosaic" takes chunk_size 64, K padded to 64 or 128 and '
                             f'V to a multiple of 64 up to 256; got C={C}, Kp={Kp}, Vp={Vp}')
        if dict(cfg)["decays"] != "xla":  # its kernel reads G and logF summed by XLA
            cfg = make_cfg(decays_in_xla=True)
    if prep == "xla":
        w, u, kd, qd, aqk, gcn = _chunk_prep(qc, kc, vc, gc_, bc, C=C,
                                             xla_precision=xla_precision)
        w, u, kd, qd, aqk = (flat(x).astype(_operand_dtype(cfg)) for x in (w, u, kd, qd, aqk))
    else:
        # bf16 callers at "default": the prep kernels round q, k and v to bf16 at every dot
        # anyway, and the caller's gradients are bf16; handing q, k, v over in bf16 halves the
        # bytes of their XLA layout copies, of the kernels' reads and of the backward's
        # residuals. fp32 callers keep fp32 (and fp32 gradients). g and beta stay fp32.
        qkv_dt = (jnp.bfloat16 if precision == "default"
                  and jnp.result_type(q, k, v) == jnp.bfloat16 else jnp.float32)
        if caller_layout:  # [B, T, HV, d] -> [B, Tp, HV * d]: a reshape where T = Tp, d = Kp
            to_caller = lambda x, d: jnp.pad(
                x, [(0, 0), (0, Tp - T), (0, 0), (0, d - x.shape[-1])]).reshape(B, Tp, HV * d)
            qkv, heads = (to_caller(qf, Kp), to_caller(kf, Kp), to_caller(vf, Vp)), HV
        else:
            vcp = vc if Vp == V else jnp.pad(vc, [(0, 0)] * 4 + [(0, Vp - V)])
            qkv, heads = (flat(x) for x in (qc, kc, vcp)), None
        qkv = (x.astype(qkv_dt) for x in qkv)
        g_in = pallas_gpu_prep.decay_input(gc_.reshape(BH, Tp), C, dict(cfg)["decays"])
        w, u, kd, qd, aqk = _prep_pallas(*qkv, g_in, bc.reshape(BH, Tp), C, cfg, prep, heads)
        u = u[..., :V]
        gcn = jnp.exp(jnp.sum(gc_, axis=-1))
    gc_vec = jnp.broadcast_to(gcn.reshape(BH, 1, N), (BH, Kp, N))
    if initial_state is None:
        s0 = jnp.zeros((BH, Kp, V), jnp.float32)
    else:
        s0 = initial_state.astype(jnp.float32).reshape(BH, K, V)
        if Kp != K:
            s0 = jnp.pad(s0, ((0, 0), (0, Kp - K), (0, 0)))
    # o and dO in the caller's layout where the Mosaic forward writes o (caller_layout)
    o_heads = HV if caller_layout and _SPLITBWD_MOSAIC.get(state_pass) else None
    if state_pass == "split":
        o, sf = state_pass_split(w, u, kd, gc_vec, qd, aqk, s0, cfg)
    elif state_pass in _SPLITBWD_MOSAIC:
        o, sf = pallas_gpu_state.state_pass_splitbwd(w, u, kd, gc_vec, qd, aqk, s0, cfg,
                                                      _SPLITBWD_MOSAIC[state_pass], o_heads)
    elif state_pass == "mosaic":
        from jax.experimental.pallas import mosaic_gpu as plgpu
        from kernels.gated_delta_rule.pallas_mgpu import state_pass_mgpu
        o, sf = state_pass_mgpu(w, u, kd, gc_vec, qd, aqk, s0,
                                plgpu.InterpretGPUParams() if interpret else None)
    else:
        o, sf = pallas_gpu_state.state_pass(w, u, kd, gc_vec, qd, aqk, s0, cfg)
    if o_heads:
        o_BTHV = o.reshape(B, Tp, HV, V)[:, :T]
    else:
        o_BTHV = jnp.moveaxis(o.reshape(B, HV, Tp, V), 1, 2)[:, :T]
    S_final = sf.reshape(B, HV, Kp, V)[:, :, :K]
    return o_BTHV.astype(v.dtype), S_final
