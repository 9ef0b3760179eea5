"""Text generation: `generate(model, tokenizer, prompts, ...)`, and the `Decoder` it runs on.

Each prompt is encoded as [eos] + tokens: the training stream is `EOS doc EOS doc ...`, so a
document always follows an EOS, and an empty prompt still has a token to condition on.
Generation stops per row at EOS (not returned) or after `max_new_tokens`.

The Decoder jits prefill (with the first token's choice) and one decode step (with the next
token's choice) through nnx.split/merge: one compile per (batch, padded prompt length, cache
length); tokens, positions, the key and the sampling settings are arguments, so nothing
retraces per token, seed or setting. Prompt lengths are padded up to a multiple of
`PROMPT_BUCKET` so that prompts of similar lengths share a compile. With a mesh the parameters
are placed as training places them and the batch is split over the mesh's batch axes (rows are
padded to a multiple of that size).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from hybrid_jax import sharding
from hybrid_jax.generate.decode import check_lengths, decode_step, prefill_last
from hybrid_jax.generate.sampling import Sampling, choose
from hybrid_jax.models.lm import LM

PROMPT_BUCKET = 64


@dataclasses.dataclass(frozen=True)
class Completion:
    text: str
    tokens: list[int]       # the new tokens, without the EOS that stopped them
    stop: str               # "eos" or "length"


class Decoder:
    def __init__(self, model: LM, *, mesh: Mesh | None = None):
        self.cfg = model.cfg
        self.graphdef, state = nnx.split(model)
        self.mesh = mesh
        if mesh is not None:
            plan = sharding.param_plan(nnx.state(model, nnx.Param), mesh)
            state = jax.device_put(nnx.to_pure_dict(state), plan.shardings)
        else:
            state = nnx.to_pure_dict(state)
        self.state = state
        self._prefill = jax.jit(self._prefill_fn, static_argnames=("cache_len",))
        self._step = jax.jit(self._step_fn, donate_argnames=("caches",))

    def _model(self, state) -> LM:
        return nnx.merge(self.graphdef, state)

    def _prefill_fn(self, state, tokens_BT, lengths_B, key, sampling, *, cache_len):
        logits_BY, caches = prefill_last(self._model(state), tokens_BT, lengths_B, cache_len)
        return choose(logits_BY, key, sampling), caches

    def _step_fn(self, state, tokens_B, pos_B, caches, key, done_B, eos_id, sampling):
        logits_BY, caches = decode_step(self._model(state), tokens_B, pos_B, caches)
        new_B = jnp.where(done_B, eos_id, choose(logits_BY, key, sampling))
        return new_B, caches, done_B | (new_B == eos_id)

    def _context(self):
        if self.mesh is None:
            return contextlib.nullcontext()
        return jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh)

    def _rows(self, array: np.ndarray):
        if self.mesh is None:
            return jnp.asarray(array)
        return jax.device_put(array, sharding.batch_sharding(self.mesh))

    def decode(self, prompts: list[list[int]], *, max_new_tokens: int, eos_id: int,
               sampling: Sampling = Sampling(), max_len: int | None = None,
               prompt_len: int | None = None) -> list[tuple[list[int], str]]:
        """(new tokens, stop reason) per prompt of token ids. Prompts are padded to at least
        `prompt_len` tokens, and with `max_len` the cache holds max_len positions (more only
        where the padded prompt needs them; else prompt + max_new_tokens): calls with the same
        batch, prompt_len and max_len share one compile, whatever their prompts' lengths."""
        if not prompts:
            return []
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
                or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
        lengths = [len(p) for p in prompts]
        if min(lengths) < 1:
            raise ValueError("a prompt has no tokens; decoding needs at least one")
        if max(max(p) for p in prompts) >= self.cfg.vocab_size:
            raise ValueError(f"a prompt token id is >= the model's vocab_size "
                             f"{self.cfg.vocab_size}: tokenizer and model do not match")
        if max_len is not None and max(lengths) + max_new_tokens > max_len:
            raise ValueError(f"prompt of {max(lengths)} tokens + {max_new_tokens} new tokens "
                             f"is longer than max_len={max_len}")
        rows = len(prompts)
        if self.mesh is not None:  # every data-parallel shard gets whole rows
            dp = sharding.data_parallel_size(self.mesh)
            rows = -(-rows // dp) * dp
        T = PROMPT_BUCKET * math.ceil(max(max(lengths), prompt_len or 0) / PROMPT_BUCKET)
        cache_len = max(max_len or 0, T + max_new_tokens)
        check_lengths(T, cache_len)
        tokens = np.full((rows, T), eos_id, np.int32)
        lengths_B = np.ones(rows, np.int32)
        for i, p in enumerate(prompts):
            tokens[i, :len(p)] = p
            lengths_B[i] = len(p)
        settings = sampling.arrays()
        key = jax.random.key(sampling.seed)
        with self._context():
            key, sub = jax.random.split(key)
            nxt, caches = self._prefill(self.state, self._rows(tokens), self._rows(lengths_B),
                                        sub, settings, cache_len=cache_len)
            done = nxt == eos_id
            pos = self._rows(lengths_B)
            out = [nxt]
            for _ in range(max_new_tokens - 1):
                if bool(jnp.all(done)):
                    break
                key, sub = jax.random.split(key)
                nxt, caches, done = self._step(self.state, nxt, pos, caches, sub, done,
                                               jnp.int32(eos_id), settings)
                pos = pos + 1
                out.append(nxt)
        new = np.asarray(jax.device_get(jnp.stack(out, axis=1)))[:len(prompts)]
        results = []
        for row in new.tolist():
            if eos_id in row:
                results.append((row[:row.index(eos_id)], "eos"))
            else:
                results.append((row, "length"))
        return results


def encode_prompt(tokenizer, text: str) -> list[int]:
    """[eos] + the text's tokens (see the module docstring)."""
    return [tokenizer.eos_id] + list(tokenizer.encode(text))


def generate(model: LM | Decoder, tokenizer, prompts: list[str], *, max_new_tokens: int = 64,
             sampling: Sampling = Sampling(), mesh: Mesh | None = None) -> list[Completion]:
    """Complete each prompt; greedy unless `sampling` says otherwise."""
    decoder = model if isinstance(model, Decoder) else Decoder(model, mesh=mesh)
    ids = [encode_prompt(tokenizer, p) for p in prompts]
    out = decoder.decode(ids, max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_id,
                         sampling=sampling)
    return [Completion(tokenizer.decode(toks), toks, stop) for toks, stop in out]
