"""Gated DeltaNet layer, as in the released Olmo Hybrid model (Yang, Kautz & Hatamizadeh 2025,
"Gated Delta Networks"; Olmo Hybrid, arXiv 2604.03444).

Per token t and value head h (key head h // (HV/H)):

    q, k, v = SiLU(causal_conv4(x W_q)), SiLU(causal_conv4(x W_k)), SiLU(causal_conv4(x W_v))
    q, k    = L2-normalised over the key dim (fused into the kernel: use_qk_l2norm=True)
    g_t     = -exp(A_log) * softplus(x W_a + dt_bias)             (log-space decay, <= 0)
    beta_t  = 2 * sigmoid(x W_b)   if allow_neg_eigval else sigmoid(x W_b)
    S_t     = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T
    o_t     = K^-1/2 S_t^T q_t
    y       = (RMSNorm_head(o) * SiLU(x W_g)) W_o             (RMSNorm eps: gdn_norm_eps)

beta in (0, 2) gives the transition I - beta k k^T an eigenvalue 1 - beta in (-1, 1): negative
eigenvalues, which is what lets the layer track parity-like state (Grazzi et al., ICLR 2025).

Parameters (D = d_model, H key heads of dim K, HV value heads of dim V, conv width W):
    q, k: 2*D*H*K;  v, g: 2*D*HV*V;  o: HV*V*D;  a, b: 2*D*HV;  conv: W*(2*H*K + HV*V);
    A_log, dt_bias: 2*HV;  output norm: V.

Inits (following the released code): A ~ U(0, 16] so A_log = log A; dt ~ logU[1e-3, 0.1]
floored at 1e-4, and dt_bias = softplus^-1(dt) so that softplus(dt_bias) = dt at a = 0.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from hybrid_jax.config import ModelConfig
from hybrid_jax.models.layers import Linear, make_param, normal
from kernels.causal_conv import causal_conv_silu
from kernels.causal_conv.reference import conv_silu
from kernels.gated_delta_rule import chunk_gated_delta_rule
from kernels.gated_rmsnorm import gated_rmsnorm

_DT_MIN, _DT_MAX, _DT_FLOOR = 1e-3, 0.1, 1e-4
_A_MAX = 16.0


def _a_log_init(key, shape, dtype):
    # U(0, 16]: 16 * (1 - U[0, 1)) never hits exactly 0, whose log would be -inf.
    a = _A_MAX * (1.0 - jax.random.uniform(key, shape, dtype))
    return jnp.log(a)


def _dt_bias_init(key, shape, dtype):
    u = jax.random.uniform(key, shape, dtype)
    dt = jnp.exp(u * (math.log(_DT_MAX) - math.log(_DT_MIN)) + math.log(_DT_MIN))
    dt = jnp.maximum(dt, _DT_FLOOR)
    return dt + jnp.log(-jnp.expm1(-dt))  # inverse softplus


class CausalConv(nnx.Module):
    """Depthwise causal conv over time with no bias, followed by SiLU. On a GPU it runs as
    Pallas kernels, forward and backward (`kernels.causal_conv`)."""

    def __init__(self, channels: int, width: int, axis_name: str, *, rngs: nnx.Rngs):
        std = 1.0 / math.sqrt(width)
        self.kernel = make_param(rngs, normal(std), (width, channels), ("conv", axis_name))
        self.width = width

    def __call__(self, x_BTC: jax.Array, history_BWC: jax.Array | None = None) -> jax.Array:
        """`history_BWC`: the W - 1 inputs before x (decoding's conv cache); None is zeros."""
        if history_BWC is None:
            return causal_conv_silu(x_BTC, self.kernel[...])
        return conv_silu(x_BTC, self.kernel[...], history_BWC)  # decoding: no gradient


class GatedDeltaNet(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        D, H, HV = cfg.d_model, cfg.gdn_k_heads, cfg.gdn_v_heads
        K, V = cfg.gdn_k_dim, cfg.gdn_v_dim
        dtype = jnp.dtype(cfg.compute_dtype)
        std = cfg.init_std
        self.q = Linear(D, H * K, ("embed", "gdn_qk"), std=std, dtype=dtype, rngs=rngs)
        self.k = Linear(D, H * K, ("embed", "gdn_qk"), std=std, dtype=dtype, rngs=rngs)
        self.v = Linear(D, HV * V, ("embed", "gdn_v"), std=std, dtype=dtype, rngs=rngs)
        self.a = Linear(D, HV, ("embed", "gdn_heads"), std=std, dtype=dtype, rngs=rngs)
        self.b = Linear(D, HV, ("embed", "gdn_heads"), std=std, dtype=dtype, rngs=rngs)
        self.g = Linear(D, HV * V, ("embed", "gdn_v"), std=std, dtype=dtype, rngs=rngs)
        self.o = Linear(HV * V, D, ("gdn_v", "embed"), std=std, dtype=dtype, rngs=rngs)
        self.q_conv = CausalConv(H * K, cfg.gdn_conv_width, "gdn_qk", rngs=rngs)
        self.k_conv = CausalConv(H * K, cfg.gdn_conv_width, "gdn_qk", rngs=rngs)
        self.v_conv = CausalConv(HV * V, cfg.gdn_conv_width, "gdn_v", rngs=rngs)
        self.A_log = make_param(rngs, _a_log_init, (HV,), ("gdn_heads",))
        self.dt_bias = make_param(rngs, _dt_bias_init, (HV,), ("gdn_heads",))
        self.o_norm_scale = make_param(rngs, jax.nn.initializers.ones, (V,), ("norm",))
        self.dims = (H, HV, K, V)
        self.eps = cfg.gdn_norm_eps
        self.allow_neg_eigval = cfg.gdn_allow_neg_eigval
        self.chunk_size = cfg.gdn_chunk_size
        self.implementation = cfg.gdn_implementation
        self.precision = cfg.gdn_precision

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        return self.forward(x_BTD)[0]

    def gates(self, x_BTD: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(log-decay g [B,T,HV], write strength beta [B,T,HV]), both fp32."""
        a_BTH = self.a(x_BTD).astype(jnp.float32)
        g_BTH = -jnp.exp(self.A_log[...]) * jax.nn.softplus(a_BTH + self.dt_bias[...])
        beta_BTH = jax.nn.sigmoid(self.b(x_BTD).astype(jnp.float32))
        if self.allow_neg_eigval:
            beta_BTH = 2.0 * beta_BTH
        return g_BTH, beta_BTH

    def forward(self, x_BTD: jax.Array, valid_BT: jax.Array | None = None):
        """(output [B,T,D], conv inputs (q, k, v projections [B,T,C] before the conv), final
        state [B,HV,K,V] or None). Training calls it with valid_BT None and drops all but the
        output. Prefill for decoding passes valid_BT (False on right padding): g = beta = 0
        there, so the padding leaves the state untouched and the final state is each row's
        state after its last valid token; earlier outputs do not change (causality)."""
        B, T, _ = x_BTD.shape
        H, HV, K, V = self.dims
        conv_in = (self.q(x_BTD), self.k(x_BTD), self.v(x_BTD))
        q_BTHK = self.q_conv(conv_in[0]).reshape(B, T, H, K)
        k_BTHK = self.k_conv(conv_in[1]).reshape(B, T, H, K)
        v_BTHV = self.v_conv(conv_in[2]).reshape(B, T, HV, V)
        g_BTH, beta_BTH = self.gates(x_BTD)
        if valid_BT is not None:
            g_BTH = jnp.where(valid_BT[..., None], g_BTH, 0.0)
            beta_BTH = jnp.where(valid_BT[..., None], beta_BTH, 0.0)
        # The kernel resolves the implementation and, for a Pallas one, runs per shard of
        # batch and heads of the mesh in context.
        o_BTHV, state_BHKV = chunk_gated_delta_rule(
            q_BTHK, k_BTHK, v_BTHV, g_BTH, beta_BTH, use_qk_l2norm=True,
            chunk_size=self.chunk_size, implementation=self.implementation,
            precision=self.precision, output_final_state=valid_BT is not None, pad_o=True)
        return self.output(o_BTHV, x_BTD), conv_in, state_BHKV

    def output(self, o_BTHV: jax.Array, x_BTD: jax.Array) -> jax.Array:
        """Per-head RMSNorm of the delta rule's output, gated by SiLU(x W_g), projected to D.
        On a GPU the norm is a Pallas kernel, forward and backward (`kernels.gated_rmsnorm`)."""
        B, T, HV = o_BTHV.shape[:3]
        V = self.dims[3]  # o may be wider, zero past V (the kernel's `pad_o`)
        gate_BTHV = self.g(x_BTD).reshape(B, T, HV, V)
        y_BTHV = gated_rmsnorm(o_BTHV, gate_BTHV, self.o_norm_scale[...], eps=self.eps,
                               out_dtype=x_BTD.dtype)
        return self.o(y_BTHV.reshape(B, T, HV * V))
