"""TPU splash attention (`jax.experimental.pallas.ops.tpu.splash_attention`) behind our contract.

Why this exists
    On TPU, splash attention is the fused, block-sparse flash attention: a causal or sliding
    window mask skips whole key blocks, so a window of W costs O(T W), not O(T^2).

Numerics
    q is multiplied by the scale (in float32, then cast back to q's dtype) before the kernel,
    which applies no scale of its own. The kernel accumulates in float32 with an online
    softmax; masked logits get splash's mask value (-0.7 * float32 max), not -inf.
    Semantics equal `reference.xla_attention`: query i sees key j iff j <= i (causal) and
    j > i - W (window W), i.e. splash's LocalMask with window (W - 1, 0).

Constraints
    q [B, T, N, A], k/v [B, T, G, A], N a multiple of G (GQA is native: splash's MHA kernel
    maps query head n to kv head n // (N // G)). T is zero-padded to a multiple of the block
    size (128 lanes): with a causal mask a real query never sees a padded key; without one,
    segment ids keep real and padded tokens apart. Padded rows are sliced off.
    Mosaic kernels cannot be partitioned by XLA: under a mesh in context the call runs per
    shard of batch and heads (`kernels.mesh_context`).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas.ops.tpu import splash_attention as sa

from kernels.mesh_context import shard_batch_and_heads

BLOCK = 128


def _mask(T_pad: int, causal: bool, window: Optional[int]):
    shape = (T_pad, T_pad)
    if window is not None:
        return sa.LocalMask(shape, window_size=(window - 1, 0), offset=0)
    if causal:
        return sa.CausalMask(shape)
    return sa.FullMask(shape)


def _block_sizes() -> sa.BlockSizes:
    b = BLOCK
    return sa.BlockSizes(block_q=b, block_kv=b, block_kv_compute=b, block_q_dkv=b,
                         block_kv_dkv=b, block_kv_dkv_compute=b, block_q_dq=b, block_kv_dq=b)


def _local(q_BTNA, k_BTGA, v_BTGA, *, causal, window, scale, interpret):
    """Unsharded splash call on (per-shard) arrays."""
    B, T, N, A = q_BTNA.shape
    T_pad = -(-T // BLOCK) * BLOCK
    pad = ((0, 0), (0, T_pad - T), (0, 0), (0, 0))
    q = (q_BTNA.astype(jnp.float32) * scale).astype(q_BTNA.dtype)
    q_BNTA, k_BGTA, v_BGTA = (jnp.moveaxis(jnp.pad(x, pad), 2, 1)
                              for x in (q, k_BTGA, v_BTGA))
    mask = sa.MultiHeadMask([_mask(T_pad, causal, window)] * N)
    kernel = sa.make_splash_mha(mask, block_sizes=_block_sizes(), head_shards=1,
                                q_seq_shards=1, interpret=interpret)
    if T_pad != T and not causal:
        seg = (jnp.arange(T_pad) >= T).astype(jnp.int32)
        ids = sa.SegmentIds(q=seg, kv=seg)
        o_BNTA = jax.vmap(lambda q, k, v: kernel(q, k, v, segment_ids=ids))(
            q_BNTA, k_BGTA, v_BGTA)
    else:
        o_BNTA = jax.vmap(kernel)(q_BNTA, k_BGTA, v_BGTA)
    return jnp.moveaxis(o_BNTA, 1, 2)[:, :T].astype(q_BTNA.dtype)


def splash_attention(q_BTNA, k_BTGA, v_BTGA, *, causal: bool = True,
                     local_window_size: Optional[int] = None, scale: Optional[float] = None,
                     interpret=False):
    """Softmax attention through splash. interpret: False (compile with Mosaic) or True /
    `pltpu.InterpretParams` (run on the host). Inputs are assumed validated by `api`."""
    if scale is None:
        scale = q_BTNA.shape[-1] ** -0.5
    if interpret is True:
        interpret = pltpu.InterpretParams()

    def run(q, k, v):
        return _local(q, k, v, causal=causal, window=local_window_size, scale=scale,
                      interpret=interpret)

    (o,) = shard_batch_and_heads(lambda q, k, v: (run(q, k, v),), (q_BTNA, k_BTGA, v_BTGA),
                                 head_dims=(2, 2, 2), n_outputs_dims=((4, 2),))
    return o
