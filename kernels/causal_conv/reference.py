"""The causal convolution with SiLU in plain jnp: the "xla" implementation (JAX derives its
backward), the GPU kernels' reference in tests, and decoding's step with a conv cache."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def conv_silu(x_BTC: jax.Array, w_WC: jax.Array, history_BWC: jax.Array | None = None):
    """SiLU(y), y_t = sum_j w_j x_{t-W+1+j} per channel, in x's dtype (w cast to it).
    `history_BWC`: the W - 1 inputs before x (decoding's conv cache); None is zeros."""
    W, T = w_WC.shape[0], x_BTC.shape[1]
    w_WC = w_WC.astype(x_BTC.dtype)
    if history_BWC is None:
        x_pad = jnp.pad(x_BTC, ((0, 0), (W - 1, 0), (0, 0)))
    else:
        x_pad = jnp.concatenate([history_BWC.astype(x_BTC.dtype), x_BTC], axis=1)
    # W shifted slices; W = 4, so this beats a general conv (a depthwise lax.conv took 11x as
    # long forward+backward on an H100)
    return jax.nn.silu(sum(x_pad[:, j:j + T, :] * w_WC[j] for j in range(W)))
