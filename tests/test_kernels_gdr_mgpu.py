"""Mosaic GPU state pass of the gated delta rule (kernels/gated_delta_rule/pallas_mgpu.py), forward
(with and without saved states), backward and their custom_vjp, checked on a CPU host.

1. Numerics in the Mosaic GPU interpreter (`plgpu.InterpretGPUParams`, which simulates SMEM,
   TMA, barriers and wgmma) against plain-jnp loops of the same recurrence: one with the bf16
   casts at the kernel's places (much closer than the casts' own effect, see
   `assert_follows_casts`), one all-fp32 (bf16-level tolerance), and the
   Triton kernel of pallas_gpu.py in Pallas interpret mode at precision="default" (bf16-level
   tolerance, see there). Plus the interpreter's race detector on one case.
2. Lowering for CUDA (`lowering_platforms=("cuda",)`, no GPU needed): the module must hold the
   Mosaic GPU custom call. This catches primitives, layouts and transfers the interpreter
   accepts but the Mosaic GPU compiler does not.
3. The backward against a hand-written jnp reverse loop with the kernel's bf16 casts (as in 1). It
   is not `jax.vjp` of the cast forward loop: the kernel also rounds cotangents (dS, dd) where
   they become wgmma operands, which no forward cast describes, and `jax.vjp` of a bf16 cast
   rounds the cotangent where the kernel does not. So the hand loop is checked, without casts,
   against `jax.vjp` of the fp32 forward loop (tight), and the kernel against that vjp and the
   Triton backward at bf16-level tolerance.
Errors are relative: max|a - b| / max|b| (`rel_err` of tests/test_kernels_gdr.py), or
||a - b|| / ||b|| in the Frobenius norm (`rms_err`) where said.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.experimental.pallas import mosaic_gpu as plgpu

from kernels.gated_delta_rule.pallas_gpu_state import state_pass_bwd_call, state_pass_fwd_call
from kernels.gated_delta_rule.pallas_mgpu import (state_pass_bwd_mgpu, state_pass_fwd_mgpu,
                                                  state_pass_mgpu)
from tests.test_kernels_gdr import rel_err

BH, N, C = 2, 3, 64
CASES = [(64, 64), (64, 128), (128, 64), (128, 128)]  # (Kp, V): 1 or 2 V tiles of 64


@functools.lru_cache(maxsize=None)
def _inputs(Kp, V, seed=0):
    """Random state-pass operands in `state_pass_fwd_call` layouts, rounded to bf16 (the
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
    o_c, s_c = _reference(*args, bf16_casts=True)   # same casts
    o_f, s_f = _reference(*args, bf16_casts=False)  # all fp32: bf16 rounding of S and delta
    assert rel_err(o, o_f) < 1e-2 and rel_err(s, s_f) < 1e-2, (rel_err(o, o_f), rel_err(s, s_f))
    # the casts matter (the comparison below is not vacuous), and the kernel has them
    assert rel_err(o_c, o_f) > 1e-5 and rel_err(s_c, s_f) > 1e-5
    assert_follows_casts(("o", "s"), (o, s), (o_c, s_c), (o_f, s_f))


@pytest.mark.parametrize("Kp,V", CASES)
def test_interpret_matches_triton_kernel(Kp, V):
    """pallas_gpu.py's Triton-lowering kernel in Pallas interpret mode, precision="default"
    (bf16 dot operands, fp32 accumulation). Inputs in fp32 so its o is fp32 too.
    Same casts, but not a tight comparison: its fp32 products are summed in another order, and
    where w S lands next to a bf16 rounding boundary, delta rounds the other way; the flip
    (~2^-9 relative) then propagates through the state. Seen at (Kp, V) = (64, 64): 1e-3
    relative on o and S (the other cases agree to 1e-7)."""
    o_t, s_t = state_pass_fwd_call(*_inputs(Kp, V), save_states=False, precision="default",
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


# ---------------------------------------------------------------------------------------------
# Forward with saved states, backward, custom_vjp.

def _reference_bwd(w, u, kd, gc, qd, aqk, states, do, dsf, *, bf16_casts):
    """Hand-written reverse loop of `_bwd_kernel` (pallas_gpu.py); states [BH, N, Kp, V]. With
    bf16_casts, dS, delta and dd are rounded where the kernel stages them as wgmma operands.
    Returns the cotangents in `state_pass_bwd_mgpu`'s order (dw, du, dkd, dgc, dqd, daqk, ds0)."""
    cast = _bf if bf16_casts else (lambda x: x)
    w, u, kd, qd, aqk, do = map(_chunks, (w, u, kd, qd, aqk, do))
    dS, grads = dsf, []
    for n in reversed(range(w.shape[1])):
        S, dSb = states[:, n], cast(dS)
        delta = cast(u[:, n] - _dot("bck,bkv->bcv", w[:, n], S))
        dd = _dot("bck,bkv->bcv", kd[:, n], dSb) + _dot("bdc,bdv->bcv", aqk[:, n], do[:, n])
        ndd = cast(-dd)
        grads.append((_dot("bcv,bkv->bck", ndd, S), dd, _dot("bcv,bkv->bck", delta, dSb),
                      jnp.sum(dS * S, axis=-1), _dot("bcv,bkv->bck", do[:, n], S),
                      _dot("bcv,bdv->bcd", do[:, n], delta)))
        dS = (gc[:, :, n, None] * dS + _dot("bck,bcv->bkv", qd[:, n], do[:, n])
              + _dot("bck,bcv->bkv", w[:, n], ndd))
    dw, du, dkd, dgc, dqd, daqk = (jnp.stack(g[::-1], axis=1) for g in zip(*grads))
    flat = lambda x: x.reshape(x.shape[0], -1, x.shape[-1])
    return flat(dw), flat(du), flat(dkd), jnp.swapaxes(dgc, 1, 2), flat(dqd), flat(daqk), dS


@functools.lru_cache(maxsize=None)
def _bwd_inputs(Kp, V):
    """Forward operands, the bf16 chunk-entry states of the cast reference ([BH, N*Kp, V]) and
    cotangents (do bf16-valued: the kernel's operand dtype)."""
    args = _inputs(Kp, V)
    states = []
    _reference(*args, bf16_casts=True, states=states)
    states = _bf(jnp.stack(states, axis=1))
    ks = jax.random.split(jax.random.key(1), 2)
    do = _bf(jax.random.normal(ks[0], (BH, N * C, V)))
    dsf = jax.random.normal(ks[1], (BH, Kp, V))
    return args[:6], states, do, dsf


@functools.lru_cache(maxsize=None)
def _mgpu_bwd_interpret(Kp, V):
    args, states, do, dsf = _bwd_inputs(Kp, V)
    fn = jax.jit(functools.partial(state_pass_bwd_mgpu, interpret=plgpu.InterpretGPUParams()))
    return [np.asarray(x) for x in fn(*args, states.reshape(BH, N * Kp, V), do, dsf)]


_NAMES = ("dw", "du", "dkd", "dgc", "dqd", "daqk", "ds0")


def _assert_close(got, want, tol):
    for name, a, b in zip(_NAMES, got, want):
        assert a.shape == b.shape, (name, a.shape, b.shape)
        assert rel_err(a, b) < tol, (name, rel_err(a, b))


@pytest.mark.parametrize("Kp,V", [(64, 128), (128, 64)])
def test_interpret_saved_states(Kp, V):
    fn = jax.jit(functools.partial(state_pass_fwd_mgpu, save_states=True,
                                   interpret=plgpu.InterpretGPUParams()))
    o, s, states = fn(*_inputs(Kp, V))
    assert states.shape == (BH, N * Kp, V) and states.dtype == jnp.bfloat16
    o0, s0 = _mgpu_interpret(Kp, V)
    np.testing.assert_array_equal(o, o0)
    np.testing.assert_array_equal(s, s0)
    want = []
    _reference(*_inputs(Kp, V), bf16_casts=True, states=want)
    want = jnp.stack(want, axis=1).reshape(BH, N * Kp, V)
    states = np.asarray(states.astype(jnp.float32))
    assert rel_err(states, want) < 2 ** -8  # bf16 rounding of states equal to ~1e-6
    assert np.mean(states == np.asarray(_bf(want))) > 0.99


def test_interpret_bf16_o_is_the_fp32_o_rounded():
    """o_dtype=bf16 (what the split-backward path asks for): o rounded once from the same fp32
    accumulator, the final state unchanged; other dtypes are refused."""
    fn = jax.jit(functools.partial(state_pass_fwd_mgpu, o_dtype=jnp.bfloat16,
                                   interpret=plgpu.InterpretGPUParams()))
    o, s = fn(*_inputs(128, 128))
    o0, s0 = _mgpu_interpret(128, 128)
    assert o.dtype == jnp.bfloat16
    np.testing.assert_array_equal(o, o0.astype(jnp.bfloat16))
    np.testing.assert_array_equal(s, s0)
    with pytest.raises(ValueError, match="o_dtype"):
        state_pass_fwd_mgpu(*_inputs(128, 128), o_dtype=jnp.float16)


def test_interpret_saved_delta_matches_triton_kernel():
    """save_delta (what state_pass="mosaic_splitbwd" hands the split backward): bf16 delta =
    u - w S_n equal to the Triton forward's (same bf16 casts; flips of ~2^-9 allowed, see the
    Triton comparison above), and o, S and the states unchanged by saving it."""
    Kp, V = 128, 128
    fn = jax.jit(functools.partial(state_pass_fwd_mgpu, save_states=True, save_delta=True,
                                   interpret=plgpu.InterpretGPUParams()))
    o, s, states, delta = fn(*_inputs(Kp, V))
    assert delta.shape == (BH, N * C, V) and delta.dtype == jnp.bfloat16
    o0, s0 = _mgpu_interpret(Kp, V)
    np.testing.assert_array_equal(o, o0)
    np.testing.assert_array_equal(s, s0)
    w, u, kd, gc, qd, aqk, s0 = _inputs(Kp, V)
    args = [x.astype(jnp.bfloat16) for x in (w, u, kd)] + [gc] + [
        x.astype(jnp.bfloat16) for x in (qd, aqk)] + [s0]  # bf16 operands: bf16 states, delta
    *_, states_t, delta_t = state_pass_fwd_call(
        *args, save_states=True, save_delta=True, precision="default", interpret=True,
        num_warps=4, num_stages=1, block_v=64)
    f32 = lambda x: np.asarray(x.astype(jnp.float32))
    assert rel_err(f32(states), f32(states_t)) < 1e-2
    assert rel_err(f32(delta), f32(delta_t)) < 1e-2
    assert np.mean(f32(delta) == f32(delta_t)) > 0.99


@pytest.mark.parametrize("Kp,V", CASES)
def test_bwd_interpret_matches_reference(Kp, V):
    args, states, do, dsf = _bwd_inputs(Kp, V)
    got = _mgpu_bwd_interpret(Kp, V)
    assert all(np.all(np.isfinite(x)) for x in got)
    want = _reference_bwd(*args, states, do, dsf, bf16_casts=True)
    # The hand loop without casts is the exact vjp of the fp32 forward loop ...
    s0, states32 = states[:, 0], []
    _reference(*args, s0, bf16_casts=False, states=states32)
    _, vjp = jax.vjp(lambda *a: _reference(*a, bf16_casts=False), *args, s0)
    exact = _reference_bwd(*args, jnp.stack(states32, axis=1), do, dsf, bf16_casts=False)
    _assert_close(exact, vjp((do, dsf)), 1e-5)
    # ... and the kernel, from the same bf16 states, differs from it by the backward's casts.
    want32 = _reference_bwd(*args, states, do, dsf, bf16_casts=False)
    _assert_close(got, want32, 1e-2)  # bf16 rounding of dS, delta, dd
    assert rel_err(want[0], want32[0]) > 1e-5  # and the casts matter (dw)
    assert_follows_casts(_NAMES, got, want, want32)  # the kernel's casts, at the kernel's places


@pytest.mark.parametrize("Kp,V", [(64, 64), (128, 128)])
def test_bwd_interpret_matches_triton_kernel(Kp, V):
    """As the forward's Triton comparison: same casts, summation order differs, bf16 flips."""
    args, states, do, dsf = _bwd_inputs(Kp, V)
    want = state_pass_bwd_call(*args, states.reshape(BH, N * Kp, V), do, dsf,
                                precision="default", interpret=True, num_warps=4,
                                num_stages=1, block_v=64)
    _assert_close(_mgpu_bwd_interpret(Kp, V), want, 1e-2)


def test_custom_vjp_grads_match_reference():
    Kp, V = 64, 128
    args = _inputs(Kp, V)
    _, _, do, dsf = _bwd_inputs(Kp, V)
    ip = plgpu.InterpretGPUParams()

    def loss(f):
        def fn(*a):
            o, sf = f(*a)
            return jnp.sum(o * do) + jnp.sum(sf * dsf)
        return jax.jit(jax.grad(fn, argnums=tuple(range(7))))

    got = loss(lambda *a: state_pass_mgpu(*a, ip))(*args)
    want = loss(lambda *a: _reference(*a, bf16_casts=False))(*args)
    _assert_close([np.asarray(g) for g in got], want, 1e-2)


def test_bwd_interpret_no_races():
    from jax._src.pallas.mosaic_gpu.interpret import interpret_pallas_call as ipc
    ip = plgpu.InterpretGPUParams(detect_races=True)
    for Kp in (64, 128):  # two input slots at Kp = 64, one at 128
        args, states, do, dsf = _bwd_inputs(Kp, 64)
        for save_delta in (False, True):
            fwd = jax.jit(functools.partial(state_pass_fwd_mgpu, save_states=True,
                                            save_delta=save_delta, interpret=ip))
            jax.block_until_ready(fwd(*_inputs(Kp, 64)))
            assert not ipc.get_races().races_found
        bwd = jax.jit(functools.partial(state_pass_bwd_mgpu, interpret=ip))
        jax.block_until_ready(bwd(*args, states.reshape(BH, N * Kp, 64), do, dsf))
        assert not ipc.get_races().races_found


@pytest.mark.parametrize("Kp", [64, 128])
def test_fwd_states_and_bwd_lower_for_cuda(Kp):
    V = 128
    args, states, do, dsf = _bwd_inputs(Kp, V)
    spec = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)
    fwd = functools.partial(state_pass_fwd_mgpu, save_states=True, save_delta=True,
                            o_dtype=jnp.bfloat16)  # as the split-backward path runs it
    for f, a in ((fwd, _inputs(Kp, V)),
                 (state_pass_bwd_mgpu, (*args, states.reshape(BH, N * Kp, V), do, dsf))):
        lowered = jax.jit(f).trace(*map(spec, a)).lower(lowering_platforms=("cuda",))
        assert "stablehlo.custom_call @mosaic_gpu" in lowered.as_text()


def _api_errors(shape, *, interpret, state_pass="mosaic", **kw):
    """Relative errors of o, the final state and the q, k, v, g, beta gradients of the whole
    pallas_gpu path with state_pass="mosaic" (and keywords kw) against `reference.chunked`."""
    from kernels.gated_delta_rule import reference
    from kernels.gated_delta_rule.pallas_gpu import chunk_gated_delta_rule_pallas_gpu
    from tests.test_kernels_gdr import make_inputs
    B, T, H, HV, K, V = shape
    q, k, v, g, beta, S0 = make_inputs(21, B, T, H, HV, K, V, decay="mild", unit_k=False)

    def run(fn):
        def loss(*a):
            o, S = fn(*a, initial_state=S0, use_qk_l2norm=True)
            return jnp.sum(o * jnp.cos(o)) + jnp.sum(S), (o, S)
        grad = jax.jit(jax.value_and_grad(loss, argnums=range(5), has_aux=True))
        (_, out), grads = grad(q, k, v, g, beta)
        return out, grads

    (o, S), grads = run(functools.partial(
        chunk_gated_delta_rule_pallas_gpu, chunk_size=64, interpret=interpret,
        precision="default", state_pass=state_pass, **kw))
    (o_r, S_r), grads_r = run(functools.partial(reference.chunked, chunk_size=64))
    errs = {"o": rel_err(o, o_r), "S": rel_err(S, S_r)}
    errs.update({f"d{n}": rel_err(a, b) for n, a, b in zip("qkvgb", grads, grads_r)})
    return errs


@pytest.mark.parametrize("state_pass", ["mosaic", "mosaic_splitbwd"])
def test_api_state_pass_mosaic_matches_chunked_reference(state_pass):
    """The whole pallas_gpu path with the Mosaic state pass, or its forward and the Triton split
    backward (Pallas prep in Triton interpret mode, Mosaic kernels in the Mosaic GPU
    interpreter), at bf16-operand tolerance (precision="default"). Four chunks and 1e-2, not
    two and 3e-2: there a kernel missing the -w^T dd term of the dS update still passed
    (ninth session, tests/test_kernels_gdr_mgpu_dh.py)."""
    from kernels.gated_delta_rule.pallas_gpu import chunk_gated_delta_rule_pallas_gpu
    errs = _api_errors((1, 256, 1, 1, 64, 64), interpret=True, state_pass=state_pass)
    assert max(errs.values()) < 1e-2, errs
    args = [jnp.zeros((1, 64, 1, 64))] * 3 + [jnp.zeros((1, 64, 1))] * 2
    with pytest.raises(ValueError, match="precision"):
        chunk_gated_delta_rule_pallas_gpu(*args, interpret=True, state_pass=state_pass)


@pytest.mark.gpu
@pytest.mark.parametrize("state_pass", ["mosaic", "mosaic_splitbwd"])
def test_gpu_api_state_pass_mosaic_matches_chunked_reference(state_pass):
    """Compiled on a GPU: the 7B layer's head dims (K=96 -> 128, V=192: three V tiles)."""
    errs = _api_errors((1, 300, 2, 4, 96, 192), interpret=False, state_pass=state_pass)
    print(f"state_pass={state_pass} errors:", errs)
    assert max(errs.values()) < 3e-2, errs


def test_pallas_mgpu_is_an_api_implementation_for_gpus_only():
    """`implementation="pallas_mgpu"` (API) and `gdn_implementation=pallas_mgpu` (model config):
    refused off a GPU backend, and refused at precision "highest" before anything compiles."""
    from hybrid_jax.config import ConfigError, ModelConfig
    from kernels import chunk_gated_delta_rule
    args = [jnp.zeros((1, 64, 1, 64))] * 3 + [jnp.zeros((1, 64, 1))] * 2
    with pytest.raises(RuntimeError, match="compiles only for a gpu"):
        chunk_gated_delta_rule(*args, implementation="pallas_mgpu", precision="default")
    ModelConfig(gdn_implementation="pallas_mgpu", gdn_precision="default")
    with pytest.raises(ConfigError, match="gdn_precision=default"):
        ModelConfig(gdn_implementation="pallas_mgpu")
