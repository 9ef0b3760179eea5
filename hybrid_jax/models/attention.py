"""Olmo 3 attention: q/k/v/o projections, QK-norm, RoPE (or none), optional GQA and a sliding
window.

QK-norm follows Olmo 2/3: RMSNorm over the *whole* flattened q (N*A) and k (G*A) projections,
before the head split and before RoPE. The kernel itself is chosen by `kernels.attention`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from hybrid_jax.config import ModelConfig
from hybrid_jax.models.layers import Linear, RMSNorm, apply_rope, rope_tables
from kernels.attention import attention


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, window: int | None, rope: bool, rngs: nnx.Rngs):
        D, N, G, A = cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.attn_head_dim
        dtype = jnp.dtype(cfg.compute_dtype)
        std = cfg.init_std
        self.q = Linear(D, N * A, ("embed", "q_heads"), std=std, dtype=dtype, rngs=rngs)
        self.k = Linear(D, G * A, ("embed", "kv_heads"), std=std, dtype=dtype, rngs=rngs)
        self.v = Linear(D, G * A, ("embed", "kv_heads"), std=std, dtype=dtype, rngs=rngs)
        self.o = Linear(N * A, D, ("q_heads", "embed"), std=std, dtype=dtype, rngs=rngs)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(N * A, eps=cfg.norm_eps, rngs=rngs)
            self.k_norm = RMSNorm(G * A, eps=cfg.norm_eps, rngs=rngs)
        else:
            self.q_norm = self.k_norm = None
        self.n_heads, self.kv_heads, self.head_dim = N, G, A
        self.window = window
        self.rope_theta = cfg.rope_theta if rope else None
        self.implementation = cfg.attention_implementation

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        return self.forward(x_BTD)[0]

    def heads(self, x_BTD: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """q [B,T,N,A], k and v [B,T,G,A]: projected and QK-normed, before RoPE."""
        B, T, _ = x_BTD.shape
        q, k, v = self.q(x_BTD), self.k(x_BTD), self.v(x_BTD)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        return (q.reshape(B, T, self.n_heads, self.head_dim),
                k.reshape(B, T, self.kv_heads, self.head_dim),
                v.reshape(B, T, self.kv_heads, self.head_dim))

    def forward(self, x_BTD: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(output [B,T,D], k [B,T,G,A] after RoPE, v [B,T,G,A]): the keys and values are what a
        decoding cache holds (hybrid_jax.generate.caches); training drops them."""
        B, T, _ = x_BTD.shape
        q_BTNA, k_BTGA, v_BTGA = self.heads(x_BTD)
        if self.rope_theta is not None:
            cos, sin = rope_tables(T, self.head_dim, self.rope_theta)
            q_BTNA, k_BTGA = apply_rope(q_BTNA, cos, sin), apply_rope(k_BTGA, cos, sin)
        o_BTNA = attention(q_BTNA, k_BTGA, v_BTGA, causal=True, local_window_size=self.window,
                           implementation=self.implementation)
        return self.o(o_BTNA.reshape(B, T, self.n_heads * self.head_dim)), k_BTGA, v_BTGA
