"""Olmo 3 attention: q/k/v/o projections, QK-norm, RoPE, optional GQA and a sliding window.

QK-norm follows Olmo 2/3: RMSNorm over the *whole* flattened q (N*H) and k (G*H) projections,
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
    def __init__(self, cfg: ModelConfig, *, window: int | None, rngs: nnx.Rngs):
        D, N, G, H = cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.attn_head_dim
        dtype = jnp.dtype(cfg.compute_dtype)
        std = cfg.init_std
        self.q = Linear(D, N * H, ("embed", "q_heads"), std=std, dtype=dtype, rngs=rngs)
        self.k = Linear(D, G * H, ("embed", "kv_heads"), std=std, dtype=dtype, rngs=rngs)
        self.v = Linear(D, G * H, ("embed", "kv_heads"), std=std, dtype=dtype, rngs=rngs)
        self.o = Linear(N * H, D, ("q_heads", "embed"), std=std, dtype=dtype, rngs=rngs)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(N * H, eps=cfg.norm_eps, rngs=rngs)
            self.k_norm = RMSNorm(G * H, eps=cfg.norm_eps, rngs=rngs)
        else:
            self.q_norm = self.k_norm = None
        self.n_heads, self.kv_heads, self.head_dim = N, G, H
        self.window = window
        self.rope_theta = cfg.rope_theta
        self.implementation = cfg.attention_implementation

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        B, T, _ = x_BTD.shape
        q, k, v = self.q(x_BTD), self.k(x_BTD), self.v(x_BTD)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q_BTNH = q.reshape(B, T, self.n_heads, self.head_dim)
        k_BTGH = k.reshape(B, T, self.kv_heads, self.head_dim)
        v_BTGH = v.reshape(B, T, self.kv_heads, self.head_dim)
        cos, sin = rope_tables(T, self.head_dim, self.rope_theta)
        q_BTNH, k_BTGH = apply_rope(q_BTNH, cos, sin), apply_rope(k_BTGH, cos, sin)
        o_BTNH = attention(q_BTNH, k_BTGH, v_BTGH, causal=True, local_window_size=self.window,
                           implementation=self.implementation)
        return self.o(o_BTNH.reshape(B, T, self.n_heads * self.head_dim))
