"""Pallas TPU gated delta rule in TPU interpret mode (no libtpu needed) against the references.

Forward output, final state and the gradients of every input against the float64 recurrence
(fp32 tolerance 1e-4), on awkward shapes; bf16 within twice the recurrent reference's own
bf16 error; strong decay stays finite.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

from kernels.gated_delta_rule import reference
from kernels.gated_delta_rule.tpu import chunk as pallas_tpu

from tests.helpers.gdr import make_inputs, np_gated_delta_rule, rel_err

TOL = 1e-4
INTERPRET = pltpu.InterpretParams()

# (B, T, H, HV, K, V, initial state, decay, chunk_size, use_qk_l2norm, scale)
CASES = {
    "T37-K32-V48-gqa-mild-init-c16": (1, 37, 1, 2, 32, 48, True, "mild", 16, False, None),
    "T21-K16-V24-strong-l2-c8": (2, 21, 2, 2, 16, 24, False, "strong", 8, True, None),
    "T40-K24-V16-gqa-zero-init-c16-scale": (1, 40, 1, 2, 24, 16, True, "zero", 16, False, 0.3),
}


def _run(fn, weights, args, **kw):
    def loss(q, k, v, g, beta, S0):
        o, S = fn(q, k, v, g, beta, initial_state=S0, **kw)
        return jnp.sum(o * weights[0]) + jnp.sum(S * weights[1]), (o, S)

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=range(6), has_aux=True))(*args)
    return out, grads


@pytest.mark.parametrize("case", list(CASES))
def test_forward_and_grads_match_float64(case):
    B, T, H, HV, K, V, init, decay, C, l2, scale = CASES[case]
    q, k, v, g, beta, S0 = make_inputs(list(CASES).index(case), B, T, H, HV, K, V,
                                       decay=decay, init=True, unit_k=not l2)
    if not init:
        S0 = np.zeros_like(S0)
    rng = np.random.default_rng(1)
    weights = (rng.normal(size=(B, T, HV, V)), rng.normal(size=(B, HV, K, V)))
    args = (q, k, v, g, beta, S0)
    with jax.enable_x64(True):
        (o64, S64), grads64 = _run(reference.recurrent,
                                   tuple(jnp.asarray(w, jnp.float64) for w in weights),
                                   tuple(jnp.asarray(a, jnp.float64) for a in args),
                                   scale=scale, use_qk_l2norm=l2)
        grads64 = [np.asarray(x) for x in grads64]
    o_np, S_np = np_gated_delta_rule(q, k, v, g, beta, scale=scale, initial_state=S0,
                                     use_qk_l2norm=l2)
    assert rel_err(o64, o_np) < 1e-12
    fn = functools.partial(pallas_tpu.chunk_gated_delta_rule_pallas_tpu, interpret=INTERPRET)
    (o, S), grads = _run(fn, tuple(jnp.asarray(w, jnp.float32) for w in weights), args,
                         scale=scale, use_qk_l2norm=l2, chunk_size=C)
    assert o.dtype == jnp.float32 and S.dtype == jnp.float32
    assert o.shape == (B, T, HV, V) and S.shape == (B, HV, K, V)
    assert rel_err(o, o_np) < TOL and rel_err(S, S_np) < TOL
    errs = {n: rel_err(a, b) for n, a, b in
            zip(("q", "k", "v", "g", "beta", "initial_state"), grads, grads64)}
    assert max(errs.values()) < TOL, errs


def test_matches_chunked_reference_without_initial_state():
    q, k, v, g, beta, _ = make_inputs(11, 1, 50, 2, 4, 32, 40, decay="mild")
    o, S = pallas_tpu.chunk_gated_delta_rule_pallas_tpu(q, k, v, g, beta, chunk_size=16,
                                                         interpret=INTERPRET)
    o_ref, S_ref = reference.chunked(q, k, v, g, beta, chunk_size=16)
    assert rel_err(o, o_ref) < TOL and rel_err(S, S_ref) < TOL


def test_bf16_error_within_twice_the_recurrent_error():
    q, k, v, g, beta, S0 = make_inputs(4, 1, 40, 1, 2, 32, 48, decay="mild", unit_k=False)
    o_np, S_np = np_gated_delta_rule(q, k, v, g, beta, initial_state=S0, use_qk_l2norm=True)
    bf = [jnp.asarray(x, jnp.bfloat16) for x in (q, k, v, g, beta)]
    o_ref, S_ref = reference.recurrent(*bf, initial_state=jnp.asarray(S0), use_qk_l2norm=True)
    o, S = pallas_tpu.chunk_gated_delta_rule_pallas_tpu(
        *bf, initial_state=jnp.asarray(S0), use_qk_l2norm=True, chunk_size=16,
        interpret=INTERPRET)
    assert o.dtype == jnp.bfloat16 and S.dtype == jnp.float32
    assert rel_err(o, o_np) <= 2 * rel_err(o_ref, o_np) + 1e-3
    assert rel_err(S, S_np) <= 2 * rel_err(S_ref, S_np) + 1e-3


def test_strong_decay_stays_finite():
    """g = -20 per token: in-chunk exponents reach -20 * C; masked before exp, never clipped."""
    q, k, v, _, beta, S0 = make_inputs(6, 1, 64, 1, 1, 16, 16)
    g = np.full(beta.shape, -20.0, np.float32)

    def loss(q, k, v, g, beta, S0):
        o, S = pallas_tpu.chunk_gated_delta_rule_pallas_tpu(
            q, k, v, g, beta, initial_state=S0, chunk_size=32, interpret=INTERPRET)
        return jnp.sum(o) + jnp.sum(S), o

    (val, o), grads = jax.jit(jax.value_and_grad(loss, argnums=range(6), has_aux=True))(
        q, k, v, g, beta, S0)
    assert np.isfinite(val) and all(np.all(np.isfinite(x)) for x in grads)
    last = beta[:, -1, :, None, None] * k[:, -1, :, :, None] * v[:, -1, :, None, :]
    np.testing.assert_allclose(o[:, -1], np.einsum("bhkv,bhk->bhv", last, q[:, -1]) / 4,
                               rtol=1e-5, atol=1e-6)


def test_chunk_size_must_be_a_sublane_multiple():
    q, k, v, g, beta, _ = make_inputs(7, 1, 8, 1, 1, 8, 8)
    with pytest.raises(ValueError, match="multiple of 8"):
        pallas_tpu.chunk_gated_delta_rule_pallas_tpu(q, k, v, g, beta, chunk_size=12,
                                                     interpret=INTERPRET)


def test_interpret_none_means_interpret_mode_off_tpu():
    if jax.default_backend() == "tpu":
        assert pallas_tpu.resolve_interpret(None) is False
    else:
        assert isinstance(pallas_tpu.resolve_interpret(None), pltpu.InterpretParams)
    assert isinstance(pallas_tpu.resolve_interpret(True), pltpu.InterpretParams)
    assert pallas_tpu.resolve_interpret(False) is False
