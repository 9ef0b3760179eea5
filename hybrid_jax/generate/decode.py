"""Model-level decoding: prefill a right-padded prompt batch into per-layer caches, then advance
every row one token at a time.

    logits_BTY, caches = prefill(model, tokens_BT, lengths_B, cache_len)
    logits_BY, caches = prefill_last(model, tokens_BT, lengths_B, cache_len)  # generation's
    logits_BY, caches = decode_step(model, tokens_B, pos_B, caches)

Row b's prompt is tokens_BT[b, :lengths_B[b]]; its next token goes to position pos_B[b]
(= lengths_B[b] for the first step). The caches hold `cache_len` positions: a row may reach
position cache_len - 1. The functions are pure given the model, so callers jit them through
nnx.split/merge (hybrid_jax.generate.api).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hybrid_jax.generate.caches import Cache, prefill_layer, step_layer
from hybrid_jax.models.lm import RESIDUAL, LM
from hybrid_jax.sharding import constrain


def check_lengths(T: int, cache_len: int) -> None:
    if T > cache_len:
        raise ValueError(f"prompt of {T} tokens is longer than the cache ({cache_len} "
                         f"positions); raise the cache length (max_new_tokens + prompt)")


def prefill(model: LM, tokens_BT: jax.Array, lengths_B: jax.Array, cache_len: int
            ) -> tuple[jax.Array, list[Cache]]:
    """(logits [B, T, vocab] fp32 of the training forward, one cache per layer)."""
    x_BTD, caches = prefill_hidden(model, tokens_BT, lengths_B, cache_len)
    return model.head(x_BTD), caches


def prefill_last(model: LM, tokens_BT: jax.Array, lengths_B: jax.Array, cache_len: int
                 ) -> tuple[jax.Array, list[Cache]]:
    """(logits [B, vocab] at each row's last prompt token, caches): the unembedding runs on one
    position per row, not on [B, T, vocab] (13 GB in fp32 at B 8, T 4096, vocab 100k)."""
    x_BTD, caches = prefill_hidden(model, tokens_BT, lengths_B, cache_len)
    x_B1D = jnp.take_along_axis(x_BTD, (lengths_B - 1)[:, None, None], axis=1)
    return model.head(x_B1D)[:, 0], caches


def prefill_hidden(model: LM, tokens_BT: jax.Array, lengths_B: jax.Array, cache_len: int
                   ) -> tuple[jax.Array, list[Cache]]:
    """(the last block's output [B, T, D], one cache per layer)."""
    check_lengths(tokens_BT.shape[1], cache_len)
    x_BTD = model.embed_tokens(tokens_BT)
    caches = []
    for block in model.blocks:
        x_BTD, cache = block.apply(
            x_BTD, lambda x: prefill_layer(block.mixer, x, lengths_B, cache_len))
        x_BTD = constrain(x_BTD, RESIDUAL)
        caches.append(cache)
    return x_BTD, caches


def decode_step(model: LM, tokens_B: jax.Array, pos_B: jax.Array, caches: list[Cache]
                ) -> tuple[jax.Array, list[Cache]]:
    """(logits [B, vocab] fp32 of tokens_B at positions pos_B, the updated caches)."""
    x_B1D = model.embed_tokens(tokens_B[:, None])
    new = []
    for block, cache in zip(model.blocks, caches):
        x_B1D, cache = block.apply(x_B1D, lambda x: step_layer(block.mixer, x, pos_B, cache))
        x_B1D = constrain(x_B1D, RESIDUAL)
        new.append(cache)
    return model.head(x_B1D)[:, 0], new
