"""The generation API and `hybrid-jax generate`: greedy decoding equals a greedy loop over the
full forward; EOS stops a row; sampling settings are validated; bad input is refused."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hybrid_jax.generate.api import Decoder
from hybrid_jax.generate.sampling import Sampling
from hybrid_jax.models.lm import build_model
from tests.generate.tiny import CONFIGS
from tests.helpers.training import run_python


@pytest.fixture(scope="module")
def hybrid():
    model = build_model(CONFIGS["hybrid"], seed=4)
    return model, Decoder(model)


def _greedy_by_full_forward(model, prompts, n):
    """Reference: each token the argmax of a full forward over everything so far."""
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))
    L = max(map(len, prompts)) + n
    seqs = [list(p) for p in prompts]
    for _ in range(n):
        padded = np.zeros((len(seqs), L), np.int32)
        for i, s in enumerate(seqs):
            padded[i, :len(s)] = s
        logits = np.asarray(forward(state, jnp.asarray(padded)))
        for i, s in enumerate(seqs):
            s.append(int(np.argmax(logits[i, len(s) - 1])))
    return [s[len(p):] for s, p in zip(seqs, prompts)]


def test_greedy_decoding_equals_greedy_over_the_full_forward(hybrid):
    model, decoder = hybrid
    prompts = [[5, 17, 3, 9, 44, 2, 8], [11, 30]]
    want = _greedy_by_full_forward(model, prompts, 12)
    unused = min(set(range(61)) - set(sum(want, [])))
    got = decoder.decode(prompts, max_new_tokens=12, eos_id=unused)
    assert got == [(w, "length") for w in want]
    # EOS stops a row: make the token row 0 emits fourth the end of text.
    eos = want[0][3]
    first = want[0].index(eos)
    got = decoder.decode(prompts, max_new_tokens=12, eos_id=eos)
    assert got[0] == (want[0][:first], "eos")


def test_padding_to_a_prompt_and_cache_length_changes_nothing(hybrid):
    model, _ = hybrid
    decoder = Decoder(model)  # its own compiles: test_sampling counts the shared decoder's
    prompts = [[5, 17, 3, 9, 44, 2, 8], [11, 30]]
    want = decoder.decode(prompts, max_new_tokens=5, eos_id=60)
    before = decoder._prefill._cache_size()
    # Two calls of different new-token counts, padded to one prompt and cache length: one
    # compile of the prefill for both, and the same tokens as unpadded decoding.
    for n in (5, 3):
        got = decoder.decode(prompts, max_new_tokens=n, eos_id=60, prompt_len=100, max_len=180)
        assert got == [(w[:n], s if n == 5 else "length") for w, s in want]
    assert decoder._prefill._cache_size() == before + 1
    with pytest.raises(ValueError, match="longer than max_len"):
        decoder.decode(prompts, max_new_tokens=5, eos_id=60, max_len=10)


def test_sampling(hybrid):
    _, decoder = hybrid
    prompts = [[5, 17, 3], [11, 30, 2, 2]]
    greedy = decoder.decode(prompts, max_new_tokens=12, eos_id=60)
    # top_k = 1 and a tiny top_p leave only the argmax to draw. (12 new tokens, as the test
    # above: the same cache length, so the same compiled programs.)
    for s in (Sampling(temperature=1.0, top_k=1, seed=3), Sampling(temperature=2.0, top_p=1e-6)):
        assert decoder.decode(prompts, max_new_tokens=12, eos_id=60, sampling=s) == greedy
    hot = Sampling(temperature=5.0, seed=1)
    a = decoder.decode(prompts, max_new_tokens=12, eos_id=60, sampling=hot)
    assert a == decoder.decode(prompts, max_new_tokens=12, eos_id=60, sampling=hot)
    assert a != greedy  # near-uniform draws from 61 ids: equal with probability ~1e-21
    # Seeds, settings and tokens are arguments: one compiled prefill and step for all of it.
    assert decoder._prefill._cache_size() == 1 and decoder._step._cache_size() == 1


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=-1.0), "temperature"), (dict(top_k=5), "greedy"),
    (dict(temperature=1.0, top_p=0.0), "top_p"), (dict(temperature=1.0, top_k=-2), "top_k")])
def test_bad_sampling_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Sampling(**kwargs)


def test_bad_decode_input_is_refused(hybrid):
    _, decoder = hybrid
    with pytest.raises(ValueError, match="vocab_size"):
        decoder.decode([[1, 61]], max_new_tokens=2, eos_id=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        decoder.decode([[1]], max_new_tokens=0, eos_id=0)
    with pytest.raises(ValueError, match="max_len"):
        decoder.decode([[1, 2, 3]], max_new_tokens=8, eos_id=0, max_len=10)


def test_decoding_sharded_over_two_devices_matches_one(hybrid):
    """fsdp = 2: the batch split over the devices and every weight's model dimension too."""
    _, decoder = hybrid
    prompts = [[5, 17, 3, 9, 44, 2, 8], [11, 30], [1, 2, 3]]
    want = decoder.decode(prompts, max_new_tokens=12, eos_id=60)
    child = run_python("""
        import json, sys
        from hybrid_jax.generate.api import Decoder
        from hybrid_jax.models.lm import build_model
        from hybrid_jax.sharding import make_mesh
        from tests.generate.tiny import CONFIGS
        decoder = Decoder(build_model(CONFIGS["hybrid"], seed=4), mesh=make_mesh((1, 2, 1)))
        print(json.dumps(decoder.decode(json.loads(sys.argv[1]), max_new_tokens=12, eos_id=60)))
        """, json.dumps(prompts), devices=2)
    got = json.loads(child.stdout.strip().splitlines()[-1])
    assert [(t, s) for t, s in got] == want
