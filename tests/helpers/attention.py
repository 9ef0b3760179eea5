"""Attention test inputs (no tests here)."""

import jax.numpy as jnp
import numpy as np


def make_qkv(seed, B, T, N, G, H, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(rng.normal(size=(B, T, n, H)), dtype) for n in (N, G, G))
