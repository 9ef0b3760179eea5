"""Per-layer decoding caches, and each mixer's prefill and one-token step.

Each layer kind keeps its own cache:
  * full attention ("A"): keys (after RoPE) and values of every position, [B, S, G, A], S the
    cache length (prompt + new tokens);
  * sliding window ("S"): a ring buffer of the last W = min(window, S) keys and values [B, W,
    G, A]; the key of position p lives in slot p % W;
  * Gated DeltaNet ("G"): the recurrent state [B, HV, K, V] (fp32) and, for each of the q, k, v
    short convs, its last W - 1 inputs [B, W - 1, C].

Batches are right-padded: row b's prompt is tokens[b, :lengths[b]], so positions (and RoPE)
start at 0 in every row and the prefill is the training forward. What the padding leaves in a
cache is never read: a full-attention step at position p reads keys 0..p, each written by then;
ring slots and conv inputs are gathered at each row's own last positions; the GDN state is
frozen on padding (`GatedDeltaNet.forward`'s valid_BT).

Numerics follow the training path op for op: the step attention is `kernels.attention`'s xla
reference restricted to one query (fp32 logits, HIGHEST matmuls, the most negative finite
float32 on masked keys); the GDN step is `kernels.gated_delta_rule.gated_delta_rule_step`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from hybrid_jax.models.attention import Attention
from hybrid_jax.models.gdn import GatedDeltaNet
from hybrid_jax.models.layers import apply_rope, rope_tables_at
from kernels.gated_delta_rule import gated_delta_rule_step


class KVCache(NamedTuple):
    """Full attention: slot j holds position j."""
    k_BSGA: jax.Array
    v_BSGA: jax.Array


class RingCache(NamedTuple):
    """Sliding-window attention: slot s holds the newest position p with p % W == s."""
    k_BWGA: jax.Array
    v_BWGA: jax.Array


class GDNCache(NamedTuple):
    state_BHKV: jax.Array
    conv_q_BWC: jax.Array
    conv_k_BWC: jax.Array
    conv_v_BWC: jax.Array


Cache = KVCache | RingCache | GDNCache


def _gather_rows(x_BT_: jax.Array, idx_BN: jax.Array) -> jax.Array:
    """x[b, idx[b, n]] for each row; negative indices give zeros."""
    got = jnp.take_along_axis(x_BT_, jnp.maximum(idx_BN, 0).reshape(
        idx_BN.shape + (1,) * (x_BT_.ndim - 2)), axis=1)
    keep = (idx_BN >= 0).reshape(idx_BN.shape + (1,) * (x_BT_.ndim - 2))
    return jnp.where(keep, got, jnp.zeros((), x_BT_.dtype))


def _ring_positions(last_B: jax.Array, W: int) -> jax.Array:
    """[B, W]: the position held in each ring slot when position last_B was written last;
    negative where the slot was never written."""
    s_W = jnp.arange(W, dtype=jnp.int32)
    return last_B[:, None] - jnp.mod(last_B[:, None] - s_W[None, :], W)


def ring_size(layer: Attention, cache_len: int) -> int:
    return cache_len if layer.window is None else min(layer.window, cache_len)


def attention_prefill(layer: Attention, x_BTD, lengths_B, cache_len: int):
    """(output [B,T,D], cache) of the training forward over right-padded x."""
    y_BTD, k_BTGA, v_BTGA = layer.forward(x_BTD)
    B, T = x_BTD.shape[:2]
    if layer.window is None:
        pad = ((0, 0), (0, cache_len - T), (0, 0), (0, 0))
        return y_BTD, KVCache(jnp.pad(k_BTGA, pad), jnp.pad(v_BTGA, pad))
    pos_BW = _ring_positions(lengths_B - 1, ring_size(layer, cache_len))
    return y_BTD, RingCache(_gather_rows(k_BTGA, pos_BW), _gather_rows(v_BTGA, pos_BW))


def _attend_one(q_BNA, k_BSGA, v_BSGA, valid_BS):
    """One query per row against its cached keys; fp32 as the xla reference."""
    B, N, A = q_BNA.shape
    G = k_BSGA.shape[2]
    q_BGRA = q_BNA.astype(jnp.float32).reshape(B, G, N // G, A)
    logits_BGRS = jnp.einsum("bgrh,bsgh->bgrs", q_BGRA, k_BSGA.astype(jnp.float32),
                             precision=jax.lax.Precision.HIGHEST) * A ** -0.5
    logits_BGRS = jnp.where(valid_BS[:, None, None, :], logits_BGRS,
                            jnp.finfo(jnp.float32).min)
    p_BGRS = jax.nn.softmax(logits_BGRS, axis=-1)
    o_BGRA = jnp.einsum("bgrs,bsgh->bgrh", p_BGRS, v_BSGA.astype(jnp.float32),
                        precision=jax.lax.Precision.HIGHEST)
    return o_BGRA.reshape(B, N, A).astype(q_BNA.dtype)


def attention_step(layer: Attention, x_B1D, pos_B, cache: KVCache | RingCache):
    """(output [B,1,D], cache) for one new token per row at position pos_B."""
    B = x_B1D.shape[0]
    q_B1NA, k_B1GA, v_B1GA = layer.heads(x_B1D)
    if layer.rope_theta is not None:
        cos_B1A, sin_B1A = rope_tables_at(pos_B[:, None], layer.head_dim, layer.rope_theta)
        q_B1NA = apply_rope(q_B1NA, cos_B1A, sin_B1A)
        k_B1GA = apply_rope(k_B1GA, cos_B1A, sin_B1A)
    k_cache, v_cache = cache
    S = k_cache.shape[1]
    rows = jnp.arange(B)
    slot_B = pos_B if isinstance(cache, KVCache) else jnp.mod(pos_B, S)
    k_cache = k_cache.at[rows, slot_B].set(k_B1GA[:, 0].astype(k_cache.dtype))
    v_cache = v_cache.at[rows, slot_B].set(v_B1GA[:, 0].astype(v_cache.dtype))
    if isinstance(cache, KVCache):
        valid_BS = jnp.arange(S)[None, :] <= pos_B[:, None]
    else:  # every slot written so far holds one of the last R <= window positions
        valid_BS = _ring_positions(pos_B, S) >= 0
    o_BNA = _attend_one(q_B1NA[:, 0], k_cache, v_cache, valid_BS)
    y_B1D = layer.o(o_BNA.reshape(B, 1, layer.n_heads * layer.head_dim))
    return y_B1D, type(cache)(k_cache, v_cache)


def gdn_prefill(layer: GatedDeltaNet, x_BTD, lengths_B, cache_len: int):
    """(output [B,T,D], cache) of the training forward over right-padded x."""
    del cache_len  # the GDN cache does not grow
    T = x_BTD.shape[1]
    valid_BT = jnp.arange(T)[None, :] < lengths_B[:, None]
    y_BTD, conv_in, state_BHKV = layer.forward(x_BTD, valid_BT)
    W = layer.q_conv.width
    # The W - 1 inputs before each row's next position, zeros before position 0 as the
    # training conv pads.
    idx_BW = lengths_B[:, None] - (W - 1) + jnp.arange(W - 1)[None, :]
    convs = [_gather_rows(c_BTC, idx_BW) for c_BTC in conv_in]
    return y_BTD, GDNCache(state_BHKV, *convs)


def gdn_step(layer: GatedDeltaNet, x_B1D, pos_B, cache: GDNCache):
    """(output [B,1,D], cache) for one new token per row; one delta-rule update."""
    del pos_B  # the recurrence has no positions
    B = x_B1D.shape[0]
    H, HV, K, V = layer.dims
    conv_in = (layer.q(x_B1D), layer.k(x_B1D), layer.v(x_B1D))
    histories = (cache.conv_q_BWC, cache.conv_k_BWC, cache.conv_v_BWC)
    convs = (layer.q_conv, layer.k_conv, layer.v_conv)
    q, k, v = (conv(c, h)[:, 0] for conv, c, h in zip(convs, conv_in, histories))
    g_B1H, beta_B1H = layer.gates(x_B1D)
    o_BHV, state_BHKV = gated_delta_rule_step(
        q.reshape(B, H, K), k.reshape(B, H, K), v.reshape(B, HV, V), g_B1H[:, 0],
        beta_B1H[:, 0], cache.state_BHKV, use_qk_l2norm=True)
    new_hist = [jnp.concatenate([h, c.astype(h.dtype)], axis=1)[:, 1:]
                for h, c in zip(histories, conv_in)]
    return layer.output(o_BHV[:, None], x_B1D), GDNCache(state_BHKV, *new_hist)


def prefill_layer(mixer, x_BTD, lengths_B, cache_len: int):
    if isinstance(mixer, GatedDeltaNet):
        return gdn_prefill(mixer, x_BTD, lengths_B, cache_len)
    return attention_prefill(mixer, x_BTD, lengths_B, cache_len)


def step_layer(mixer, x_B1D, pos_B, cache: Cache):
    if isinstance(mixer, GatedDeltaNet):
        return gdn_step(mixer, x_B1D, pos_B, cache)
    return attention_step(mixer, x_B1D, pos_B, cache)
