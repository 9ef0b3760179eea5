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
The backward's kernels are in test_state_mosaic_bwd.py, the whole op in test_pallas_gpu.py
(beside this file); the operands and the plain-jnp loops are in tests/helpers/gdr_gpu_state.py.
Errors are relative: max|a - b| / max|b| (`rel_err` of tests/helpers/gdr.py), or
||a - b|| / ||b|| in the Frobenius norm (`rms_err`) where said.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import mosaic_gpu as plgpu

from kernels.gated_delta_rule.gpu import state_triton
from kernels.gated_delta_rule.gpu.state_mosaic import state_fwd

from tests.helpers.gdr import rel_err
from tests.helpers.gdr_gpu_state import (BH, CASES, C, N, assert_follows_casts, bf16_round,
                                         callers_layout, state_inputs, state_reference)



@functools.lru_cache(maxsize=None)
def _interpret(Kp, V):
    fn = jax.jit(functools.partial(state_fwd, interpret=plgpu.InterpretGPUParams()))
    o, s = fn(*state_inputs(Kp, V))
    return np.asarray(o), np.asarray(s)


@pytest.mark.parametrize("Kp,V", CASES)
def test_interpret_matches_reference(Kp, V):
    args = state_inputs(Kp, V)
    o, s = _interpret(Kp, V)
    assert o.shape == (BH, N * C, V) and o.dtype == np.float32
    assert s.shape == (BH, Kp, V) and s.dtype == np.float32
    assert np.all(np.isfinite(o)) and np.all(np.isfinite(s))
    o_c, s_c = state_reference(*args, bf16_casts=True)   # same casts
    o_f, s_f = state_reference(*args, bf16_casts=False)  # all fp32: bf16 rounding of S and delta
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
    o_t, s_t = state_triton.state_fwd(*state_inputs(Kp, V), residuals=False, precision="default",
                                      interpret=True, num_warps=4, num_stages=1, block_v=64)
    o, s = _interpret(Kp, V)
    assert rel_err(o, o_t) < 1e-2 and rel_err(s, s_t) < 1e-2, (rel_err(o, o_t), rel_err(s, s_t))


@pytest.mark.parametrize("Kp,V", [(64, 64), (128, 128)])
def test_lowers_for_cuda(Kp, V):
    args = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in state_inputs(Kp, V)]
    lowered = jax.jit(state_fwd).trace(*args).lower(lowering_platforms=("cuda",))
    text = lowered.as_text()
    assert "stablehlo.custom_call @mosaic_gpu" in text


def test_rejects_unsupported_shapes():
    w, u, kd, gc, qd, aqk, s0 = state_inputs(64, 64)
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
    o, _ = jax.jit(functools.partial(state_fwd, interpret=ip))(*state_inputs(64, 128))
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
        o, s, states, delta = fn(*state_inputs(Kp, V))
        assert states.shape == (BH, N * Kp, V) and states.dtype == jnp.bfloat16
        assert delta.shape == (BH, N * C, V) and delta.dtype == jnp.bfloat16
        o0, s0 = _interpret(Kp, V)
        np.testing.assert_array_equal(o, o0)
        np.testing.assert_array_equal(s, s0)
        want = []
        state_reference(*state_inputs(Kp, V), bf16_casts=True, states=want)
        want = jnp.stack(want, axis=1).reshape(BH, N * Kp, V)
        f32 = lambda x: np.asarray(x.astype(jnp.float32))
        assert rel_err(f32(states), want) < 2 ** -8  # bf16 rounding of states equal to ~1e-6
        assert np.mean(f32(states) == np.asarray(bf16_round(want))) > 0.99
        w, u, kd, gc, qd, aqk, s0 = state_inputs(Kp, V)
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
    o, s = fn(*state_inputs(128, 128))
    o0, s0 = _interpret(128, 128)
    assert o.dtype == jnp.bfloat16
    np.testing.assert_array_equal(o, o0.astype(jnp.bfloat16))
    np.testing.assert_array_equal(s, s0)
    with pytest.raises(ValueError, match="o_dtype"):
        state_fwd(*state_inputs(128, 128), o_dtype=jnp.float16)


def test_interpret_residuals_no_races():
    from jax._src.pallas.mosaic_gpu.interpret import interpret_pallas_call as ipc
    ip = plgpu.InterpretGPUParams(detect_races=True)
    for Kp in (64, 128):
        fwd = jax.jit(functools.partial(state_fwd, residuals=True, interpret=ip))
        jax.block_until_ready(fwd(*state_inputs(Kp, 64)))
        assert not ipc.get_races().races_found


def test_interpret_o_in_the_callers_layout_is_bitwise_the_same():
    fn = lambda **kw: jax.jit(functools.partial(state_fwd, o_dtype=jnp.bfloat16,
                                                interpret=plgpu.InterpretGPUParams(), **kw))
    o, s = fn()(*state_inputs(64, 128))
    o_callers, s_callers = fn(heads=BH)(*state_inputs(64, 128))
    assert bool(jnp.all(o_callers == callers_layout(o))) and bool(jnp.all(s_callers == s))


@pytest.mark.parametrize("Kp, heads", [(64, None), (128, BH)])
def test_residuals_lower_for_cuda(Kp, heads):
    """As the op runs it: residuals, bf16 o, with and without o in the caller's layout."""
    spec = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)
    fwd = functools.partial(state_fwd, residuals=True, o_dtype=jnp.bfloat16, heads=heads)
    lowered = jax.jit(fwd).trace(*map(spec, state_inputs(Kp, 128))).lower(
        lowering_platforms=("cuda",))
    assert "stablehlo.custom_call @mosaic_gpu" in lowered.as_text()


def test_interpret_whole_v96_matches_the_padded_tiles():
    """The ladder's heads (Kp 64, V 96): one program a head over the unpadded V (block_v=96, the
    64-byte swizzle), reading the first 96 columns of a 128-wide u, against two 64-wide tiles
    over V padded with zeros to 128: o, the final state, the saved states and delta agree to
    one bf16 ulp (the products' order differs)."""
    w, u, kd, gc, qd, aqk, s0 = state_inputs(64, 128)
    u = u.at[..., 96:].set(0)
    ip = plgpu.InterpretGPUParams()
    kw = dict(residuals=True, o_dtype=jnp.bfloat16, interpret=ip)
    want = state_fwd(w, u, kd, gc, qd, aqk, s0.at[..., 96:].set(0), **kw)
    got = state_fwd(w, u, kd, gc, qd, aqk, s0[..., :96], block_v=96, **kw)
    for name, a, b in zip(("o", "s_final", "states", "delta"), got, want):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)[..., :96]
        assert a.shape == b.shape and rel_err(a, b) < 2 ** -8, (name, rel_err(a, b))


@pytest.mark.parametrize("heads", [None, BH])
def test_whole_v96_lowers_for_cuda(heads):
    w, u, kd, gc, qd, aqk, s0 = state_inputs(64, 128)
    fwd = functools.partial(state_fwd, residuals=True, o_dtype=jnp.bfloat16, heads=heads,
                            block_v=96)
    spec = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)  # noqa: E731
    lowered = jax.jit(fwd).trace(*map(spec, (w, u, kd, gc, qd, aqk, s0[..., :96]))).lower(
        lowering_platforms=("cuda",))
    assert "stablehlo.custom_call @mosaic_gpu" in lowered.as_text()
