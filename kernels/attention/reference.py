"""Plain-XLA multi-head attention with GQA, causal masking and a causal sliding window.

Why this exists
    It runs on every platform, is the CPU path, and is the oracle the cuDNN (GPU) and splash
    (TPU) paths are compared against. Its mask is written to match
    `jax.nn.dot_product_attention(..., is_causal=True, local_window_size=(W - 1, 0))`.

Numerics
    Logits and softmax in float32 whatever the input dtype, with precision=HIGHEST matmuls
    (no TF32 on GPU); the output is cast back to q's dtype. Masked logits get the most negative finite float32 rather than -inf, so even a
    row with every key masked gives finite (uniform) weights instead of NaN. With causal
    masking a row always sees its own key, so that case cannot arise through this API.

Constraints
    q: [B, T, N, A]; k, v: [B, S, G, A] with N a multiple of G (query head n reads kv head
    n // (N // G)). A window needs causal=True and S == T; query i then sees keys j with
    i - W < j <= i.
"""

from typing import Optional

import jax
import jax.numpy as jnp


def attention_mask(T: int, S: int, causal: bool, local_window_size: Optional[int]):
    """Boolean [T, S] mask, True where query i may attend to key j (None: no mask)."""
    if not causal and local_window_size is None:
        return None
    i = jnp.arange(T)[:, None]
    j = jnp.arange(S)[None, :]
    mask = j <= i
    if local_window_size is not None:
        mask = mask & (j > i - local_window_size)
    return mask


def xla_attention(q_BTNA, k_BSGA, v_BSGA, *, causal: bool = True,
                  local_window_size: Optional[int] = None, scale: Optional[float] = None):
    B, T, N, A = q_BTNA.shape
    S, G = k_BSGA.shape[1], k_BSGA.shape[2]
    if scale is None:
        scale = A ** -0.5
    q_BTGRA = q_BTNA.astype(jnp.float32).reshape(B, T, G, N // G, A)
    logits_BGRTS = jnp.einsum("btgrh,bsgh->bgrts", q_BTGRA, k_BSGA.astype(jnp.float32),
                              precision=jax.lax.Precision.HIGHEST) * scale
    mask_TS = attention_mask(T, S, causal, local_window_size)
    if mask_TS is not None:
        logits_BGRTS = jnp.where(mask_TS, logits_BGRTS, jnp.finfo(jnp.float32).min)
    p_BGRTS = jax.nn.softmax(logits_BGRTS, axis=-1)
    out_BTGRA = jnp.einsum("bgrts,bsgh->btgrh", p_BGRTS, v_BSGA.astype(jnp.float32),
                           precision=jax.lax.Precision.HIGHEST)
    return out_BTGRA.reshape(B, T, N, A).astype(q_BTNA.dtype)
