"""The causal convolution with SiLU behind one function, its implementation chosen by name.

Implementations
    "xla"         `reference.conv_silu`, differentiated by JAX; any platform.
    "pallas_gpu"  the Pallas (Triton) forward and backward of `gpu.py`, run per shard of the
                  batch and channels of the mesh in context (a Triton call cannot be
                  partitioned by XLA).
    "auto"        "pallas_gpu" on a GPU, else "xla".
"""

from __future__ import annotations

import jax

from kernels.causal_conv import gpu, reference
from kernels.mesh_context import resolve_xla_or_pallas_gpu, shard_batch_and_heads


def resolve_conv_implementation(name: str = "auto") -> str:
    """The implementation `name` runs as here: "auto" is "pallas_gpu" on a GPU, else "xla";
    an explicit name that cannot run here raises."""
    return resolve_xla_or_pallas_gpu("causal conv", name)


def causal_conv_silu(x_BTC: jax.Array, w_WC: jax.Array, *, implementation: str = "auto",
                     interpret: bool = False):
    """SiLU(y), y_t = sum_j w_j x_{t-W+1+j} per channel, zeros before t = 0; in x's dtype.
    x: [B, T, C]; w: [W, C]. interpret=True runs "pallas_gpu"'s kernels in Pallas'
    interpreter (CPU). Decoding's step with a conv cache calls `reference.conv_silu`."""
    if (x_BTC.ndim != 3 or w_WC.ndim != 2 or w_WC.shape[1] != x_BTC.shape[2]
            or w_WC.shape[0] < 2):
        raise ValueError(f"causal conv needs x [B, T, C] and w [W, C] with W >= 2; got x "
                         f"{x_BTC.shape}, w {w_WC.shape}")
    name = "pallas_gpu" if interpret else resolve_conv_implementation(implementation)
    if name == "xla":
        return reference.conv_silu(x_BTC, w_WC)
    run = lambda x, w: (gpu.conv_silu_gpu(x, w, interpret),)
    return shard_batch_and_heads(run, (x_BTC, w_WC), head_dims=(2, 1),
                                 n_outputs_dims=((3, 2),), unbatched=(1,))[0]
