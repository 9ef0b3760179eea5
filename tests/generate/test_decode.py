"""Decoding with caches reproduces the full forward, for all three families."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hybrid_jax.generate.decode import decode_step, prefill
from hybrid_jax.models.lm import build_model
from tests.generate.tiny import CONFIGS


def tiny_model(family: str, seed: int = 0):
    return build_model(CONFIGS[family], seed=seed)


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_cached_decoding_matches_the_full_forward(family):
    cfg = CONFIGS[family]
    model = tiny_model(family, seed=1)
    graphdef, state = nnx.split(model)
    B, total, cache_len = 2, 15, 16
    tokens = np.asarray(jax.random.randint(jax.random.key(2), (B, total), 0, cfg.vocab_size))
    lengths = np.array([7, 3], np.int32)
    full = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))(state, jnp.asarray(tokens))

    # Right padding with garbage tokens: the cache must never read them.
    prompt = tokens[:, :7].copy()
    prompt[1, 3:] = [3, 59, 0, 7]
    run_prefill = jax.jit(lambda s, t, n: prefill(nnx.merge(graphdef, s), t, n, cache_len))
    logits, caches = run_prefill(state, jnp.asarray(prompt), jnp.asarray(lengths))
    for b in range(B):
        np.testing.assert_allclose(logits[b, :lengths[b]], full[b, :lengths[b]],
                                   rtol=1e-5, atol=1e-5)

    step = jax.jit(lambda s, t, p, c: decode_step(nnx.merge(graphdef, s), t, p, c))
    pos = lengths.copy()
    while pos.max() < total:
        p = np.minimum(pos, total - 1)  # a finished row repeats its last position
        out, caches = step(state, jnp.asarray(tokens[np.arange(B), p]), jnp.asarray(p), caches)
        for b in range(B):
            if pos[b] < total:
                ref = np.asarray(full[b, pos[b]])
                np.testing.assert_allclose(out[b], ref, rtol=1e-5, atol=1e-5,
                                           err_msg=f"{family} row {b} position {pos[b]}")
        pos = pos + 1


def test_prompt_longer_than_the_cache_is_refused():
    model = tiny_model("transformer")
    with pytest.raises(ValueError, match="longer than the cache"):
        prefill(model, jnp.zeros((1, 9), jnp.int32), jnp.array([9]), 8)
