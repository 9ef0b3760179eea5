"""The Mosaic GPU forward state pass (kernels/gated_delta_rule/gpu/state_mosaic.py) on a CPU host.

1. Numerics in the Mosaic GPU interpreter (`plgpu.InterpretGPUParams`, which simulates SMEM,
   TMA, barriers and wgmma) against plain-jnp loops of the same recurrence: one with the bf16
   casts at the kernel's places (much closer than the casts' own effect, see
   `assert_follows_casts`), one all-fp32 (bf16-level tolerance), and the Triton kernel
   (`state_triton.state_fwd`) in Pallas interpret mode at precision="default" (bf16-level
   tolerance, see there). The residuals for the backward (chunk-entry states, delta), bf16 o,
   and the interpreter's race detector.
2. Lowering for CUDA (`lowering_platforms=("cuda",)`, no GPU needed): the module must hold the
   Mosaic GPU custom call. This catches primitives, layouts and transfers the interpreter
   accepts but the Mosaic GPU compiler does not.
The backward's kernels are in tests/test_kernels_gdr_gpu_state_mosaic_bwd.py, the whole op in
tests/test_kernels_gdr_gpu.py. Errors are relative: max|a - b| / max|b| (`rel_err` of
tests/test_kernels_gdr.py), or ||a - b|| / ||b|| in the Frobenius norm (`rms_err`) where said.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.experimental.pallas import mosaic_gpu as plgpu

from kernels.gated_delta_rule.gpu import state_triton
from kernels.gated_delta_rule.gpu.state_mosaic import state_fwd
from tests.test_kernels_gdr import rel_err

BH, N, C = 2, 3, 64
CASES = [(64, 64), (64, 128), (128, 64), (128, 128)]  # (Kp, V): 1 or 2 V tiles of 64


@functools.lru_cache(maxsize=None)
def _inputs(Kp, V, seed=0):
    """Random state-pass operands in `state_fwd`'s layouts, rounded to bf16 (the
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


_bf = lambda x: x.astype(jnp.bfloat16).astype(jnp.float32)
_dot = functools.partial(jnp.einsum, precision=lax.Precision.HIGHEST,
                         preferred_element_type=jnp.float32)
_chunks = lambda x: x.reshape(x.shape[0], x.shape[1] // C, C, x.shape[-1])


def _reference(w, u, kd, gc, qd, aqk, s0, *, bf16_casts, states=None):
    """Plain-jnp float32 loop over chunks; with bf16_casts, S and delta are rounded to bf16
    where the kernel stores them as wgmma operands (the inputs are bf16 values already).
    A list passed as `states` receives the fp32 chunk-entry states S_n."""
    cast = _bf if bf16_casts else (lambda x: x)
    dot = _dot
    Tp = w.shape[1]
    w, u, kd, qd, aqk = map(_chunks, (w, u, kd, qd, aqk))
    S = s0
    outs = []
    for n in range(Tp // C):
        if states is not None:
            states.append(S)
        Sb = cast(S)
        delta = u[:, n] - dot("bck,bkv->bcv", w[:, n], Sb)
        db = cast(delta)
        outs.append(dot("bck,bkv->bcv", qd[:, n], Sb) + dot("bcd,bdv->bcv", aqk[:, n], db))
        S = gc[:, :, n, None] * S + dot("bck,bcv->bkv", kd[:, n], db)
    return jnp.concatenate(outs, axis=1), S


def rms_err(a, b):
    """Relative error in the Frobenius norm: ||a - b|| / ||b||."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# The kernel against the loop with its casts is not held to a fixed tight tolerance: the
# interpreter's wgmma and XLA's dot (whose CPU code differs by host) sum the fp32 products in
# different orders, so a value next to a bf16 rounding boundary where it becomes a wgmma operand
# (S, delta, dS, dd) can round the other way, and the flip propagates through the chunk
# recurrence. The recurrence never mixes V columns, so the cascade stays in the flip's column:
# its max error reached half the casts' own effect (ds0 at (Kp, V) = (128, 128): 1.1e-3 against
# 2.1e-3) while its RMS error over the output stayed at most 0.06 of theirs. A missing, extra or
# misplaced cast moves every column: the loop with one of its casts dropped, or with the fp32
# state accumulator or fp32 output rounded to bf16, differed from it by 0.6 to 1.2 of the casts'
# effect (RMS) on the output it shows most on, and by 0.36 or more on any output it reaches.
# Hence per output: RMS err(kernel, cast loop) < CAST_RATIO * RMS err(cast loop, no-cast loop).
# An output that no cast reaches (dqd) must match to 1e-5 (max): only summation order differs.
CAST_RATIO = 0.25


def assert_follows_casts(names, got, cast, nocast):
    for name, a, c, f in zip(names, got, cast, nocast):
        a, c, f = (np.asarray(x) for x in (a, c, f))
        assert a.shape == c.shape, (name, a.shape, c.shape)
        effect = rms_err(c, f)
        if effect == 0:
            assert rel_err(a, c) < 1e-5, (name, rel_err(a, c))
        else:
            assert rms_err(a, c) < CAST_RATIO * effect, (name, rms_err(a, c), effect)


@functools.lru_cache(maxsize=None)
def _interpret(Kp, V):
    fn = jax.jit(functools.partial(state_fwd, interpret=plgpu.InterpretGPUParams()))
    o, s = fn(*_inputs(Kp, V))
    return np.asarray(o), np.asarray(s)


@pytest.mark.parametrize("Kp,V", CASES)
def test_interpret_matches_reference(Kp, V):
    args = _inputs(Kp, V)
    o, s = _interpret(Kp, V)
    assert o.shape == (BH, N * C, V) and o.dtype == np.float32
    assert s.shape == (BH, Kp, V) and s.dtype == np.float32
    assert np.all(np.isfinite(o)) and np.all(np.isfinite(s))
    o_c, s_c = _reference(*args, bf16_casts=True)   # same casts
    o_f, s_f = _reference(*args, bf16_casts=False)  # all fp32: bf16 rounding of S and delta
    assert rel_err(o, o_f) < 1e-2 and rel_err(s, s_f) < 1e-2, (rel_err(o, o_f), rel_err(s, s_f))
    # the casts matter (the comparison below is not vacuous), and the kernel has them
    assert rel_err(o_c, o_f) > 1e-5 and rel_err(s_c, s_f) > 1e-5
    assert_follows_casts(("o", "s"), (o, s), (o_c, s_c), (o_f, s_f))


@pytest.mark.parametrize("Kp,V", CASES)
def test_interpret_matches_triton_kernel(Kp, V):
    """The Triton kernel (`state_triton.state_fwd`) in Pallas interpret mode, precision="default"
    (bf16 dot operands, fp32 accumulation). Inputs in fp32 so its o is fp32 too.
    Same casts, but not a tight comparison: its fp32 products are summed in another order, and
    where w S lands next to a bf16 rounding boundary, delta rounds the other way; the flip
    (~2^-9 relative) then propagates through the state. Seen at (Kp, V) = (64, 64): 1e-3
    relative on o and S (the other cases agree to 1e-7)."""
    o_t, s_t = state_triton.state_fwd(*_inputs(Kp, V), residuals=False, precision="default",
                                      interpret=True, num_warps=4, num_stages=1, block_v=64)
    o, s = _interpret(Kp, V)
    assert rel_err(o, o_t) < 1e-2 and rel_err(s, s_t) < 1e-2, (rel_err(o, o_t), rel_err(s, s_t))


@pytest.mark.parametrize("Kp,V", [(64, 64), (128, 128)])
def test_lowers_for_cuda(Kp, V):
    args = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in _inputs(Kp, V)]
    lowered = jax.jit(state_fwd).trace(*args).lower(lowering_platforms=("cuda",))
    text = lowered.as_text()
    assert "stablehlo.custom_call @mosaic_gpu" in text


def test_rejects_unsupported_shapes():
    w, u, kd, gc, qd, aqk, s0 = _inputs(64, 64)
    with pytest.raises(ValueError, match="Kp must be"):  # Kp = 32
        state_fwd(w[..., :32], u, kd[..., :32], gc[:, :32], qd[..., :32], aqk,
                            s0[:, :32])
    with pytest.raises(ValueError, match="V must be"):
        state_fwd(w, u[..., :32], kd, gc, qd, aqk, s0[..., :32])


def test_interpret_no_races():
    """The interpreter's race detector: TMA refills of a slot against earlier reads of it (which
    need a proxy fence, `commit_smem`, in between), o staging against its TMA store."""
    from jax._src.pallas.mosaic_gpu.interpret import interpret_pallas_call as ipc
    ip = plgpu.InterpretGPUParams(detect_races=True)
    o, _ = jax.jit(functools.partial(state_fwd, interpret=ip))(*_inputs(64, 128))
    o.block_until_ready()
    assert not ipc.get_races().races_found


# ---------------------------------------------------------------------------------------------
# The residuals for the backward, bf16 o, races, lowering.

def test_interpret_residuals():
    """residuals (the forward before a backward): the bf16 chunk-entry states, equal to the
    cast loop's rounded to bf16, and delta = u - w S_n, equal to the Triton forward's (same
    bf16 casts; flips of ~2^-9 allowed, see the Triton comparison above); o and S unchanged by
    saving them."""
    for Kp, V in ((64, 128), (128, 64)):
        fn = jax.jit(functools.partial(state_fwd, residuals=True,
                                       interpret=plgpu.InterpretGPUParams()))
        o, s, states, delta = fn(*_inputs(Kp, V))
        assert states.shape == (BH, N * Kp, V) and states.dtype == jnp.bfloat16
        assert delta.shape == (BH, N * C, V) and delta.dtype == jnp.bfloat16
        o0, s0 = _interpret(Kp, V)
        np.testing.assert_array_equal(o, o0)
        np.testing.assert_array_equal(s, s0)
        want = []
        _reference(*_inputs(Kp, V), bf16_casts=True, states=want)
        want = jnp.stack(want, axis=1).reshape(BH, N * Kp, V)
        f32 = lambda x: np.asarray(x.astype(jnp.float32))
        assert rel_err(f32(states), want) < 2 ** -8  # bf16 rounding of states equal to ~1e-6
        assert np.mean(f32(states) == np.asarray(_bf(want))) > 0.99
        w, u, kd, gc, qd, aqk, s0 = _inputs(Kp, V)
        args = [x.astype(jnp.bfloat16) for x in (w, u, kd)] + [gc] + [
            x.astype(jnp.bfloat16) for x in (qd, aqk)] + [s0]  # bf16 operands: bf16 delta
        *_, states_t, delta_t = state_triton.state_fwd(
            *args, residuals=True, precision="default", interpret=True, num_warps=4,
            num_stages=1, block_v=64)
        assert rel_err(f32(states), f32(states_t)) < 1e-2
        assert rel_err(f32(delta), f32(delta_t)) < 1e-2
        assert np.mean(f32(delta) == f32(delta_t)) > 0.99


def test_interpret_bf16_o_is_the_fp32_o_rounded():
    """o_dtype=bf16 (what the op asks for): o rounded once from the same fp32 accumulator, the
    final state unchanged; other dtypes are refused."""
    fn = jax.jit(functools.partial(state_fwd, o_dtype=jnp.bfloat16,
                                   interpret=plgpu.InterpretGPUParams()))
    o, s = fn(*_inputs(128, 128))
    o0, s0 = _interpret(128, 128)
    assert o.dtype == jnp.bfloat16
    np.testing.assert_array_equal(o, o0.astype(jnp.bfloat16))
    np.testing.assert_array_equal(s, s0)
    with pytest.raises(ValueError, match="o_dtype"):
        state_fwd(*_inputs(128, 128), o_dtype=jnp.float16)


def test_interpret_residuals_no_races():
    from jax._src.pallas.mosaic_gpu.interpret import interpret_pallas_call as ipc
    ip = plgpu.InterpretGPUParams(detect_races=True)
    for Kp in (64, 128):
        fwd = jax.jit(functools.partial(state_fwd, residuals=True, interpret=ip))
        jax.block_until_ready(fwd(*_inputs(Kp, 64)))
        assert not ipc.get_races().races_found


def _callers(x):  # [BH, Tp, V] as one batch of BH heads: the caller's layout [1, Tp, BH * V]
    return jnp.moveaxis(x, 0, 1).reshape(1, x.shape[1], -1)


def test_interpret_o_in_the_callers_layout_is_bitwise_the_same():
    fn = lambda **kw: jax.jit(functools.partial(state_fwd, o_dtype=jnp.bfloat16,
                                                interpret=plgpu.InterpretGPUParams(), **kw))
    o, s = fn()(*_inputs(64, 128))
    o_callers, s_callers = fn(heads=BH)(*_inputs(64, 128))
    assert bool(jnp.all(o_callers == _callers(o))) and bool(jnp.all(s_callers == s))


@pytest.mark.parametrize("Kp, heads", [(64, None), (128, BH)])
def test_residuals_lower_for_cuda(Kp, heads):
    """As the op runs it: residuals, bf16 o, with and without o in the caller's layout."""
    spec = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)
    fwd = functools.partial(state_fwd, residuals=True, o_dtype=jnp.bfloat16, heads=heads)
    lowered = jax.jit(fwd).trace(*map(spec, _inputs(Kp, 128))).lower(
        lowering_platforms=("cuda",))
    assert "stablehlo.custom_call @mosaic_gpu" in lowered.as_text()
