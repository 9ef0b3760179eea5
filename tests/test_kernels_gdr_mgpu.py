"""Mosaic GPU forward state pass of the gated delta rule (kernels/gated_delta_rule/pallas_mgpu.py),
checked on a CPU host.

1. Numerics in the Mosaic GPU interpreter (`plgpu.InterpretGPUParams`, which simulates SMEM,
   TMA, barriers and wgmma) against plain-jnp loops of the same recurrence: one with the bf16
   casts at the kernel's places (tight: the interpreter's wgmma and this loop sum the fp32
   products alike, so the bf16 roundings agree), one all-fp32 (bf16-level tolerance), and the
   Triton kernel of pallas_gpu.py in Pallas interpret mode at precision="default" (bf16-level
   tolerance, see there). Plus the interpreter's race detector on one case.
2. Lowering for CUDA (`lowering_platforms=("cuda",)`, no GPU needed): the module must hold the
   Mosaic GPU custom call. This catches primitives, layouts and transfers the interpreter
   accepts but the Mosaic GPU compiler does not.
Errors are relative: max|a - b| / max|b| (`rel_err` of tests/test_kernels_gdr.py).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.experimental.pallas import mosaic_gpu as plgpu

from kernels.gated_delta_rule.pallas_gpu import _state_pass_fwd_call
from kernels.gated_delta_rule.pallas_mgpu import state_pass_fwd_mgpu
from tests.test_kernels_gdr import rel_err

BH, N, C = 2, 3, 64
CASES = [(64, 64), (64, 128), (128, 64), (128, 128)]  # (Kp, V): 1 or 2 V tiles of 64


@functools.lru_cache(maxsize=None)
def _inputs(Kp, V, seed=0):
    """Random state-pass operands in `_state_pass_fwd_call` layouts, rounded to bf16 (the
    kernel's operand dtype) but held in fp32, so every implementation sees the same values."""
    Tp = N * C
    ks = jax.random.split(jax.random.key(seed), 7)
    bf = lambda x: x.astype(jnp.bfloat16).astype(jnp.float32)
    w = bf(jax.random.normal(ks[0], (BH, Tp, Kp)) / np.sqrt(Kp))
    u = bf(jax.random.normal(ks[1], (BH, Tp, V)))
    kd = bf(jax.random.normal(ks[2], (BH, Tp, Kp)) / np.sqrt(Kp))
    qd = bf(jax.random.normal(ks[3], (BH, Tp, Kp)) / np.sqrt(Kp))
    causal = jnp.tile(jnp.tril(jnp.ones((C, C))), (N, 1))  # aqk is lower-triangular per chunk
    aqk = bf(jax.random.normal(ks[4], (BH, Tp, C)) * causal / np.sqrt(C))
    # gc differs per state row here (in the model it is exp(G_C) repeated over Kp), so a
    # transposed decay broadcast would show.
    gc = jax.random.uniform(ks[5], (BH, Kp, N), minval=0.3, maxval=1.0)
    s0 = 0.5 * jax.random.normal(ks[6], (BH, Kp, V))
    return w, u, kd, gc, qd, aqk, s0


def _reference(w, u, kd, gc, qd, aqk, s0, *, bf16_casts):
    """Plain-jnp float32 loop over chunks; with bf16_casts, S and delta are rounded to bf16
    where the kernel stores them as wgmma operands (the inputs are bf16 values already)."""
    cast = ((lambda x: x.astype(jnp.bfloat16).astype(jnp.float32)) if bf16_casts
            else (lambda x: x))
    dot = functools.partial(jnp.einsum, precision=lax.Precision.HIGHEST,
                            preferred_element_type=jnp.float32)
    Tp = w.shape[1]
    chunks = lambda x: x.reshape(x.shape[0], Tp // C, C, x.shape[-1])
    w, u, kd, qd, aqk = map(chunks, (w, u, kd, qd, aqk))
    S = s0
    outs = []
    for n in range(Tp // C):
        Sb = cast(S)
        delta = u[:, n] - dot("bck,bkv->bcv", w[:, n], Sb)
        db = cast(delta)
        outs.append(dot("bck,bkv->bcv", qd[:, n], Sb) + dot("bcd,bdv->bcv", aqk[:, n], db))
        S = gc[:, :, n, None] * S + dot("bck,bcv->bkv", kd[:, n], db)
    return jnp.concatenate(outs, axis=1), S


@functools.lru_cache(maxsize=None)
def _mgpu_interpret(Kp, V):
    fn = jax.jit(functools.partial(state_pass_fwd_mgpu, interpret=plgpu.InterpretGPUParams()))
    o, s = fn(*_inputs(Kp, V))
    return np.asarray(o), np.asarray(s)


@pytest.mark.parametrize("Kp,V", CASES)
def test_interpret_matches_reference(Kp, V):
    args = _inputs(Kp, V)
    o, s = _mgpu_interpret(Kp, V)
    assert o.shape == (BH, N * C, V) and o.dtype == np.float32
    assert s.shape == (BH, Kp, V) and s.dtype == np.float32
    assert np.all(np.isfinite(o)) and np.all(np.isfinite(s))
    o_c, s_c = _reference(*args, bf16_casts=True)   # same casts: only summation order differs
    assert rel_err(o, o_c) < 1e-5 and rel_err(s, s_c) < 1e-5, (rel_err(o, o_c), rel_err(s, s_c))
    o_f, s_f = _reference(*args, bf16_casts=False)  # all fp32: bf16 rounding of S and delta
    assert rel_err(o, o_f) < 1e-2 and rel_err(s, s_f) < 1e-2, (rel_err(o, o_f), rel_err(s, s_f))
    # and the casts matter (the comparison above is not vacuous)
    assert rel_err(o_c, o_f) > 1e-5


@pytest.mark.parametrize("Kp,V", CASES)
def test_interpret_matches_triton_kernel(Kp, V):
    """pallas_gpu.py's Triton-lowering kernel in Pallas interpret mode, precision="default"
    (bf16 dot operands, fp32 accumulation). Inputs in fp32 so its o is fp32 too.
    Same casts, but not a tight comparison: its fp32 products are summed in another order, and
    where w S lands next to a bf16 rounding boundary, delta rounds the other way; the flip
    (~2^-9 relative) then propagates through the state. Seen at (Kp, V) = (64, 64): 1e-3
    relative on o and S (the other cases agree to 1e-7)."""
    o_t, s_t = _state_pass_fwd_call(*_inputs(Kp, V), save_states=False, precision="default",
                                    interpret=True, num_warps=4, num_stages=1, block_v=64)
    o, s = _mgpu_interpret(Kp, V)
    assert rel_err(o, o_t) < 1e-2 and rel_err(s, s_t) < 1e-2, (rel_err(o, o_t), rel_err(s, s_t))


@pytest.mark.parametrize("Kp,V", [(64, 64), (128, 128)])
def test_lowers_for_cuda(Kp, V):
    args = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in _inputs(Kp, V)]
    lowered = jax.jit(state_pass_fwd_mgpu).trace(*args).lower(lowering_platforms=("cuda",))
    text = lowered.as_text()
    assert "stablehlo.custom_call @mosaic_gpu" in text


def test_rejects_unsupported_shapes():
    w, u, kd, gc, qd, aqk, s0 = _inputs(64, 64)
    with pytest.raises(ValueError, match="Kp must be"):  # Kp = 32
        state_pass_fwd_mgpu(w[..., :32], u, kd[..., :32], gc[:, :32], qd[..., :32], aqk,
                            s0[:, :32])
    with pytest.raises(ValueError, match="V must be"):
        state_pass_fwd_mgpu(w, u[..., :32], kd, gc, qd, aqk, s0[..., :32])


def test_interpret_no_races():
    """The interpreter's race detector: TMA refills of a slot against earlier reads of it (which
    need a proxy fence, `commit_smem`, in between), o staging against its TMA store."""
    from jax._src.pallas.mosaic_gpu.interpret import interpret_pallas_call as ipc
    ip = plgpu.InterpretGPUParams(detect_races=True)
    o, _ = jax.jit(functools.partial(state_pass_fwd_mgpu, interpret=ip))(*_inputs(64, 128))
    o.block_until_ready()
    assert not ipc.get_races().races_found
