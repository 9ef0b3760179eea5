"""The gated RMSNorm in plain jnp: the forward every implementation runs, and the backward JAX
derives from it off the GPU."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gated_rmsnorm(o_BTHV, gate_BTHV, scale_V, eps: float, out_dtype):
    """RMSNorm(o) over V (fp32) * scale * SiLU(gate), cast to out_dtype."""
    o32 = o_BTHV.astype(jnp.float32)
    o32 = o32 * jax.lax.rsqrt(jnp.mean(o32 * o32, axis=-1, keepdims=True) + eps)
    return (o32 * scale_V * jax.nn.silu(gate_BTHV.astype(jnp.float32))).astype(out_dtype)
