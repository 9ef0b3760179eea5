"""Building blocks shared by every family: parameters with logical axes, RMSNorm, SwiGLU, RoPE.

Parameters are fp32 and carry *logical* axis names in their `out_sharding` metadata
(`eager_sharding=False`, so building a model needs no mesh). `hybrid_jax.sharding` maps logical
names to mesh axes through one rules table. The logical names used by the models:

    vocab, embed          embedding / unembedding
    mlp                   SwiGLU hidden
    q_heads, kv_heads     flattened attention projections (heads * head_dim)
    gdn_qk, gdn_v         flattened GDN key/query and value projections
    gdn_heads             per-head GDN scalars (A_log, dt_bias) and the a/b projections
    conv, norm            conv taps and norm weights (never sharded)
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

Initializer = Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array]


def make_param(rngs: nnx.Rngs, init: Initializer, shape: tuple[int, ...],
               axes: tuple[str | None, ...]) -> nnx.Param:
    """An fp32 parameter with logical axis names; no mesh needed at construction."""
    assert len(axes) == len(shape), (shape, axes)
    value = init(rngs.params(), shape, jnp.float32)
    return nnx.Param(value, out_sharding=axes, eager_sharding=False)


def normal(std: float) -> Initializer:
    return jax.nn.initializers.normal(stddev=std)


class Linear(nnx.Module):
    """y = x @ W with no bias; W is [in, out] fp32, the product runs in the compute dtype."""

    def __init__(self, d_in: int, d_out: int, axes: tuple[str | None, str | None], *,
                 std: float, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.kernel = make_param(rngs, normal(std), (d_in, d_out), axes)
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.dot(x.astype(self.dtype), self.kernel[...].astype(self.dtype))


class RMSNorm(nnx.Module):
    """RMSNorm over the last axis, computed in fp32, result cast back to the input dtype."""

    def __init__(self, dim: int, *, eps: float, rngs: nnx.Rngs):
        self.scale = make_param(rngs, jax.nn.initializers.ones, (dim,), ("norm",))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * self.scale[...]).astype(x.dtype)


class SwiGLU(nnx.Module):
    """MLP: down(silu(gate(x)) * up(x))."""

    def __init__(self, d_model: int, hidden: int, *, std: float, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.gate = Linear(d_model, hidden, ("embed", "mlp"), std=std, dtype=dtype, rngs=rngs)
        self.up = Linear(d_model, hidden, ("embed", "mlp"), std=std, dtype=dtype, rngs=rngs)
        self.down = Linear(hidden, d_model, ("mlp", "embed"), std=std, dtype=dtype, rngs=rngs)

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        return self.down(jax.nn.silu(self.gate(x_BTD)) * self.up(x_BTD))


def rope_tables(T: int, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables [T, head_dim/2] in fp32 for rotate-half RoPE."""
    return rope_tables_at(jnp.arange(T, dtype=jnp.int32), head_dim, theta)


def rope_tables_at(positions: jax.Array, head_dim: int, theta: float
                   ) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables [..., head_dim/2] at integer positions of any shape (decoding passes one
    position per batch row)."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dim, got {head_dim}")
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x_BTNA: jax.Array, cos_TA: jax.Array, sin_TA: jax.Array) -> jax.Array:
    """Rotate-half RoPE (the Llama/OLMo convention), in fp32. The tables are [T, A/2], shared
    by every row, or [B, T, A/2], per row (decoding)."""
    x = x_BTNA.astype(jnp.float32)
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos_TA[..., :, None, :], sin_TA[..., :, None, :]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BTNA.dtype)
