"""Log-likelihood of continuations given contexts, batched: the core of the lm-eval model.

    Scorer(model, batch_size=8, max_length=4096).score([(context_ids, continuation_ids), ...])
        -> [(sum of log p(continuation token | everything before it), whether every
            continuation token is the argmax)]

One full forward per batch; only each position's target log-probability and argmax flag come
back to the host, never the logits. Rows are sorted by length (longest first) and padded on the
right to a multiple of `LENGTH_BUCKET`, so a few compiles serve any request mix; causality makes
the padding invisible to the scored positions. A sequence longer than max_length + 1 keeps its
last max_length + 1 tokens (the context is cut from the left); a continuation longer than
max_length is refused.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hybrid_jax.models.lm import LM
from hybrid_jax.train.step import token_losses

LENGTH_BUCKET = 64


class Scorer:
    def __init__(self, model: LM, *, batch_size: int = 8, max_length: int = 4096):
        if batch_size < 1 or max_length < 1:
            raise ValueError(f"batch_size and max_length must be >= 1, got {batch_size}, "
                             f"{max_length}")
        self.batch_size, self.max_length = batch_size, max_length
        graphdef, state = nnx.split(model)
        self.state = nnx.to_pure_dict(state)

        def target_logprobs(state, inputs_BT, targets_BT):
            logits_BTY = nnx.merge(graphdef, state)(inputs_BT)
            nll_BT, _ = token_losses(logits_BTY, targets_BT)  # training's own loss
            return -nll_BT, jnp.argmax(logits_BTY, axis=-1) == targets_BT

        self._fn = jax.jit(target_logprobs)

    def score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        rows = []
        for i, (ctx, cont) in enumerate(pairs):
            if not ctx or not cont:
                raise ValueError(f"request {i}: context and continuation need >= 1 token each "
                                 f"(got {len(ctx)} and {len(cont)})")
            if len(cont) > self.max_length:
                raise ValueError(f"request {i}: continuation of {len(cont)} tokens is longer "
                                 f"than max_length={self.max_length}")
            full = (list(ctx) + list(cont))[-(self.max_length + 1):]
            rows.append((i, full, len(cont)))
        rows.sort(key=lambda r: -len(r[1]))
        out: list[tuple[float, bool]] = [(0.0, False)] * len(pairs)
        for b0 in range(0, len(rows), self.batch_size):
            batch = rows[b0:b0 + self.batch_size]
            T = LENGTH_BUCKET * math.ceil((len(batch[0][1]) - 1) / LENGTH_BUCKET)
            inputs = np.zeros((self.batch_size, T), np.int32)
            targets = np.zeros((self.batch_size, T), np.int32)
            for r, (_, full, _) in enumerate(batch):
                inputs[r, :len(full) - 1] = full[:-1]
                targets[r, :len(full) - 1] = full[1:]
            logp, greedy = jax.device_get(self._fn(self.state, inputs, targets))
            for r, (i, full, n) in enumerate(batch):
                end = len(full) - 1
                out[i] = (float(np.sum(logp[r, end - n:end], dtype=np.float64)),
                          bool(np.all(greedy[r, end - n:end])))
        return out
