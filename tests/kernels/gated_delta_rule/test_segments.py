"""Packed documents (segment_ids): the state empties at every segment start, so a packed row
gives what each document gives alone, forward and gradients, in every implementation.

The oracle is `recurrent`, which empties the state explicitly; it is itself checked against
running each document on its own. The chunked implementations reset through the decay
(`reference.reset_log_decay` at each start), in XLA and in the Pallas kernels' interpreters.
Boundaries fall mid-chunk, on a chunk edge and one token apart; T is no chunk multiple; value
heads are grouped; the first segment enters from an initial state.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import chunk_gated_delta_rule
from kernels.gated_delta_rule import reference
from kernels.gated_delta_rule.api import reset_at_segment_starts

from tests.helpers.gdr import make_inputs, rel_err

# B=2, T=45, H=1 key head on HV=2 value heads, K=32, V=16. Row 0: documents of 7, 9 (ending
# on the chunk-16 edge), 1, 1 and 27 tokens; row 1: one document (ids need not be sorted).
B, T, H, HV, K, V = 2, 45, 1, 2, 32, 16
LENGTHS = ((7, 9, 1, 1, 27), (45,))
SEGMENTS = np.stack([np.repeat(np.arange(len(ls)) * 3 + 5, ls) for ls in LENGTHS]
                    ).astype(np.int32)


def _inputs(decay="mild"):
    return make_inputs(11, B, T, H, HV, K, V, decay=decay, init=True)


def _weights():
    rng = np.random.default_rng(2)
    return (jnp.asarray(rng.normal(size=(B, T, HV, V)), jnp.float32),
            jnp.asarray(rng.normal(size=(B, HV, K, V)), jnp.float32))


def _forward_and_grads(fn, args):
    """((o, final state), grads w.r.t. q, k, v, g, beta, initial state) of a random linear
    functional of both outputs."""
    w_o, w_S = _weights()

    def loss(*a):
        o, S = fn(*a)
        return jnp.sum(o * w_o) + jnp.sum(S * w_S), (o, S)

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(6)),
                                                 has_aux=True))(*map(jnp.asarray, args))
    return out, grads


def _packed(impl_fn, packed_g=True):
    """fn(q, k, v, g, beta, S0) running impl_fn on the packed rows (g reset at the starts when
    packed_g, as the API does for every chunked implementation)."""
    def fn(q, k, v, g, beta, S0):
        if packed_g:
            g = reset_at_segment_starts(g, jnp.asarray(SEGMENTS), jnp.float32)
        return impl_fn(q, k, v, g, beta, initial_state=S0)
    return fn


@functools.lru_cache(maxsize=None)
def _oracle(decay="mild"):
    recurrent = functools.partial(reference.recurrent, segment_ids=jnp.asarray(SEGMENTS))
    return _forward_and_grads(_packed(recurrent, packed_g=False), _inputs(decay))


def _check(got, want, tol):
    (o, S), grads = got
    (o_w, S_w), grads_w = want
    names = ("o", "S", "dq", "dk", "dv", "dg", "dbeta", "dS0")
    for name, a, b in zip(names, (o, S) + tuple(grads), (o_w, S_w) + tuple(grads_w)):
        assert rel_err(a, b) < tol, (name, rel_err(a, b))


def test_recurrent_packed_equals_each_document_alone():
    (o, S), grads = _oracle()
    q, k, v, g, beta, S0 = _inputs()
    w_o, w_S = _weights()
    start = 0
    docs = LENGTHS[0]
    for i, n in enumerate(docs):
        sl = slice(start, start + n)
        last = i == len(docs) - 1

        def alone(q, k, v, g, beta, s0):
            o, S = reference.recurrent(q, k, v, g, beta, initial_state=s0)
            return jnp.sum(o * w_o[:1, sl]) + (jnp.sum(S * w_S[:1]) if last else 0.0), o

        s0 = S0[:1] if i == 0 else jnp.zeros_like(S0[:1])
        (_, o_alone), d = jax.value_and_grad(alone, argnums=tuple(range(6)), has_aux=True)(
            *(jnp.asarray(x[:1, sl]) for x in (q, k, v, g, beta)), jnp.asarray(s0))
        np.testing.assert_allclose(o[:1, sl], o_alone, rtol=1e-5, atol=1e-6)
        for packed, single in zip(grads[:5], d[:5]):
            np.testing.assert_allclose(packed[:1, sl], single, rtol=1e-4, atol=1e-5)
        if i > 0:  # a later document's first decay multiplies an empty state: no gradient
            assert np.all(np.asarray(grads[3][:1, start]) == 0)
        if i == 0:
            np.testing.assert_allclose(grads[5][:1], d[5], rtol=1e-4, atol=1e-5)
        start += n
    # the unpacked row (one document) is the plain recurrence
    o1, S1 = reference.recurrent(*(jnp.asarray(x[1:]) for x in (q, k, v, g, beta)),
                                 initial_state=jnp.asarray(S0[1:]))
    np.testing.assert_allclose(o[1:], o1, rtol=1e-6)
    np.testing.assert_allclose(S[1:], S1, rtol=1e-6)


@pytest.mark.parametrize("decay", ["mild", "strong"])
@pytest.mark.parametrize("chunk_size", [16, 64])
def test_chunked_reset_matches_the_recurrent_reset(decay, chunk_size):
    fn = functools.partial(reference.chunked, chunk_size=chunk_size)
    _check(_forward_and_grads(_packed(fn), _inputs(decay)), _oracle(decay), 2e-5)


def test_api_packs_for_every_xla_implementation():
    q, k, v, g, beta, S0 = map(jnp.asarray, _inputs())
    seg = jnp.asarray(SEGMENTS)
    want, _ = _oracle()
    for impl in ("recurrent", "chunked"):
        o, S = chunk_gated_delta_rule(q, k, v, g, beta, initial_state=S0, segment_ids=seg,
                                      output_final_state=True, chunk_size=16,
                                      implementation=impl)
        assert rel_err(o, want[0]) < 2e-5 and rel_err(S, want[1]) < 2e-5, impl
    with pytest.raises(ValueError, match=r"segment_ids must have shape \[B, T\]"):
        chunk_gated_delta_rule(q, k, v, g, beta, segment_ids=seg[:, :3])
    with pytest.raises(TypeError, match="segment_ids must be integers"):
        chunk_gated_delta_rule(q, k, v, g, beta, segment_ids=seg.astype(jnp.float32))


# "default" (bf16 dot operands) takes in-chunk decays as differences of the chunk's cumulative
# sum, which the reset offsets by 128: still within the kernel's bf16-level error (2e-3-6e-3
# here, as without packing).
@pytest.mark.parametrize("precision, chunk_size, tol", [("highest", 16, 2e-5),
                                                        ("default", 64, 1e-2)])
def test_pallas_gpu_interpret_reset_matches_the_recurrent_reset(precision, chunk_size, tol):
    from kernels.gated_delta_rule.gpu.chunk import chunk_gated_delta_rule_pallas_gpu
    fn = functools.partial(chunk_gated_delta_rule_pallas_gpu, chunk_size=chunk_size,
                           interpret=True, precision=precision)
    _check(_forward_and_grads(_packed(fn), _inputs("strong")), _oracle("strong"), tol)


def test_pallas_tpu_interpret_reset_matches_the_recurrent_reset():
    from kernels.gated_delta_rule.tpu.chunk import chunk_gated_delta_rule_pallas_tpu
    fn = functools.partial(chunk_gated_delta_rule_pallas_tpu, chunk_size=16, interpret=True)
    _check(_forward_and_grads(_packed(fn), _inputs("strong")), _oracle("strong"), 2e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("precision, tol", [("highest", 1e-4), ("default", 3e-2)])
def test_gpu_api_packs_with_the_compiled_kernels(precision, tol):
    q, k, v, g, beta, S0 = map(jnp.asarray, _inputs("strong"))
    o, S = chunk_gated_delta_rule(q, k, v, g, beta, initial_state=S0, output_final_state=True,
                                  segment_ids=jnp.asarray(SEGMENTS), chunk_size=16,
                                  implementation="pallas_gpu", precision=precision)
    (o_w, S_w), _ = _oracle("strong")
    assert rel_err(o, o_w) < tol and rel_err(S, S_w) < tol
