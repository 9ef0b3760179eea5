"""The Mosaic GPU kernel of the state pass's backward (kernels/gated_delta_rule/gpu/
state_mosaic_bwd.py's dh) on a CPU host, in the Mosaic GPU interpreter: against a plain-jnp
reverse loop with the kernel's bf16 casts (fp32 ds0: much closer than the casts' own effect,
`assert_follows_casts`) and against the Triton `state_triton.dh` in Pallas interpret mode; also
with dO in the caller's layout (bitwise), under the interpreter's race detector, lowered for
CUDA, and refusing what it does not take. Inputs and helpers are those of the forward's
tests (test_state_mosaic.py), in tests/helpers/gdr_gpu_state.py."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import mosaic_gpu as plgpu

from kernels.gated_delta_rule.gpu import state_mosaic_bwd, state_triton

from tests.helpers.gdr import rel_err
from tests.helpers.gdr_gpu_state import (BH, CASES, C, N, assert_follows_casts, bf16_round,
                                         callers_layout, chunks, dot_highest, state_inputs,
                                         state_reference)

TRITON = dict(precision="default", interpret=True, num_warps=4, num_stages=1, block_v=64)


@functools.lru_cache(maxsize=None)
def _bwd_inputs(Kp, V):
    """Forward operands, the bf16 chunk-entry states of the cast reference ([BH, N, Kp, V]) and
    cotangents (do bf16-valued: the kernel's operand dtype)."""
    args = state_inputs(Kp, V)
    states = []
    state_reference(*args, bf16_casts=True, states=states)
    states = bf16_round(jnp.stack(states, axis=1))
    ks = jax.random.split(jax.random.key(1), 2)
    do = bf16_round(jax.random.normal(ks[0], (BH, N * C, V)))
    dsf = jax.random.normal(ks[1], (BH, Kp, V))
    return args[:6], states, do, dsf


def _dh_operands(Kp, V):
    (w, u, kd, gc, qd, aqk), _, do, dsf = _bwd_inputs(Kp, V)
    return w, kd, gc, qd, aqk, do, dsf


def _reference_dh(w, kd, gc, qd, aqk, do, dsf, *, bf16_casts=True):
    """The reverse loop of `state_triton._dh_kernel` with the kernel's casts (dS and dd rounded
    to bf16 where they become wgmma operands), or all fp32 without bf16_casts:
    (dstates [BH, N*Kp, V] fp32, dd [BH, Tp, V] fp32, ds0)."""
    cast = bf16_round if bf16_casts else (lambda x: x)
    w, kd, qd, aqk, do = map(chunks, (w, kd, qd, aqk, do))
    dS, dstates, dds = dsf, [], []
    for n in reversed(range(w.shape[1])):
        dstates.append(dS)
        dd = dot_highest("bck,bkv->bcv", kd[:, n], cast(dS)) + dot_highest("bdc,bdv->bcv", aqk[:, n], do[:, n])
        dds.append(dd)
        dS = (gc[:, :, n, None] * dS + dot_highest("bck,bcv->bkv", qd[:, n], do[:, n])
              - dot_highest("bck,bcv->bkv", w[:, n], cast(dd)))
    flat = lambda xs: jnp.concatenate(xs[::-1], axis=1)
    return flat(dstates), flat(dds), dS


@functools.lru_cache(maxsize=None)
def _interpret(Kp, V, detect_races=False):
    fn = jax.jit(functools.partial(
        state_mosaic_bwd.dh, interpret=plgpu.InterpretGPUParams(detect_races=detect_races)))
    return [np.asarray(x.astype(jnp.float32)) for x in fn(*_dh_operands(Kp, V))]


@pytest.mark.parametrize("Kp,V", CASES)
def test_interpret_dh_matches_cast_reference(Kp, V):
    dstates, dd, ds0 = _interpret(Kp, V)
    assert dstates.shape == (BH, N * Kp, V) and dd.shape == (BH, N * 64, V)
    want = [np.asarray(x) for x in _reference_dh(*_dh_operands(Kp, V))]
    ds0_f = np.asarray(_reference_dh(*_dh_operands(Kp, V), bf16_casts=False)[2])
    assert rel_err(ds0, ds0_f) < 1e-2 and rel_err(want[2], ds0_f) > 1e-5  # the casts matter
    assert_follows_casts(("ds0",), (ds0,), want[2:], (ds0_f,))  # fp32 out
    for name, got, ref in (("dstates", dstates, want[0]), ("dd", dd, want[1])):  # bf16 out
        assert rel_err(got, ref) < 1e-2, (name, rel_err(got, ref))
        assert np.mean(got == np.asarray(bf16_round(ref))) > 0.99, name


@pytest.mark.parametrize("Kp,V", [(64, 64), (128, 128)])
def test_interpret_dh_matches_the_triton_kernel(Kp, V):
    """dd (= du) and ds0 both ways, from the same bf16 operands; bf16-level tolerance."""
    w, kd, gc, qd, aqk, do, dsf = _dh_operands(Kp, V)
    args = [x.astype(jnp.bfloat16) for x in (w, kd)] + [gc] + [
        x.astype(jnp.bfloat16) for x in (qd, aqk, do)] + [dsf]
    want = jax.jit(functools.partial(state_triton.dh, **TRITON))(*args)
    got = jax.jit(functools.partial(state_mosaic_bwd.dh,
                                    interpret=plgpu.InterpretGPUParams()))(*args)
    for name, a, b in zip(("dstates", "dd", "ds0"), got, want):
        a, b = np.asarray(a.astype(jnp.float32)), np.asarray(b.astype(jnp.float32))
        assert a.shape == b.shape and rel_err(a, b) < 1e-2, (name, rel_err(a, b))


def test_interpret_dh_no_races_and_the_callers_layout():
    """The race detector at both Kp (the slot refills against their reads), and dO in the
    caller's layout [BH / heads, Tp, heads * V]: bitwise the same outputs."""
    from jax._src.pallas.mosaic_gpu.interpret import interpret_pallas_call as ipc
    for Kp in (64, 128):
        want = _interpret(Kp, 64, detect_races=True)
        assert not ipc.get_races().races_found
    w, kd, gc, qd, aqk, do, dsf = _dh_operands(128, 64)
    got = jax.jit(functools.partial(state_mosaic_bwd.dh, heads=BH,
                                    interpret=plgpu.InterpretGPUParams()))(
        w, kd, gc, qd, aqk, callers_layout(do), dsf)
    for name, a, b in zip(("dstates", "dd", "ds0"), got, want):
        assert bool(jnp.all(a.astype(jnp.float32) == b)), name


@pytest.mark.parametrize("heads", [None, BH])
def test_dh_lowers_for_cuda(heads):
    spec = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)
    w, kd, gc, qd, aqk, do, dsf = _dh_operands(128, 128)
    do = do if heads is None else callers_layout(do)
    fn = functools.partial(state_mosaic_bwd.dh, heads=heads)
    text = jax.jit(fn).trace(*map(spec, (w, kd, gc, qd, aqk, do, dsf))).lower(
        lowering_platforms=("cuda",)).as_text()
    assert "stablehlo.custom_call @mosaic_gpu" in text


def test_interpret_whole_v96_matches_the_padded_tiles():
    """The ladder's heads (Kp 64, V 96): one program a head over the unpadded V (block_v=96, the
    64-byte swizzle) against two 64-wide tiles over V padded with zeros to 128: dstates and dd
    agree to one bf16 ulp, ds0 to fp32 rounding."""
    w, u, kd, gc, qd, aqk, s0 = state_inputs(64, 128)
    do, dsf = u.at[..., 96:].set(0), s0.at[..., 96:].set(0)
    ip = plgpu.InterpretGPUParams()
    want = state_mosaic_bwd.dh(w, kd, gc, qd, aqk, do, dsf, interpret=ip)
    got = state_mosaic_bwd.dh(w, kd, gc, qd, aqk, do[..., :96], dsf[..., :96], interpret=ip,
                              block_v=96)
    for name, a, b in zip(("dstates", "dd", "ds0"), got, want):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)[..., :96]
        assert a.shape == b.shape and rel_err(a, b) < 2 ** -8, (name, rel_err(a, b))


@pytest.mark.parametrize("heads", [None, BH])
def test_whole_v96_dh_lowers_for_cuda(heads):
    w, u, kd, gc, qd, aqk, s0 = state_inputs(64, 128)
    do = u[..., :96] if heads is None else callers_layout(u[..., :96])
    fn = functools.partial(state_mosaic_bwd.dh, heads=heads, block_v=96)
    spec = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)  # noqa: E731
    lowered = jax.jit(fn).trace(*map(spec, (w, kd, gc, qd, aqk, do, s0[..., :96]))).lower(
        lowering_platforms=("cuda",))
    assert "stablehlo.custom_call @mosaic_gpu" in lowered.as_text()
