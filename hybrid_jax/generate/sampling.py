"""Next-token choice: greedy, or sampling with temperature, top-k and top-p (nucleus).

temperature 0 is greedy (argmax); top_k and top_p then have nothing to act on, so setting them
with temperature 0 is an error rather than a silently ignored argument. With temperature > 0 the
logits are divided by it, restricted to the top_k largest (0: all), then to the smallest set of
most likely tokens whose probability reaches top_p (1.0: all; the most likely token is always
kept), and one token is drawn.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an int >= 0 (0 keeps every token), got "
                             f"{self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.greedy and (self.top_k or self.top_p < 1):
            raise ValueError("top_k/top_p act on sampling; with temperature 0 (greedy) they "
                             "would be ignored: set --temperature > 0 or leave them out")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


    def arrays(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(temperature, top_k, top_p) as device scalars: `choose` takes them traced, so one
        compile serves every setting."""
        return (jnp.float32(self.temperature), jnp.int32(self.top_k), jnp.float32(self.top_p))


def choose(logits_BY: jax.Array, key: jax.Array, settings) -> jax.Array:
    """int32 [B]: the next token of each row; `settings` is `Sampling.arrays()`."""
    temperature, top_k, top_p = settings
    return jax.lax.cond(temperature == 0, _greedy, _sample, logits_BY, key, temperature,
                        top_k, top_p)


def _greedy(logits_BY, key, temperature, top_k, top_p):
    del key, temperature, top_k, top_p
    return jnp.argmax(logits_BY, axis=-1).astype(jnp.int32)


def _sample(logits_BY, key, temperature, top_k, top_p):
    Y = logits_BY.shape[-1]
    neg = jnp.finfo(jnp.float32).min
    order_BY = jnp.argsort(-logits_BY, axis=-1)
    sorted_BY = jnp.take_along_axis(logits_BY.astype(jnp.float32), order_BY, axis=-1)
    sorted_BY = sorted_BY / temperature
    rank_Y = jnp.arange(Y)
    keep_BY = jnp.broadcast_to(rank_Y < jnp.where(top_k == 0, Y, top_k), sorted_BY.shape)
    sorted_BY = jnp.where(keep_BY, sorted_BY, neg)
    p_BY = jax.nn.softmax(sorted_BY, axis=-1)
    before_BY = jnp.cumsum(p_BY, axis=-1) - p_BY  # mass of the more likely tokens
    # top_p = 1 keeps everything exactly (the cumulative sum may round to 1 before the end).
    keep_BY = (before_BY < top_p) | (top_p >= 1.0)
    sorted_BY = jnp.where(keep_BY, sorted_BY, neg)
    pick_B = jax.random.categorical(key, sorted_BY, axis=-1)
    return jnp.take_along_axis(order_BY, pick_B[:, None], axis=-1)[:, 0].astype(jnp.int32)
