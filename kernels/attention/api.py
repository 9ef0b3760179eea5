"""Attention dispatch: cuDNN on GPU, splash on TPU, XLA on CPU.

Why this exists
    Model code calls one function; the implementation is chosen by name, and the one that
    actually runs is observable through `resolve_attention_implementation`, so runs can
    record it. An explicit choice that cannot run on this platform raises; nothing falls back.

Numerics
    "xla": float32 logits and softmax (see `reference.py`). "cudnn": cuDNN flash attention
    through `jax.nn.dot_product_attention`, which needs float16 or bfloat16 inputs; its
    window argument (W - 1, 0) gives exactly the mask of the xla path. "splash": see
    `splash.py` (the same mask as a LocalMask with window (W - 1, 0)).

Constraints
    q: [B, T, N, A]; k, v: [B, S, G, A], N a multiple of G. local_window_size W (int >= 1)
    needs causal=True and S == T: query i sees keys j with i - W < j <= i.
    The platform is jax.default_backend(), unless an abstract mesh in context names a device
    (`jax.sharding.use_abstract_mesh(mesh.abstract_mesh)` over TPU topology devices, as the
    ahead-of-time `hybrid-jax compile` does): then it is that device's platform, so a train
    step lowered on a CPU host for a TPU topology uses splash, as it would on the pod.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from kernels.attention.reference import xla_attention
from kernels.attention.splash import splash_attention
from kernels.mesh_context import shard_batch_and_heads, target_platform

IMPLEMENTATIONS = ("xla", "cudnn", "splash")
_PLATFORM_OF = {"cudnn": "gpu", "splash": "tpu"}
_CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


def resolve_attention_implementation(name: str, *, dtype=None, head_dim=None) -> str:
    """Map a requested implementation to the one that will run on `target_platform()`.

    "auto" is splash on TPU, xla on CPU, and on GPU cudnn when cuDNN can take the call, else
    xla: cuDNN's fused attention needs float16/bfloat16 (`dtype`) and a head dim that is a
    multiple of 8 and at most 256 (`head_dim`; d_model 416 over 8 heads gives 52, which ran
    at a tenth of cuDNN's speed through xla on an H200: prefer head dims that cuDNN takes).
    An explicit "cudnn" is not rerouted: cuDNN's own error then names the constraint.
    """
    platform = target_platform()
    if name == "auto":
        if platform == "tpu":
            return "splash"
        dtype_ok = dtype is None or jnp.dtype(dtype) in map(jnp.dtype, _CUDNN_DTYPES)
        dim_ok = head_dim is None or (head_dim % 8 == 0 and head_dim <= 256)
        return "cudnn" if platform == "gpu" and dtype_ok and dim_ok else "xla"
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"implementation={name!r} is unknown; expected 'auto' or one of "
                         f"{IMPLEMENTATIONS}")
    needs = _PLATFORM_OF.get(name)
    if needs is not None and platform != needs:
        raise RuntimeError(f"implementation={name!r} needs a {needs.upper()} backend, but "
                           f"this platform is {platform!r}")
    return name


def _validate(q, k, v, causal, local_window_size):
    for nm, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != 4:
            raise ValueError(f"{nm} must have 4 dims [B, T, heads, A], got shape {x.shape}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got k {k.shape} and v {v.shape}")
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise ValueError(f"q and k must agree on batch and head dim, got q {q.shape} and "
                         f"k {k.shape}")
    if q.shape[2] % k.shape[2] != 0:
        raise ValueError(f"q has N={q.shape[2]} heads, not a multiple of the G={k.shape[2]} "
                         f"heads of k and v")
    if local_window_size is not None:
        if isinstance(local_window_size, bool) or not isinstance(local_window_size, int) \
                or local_window_size < 1:
            raise ValueError(f"local_window_size must be an int >= 1 or None, got "
                             f"{local_window_size!r}")
        if not causal:
            raise ValueError("local_window_size is a causal sliding window; it needs causal=True")
    if causal and q.shape[1] != k.shape[1]:
        raise ValueError(f"causal attention needs as many keys as queries, got T={q.shape[1]} "
                         f"and S={k.shape[1]}")


def attention(q_BTNA, k_BTGA, v_BTGA, *, causal: bool = True,
              local_window_size: Optional[int] = None, implementation: str = "auto",
              scale: Optional[float] = None):
    """Softmax attention. Returns [B, T, N, A] in q's dtype; scale defaults to A ** -0.5."""
    _validate(q_BTNA, k_BTGA, v_BTGA, causal, local_window_size)
    impl = resolve_attention_implementation(implementation, dtype=q_BTNA.dtype,
                                            head_dim=q_BTNA.shape[-1])
    if impl == "xla":
        return xla_attention(q_BTNA, k_BTGA, v_BTGA, causal=causal,
                             local_window_size=local_window_size, scale=scale)
    if impl == "splash":
        return splash_attention(q_BTNA, k_BTGA, v_BTGA, causal=causal,
                                local_window_size=local_window_size, scale=scale,
                                interpret=False)
    window = None if local_window_size is None else (local_window_size - 1, 0)

    def run(q, k, v):
        return (jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=causal,
                                             local_window_size=window, implementation="cudnn"),)

    # Per shard of batch and heads, as splash: cuDNN's own partitioner needs q, k and v sharded
    # alike, which the fsdp step does not guarantee (2 x H200, mesh (1, 2, 1), 370M: "Query,
    # key and value should have same sharding"); attention never mixes batch rows or heads.
    (o,) = shard_batch_and_heads(run, (q_BTNA, k_BTGA, v_BTGA), head_dims=(2, 2, 2),
                                 n_outputs_dims=((4, 2),))
    return o
