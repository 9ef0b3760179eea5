"""The gated RMSNorm behind one function, its implementation chosen by name.

Implementations
    "xla"         `reference.gated_rmsnorm`, differentiated by JAX; any platform.
    "pallas_gpu"  the Pallas (Triton) forward and backward of `gpu.py`, run per shard
                  of the batch and heads of the mesh in context (a Triton call cannot be
                  partitioned by XLA).
    "auto"        "pallas_gpu" on a GPU, else "xla".
"""

from __future__ import annotations

import jax

from kernels.gated_rmsnorm import gpu, reference
from kernels.mesh_context import resolve_xla_or_pallas_gpu, shard_batch_and_heads


def resolve_norm_implementation(name: str = "auto") -> str:
    """The implementation `name` runs as on `target_platform()`: "auto" is "pallas_gpu" on a
    GPU, else "xla"; an explicit name that cannot run here raises."""
    return resolve_xla_or_pallas_gpu("gated rmsnorm", name)


def gated_rmsnorm(o_BTHV: jax.Array, gate_BTHV: jax.Array, scale_V: jax.Array, *, eps: float,
                  out_dtype, implementation: str = "auto", interpret: bool = False):
    """RMSNorm(o) over V (fp32) * scale * SiLU(gate), in out_dtype. gate: [B, T, H, V]; scale:
    [V]; o: [B, T, H, Vo], Vo >= V, zero past V (the gated delta rule's `pad_o`): only its
    first V columns are read, and its gradient is zero past them. interpret=True runs
    "pallas_gpu"'s kernels in Pallas' interpreter (CPU)."""
    if (o_BTHV.ndim != 4 or gate_BTHV.ndim != 4 or o_BTHV.shape[:3] != gate_BTHV.shape[:3]
            or o_BTHV.shape[3] < gate_BTHV.shape[3] or scale_V.shape != gate_BTHV.shape[3:]):
        raise ValueError(f"gated rmsnorm needs gate [B, T, H, V], scale [V] and o [B, T, H, Vo] "
                         f"with Vo >= V; got o {o_BTHV.shape}, gate {gate_BTHV.shape}, scale "
                         f"{scale_V.shape}")
    name = "pallas_gpu" if interpret else resolve_norm_implementation(implementation)
    if name == "xla":
        V = gate_BTHV.shape[3]
        return reference.gated_rmsnorm(o_BTHV[..., :V], gate_BTHV, scale_V, eps, out_dtype)
    run = lambda o, g, s: (gpu.gated_rmsnorm_gpu(o, g, s, eps, out_dtype, interpret),)
    return shard_batch_and_heads(run, (o_BTHV, gate_BTHV, scale_V), head_dims=(2, 2, None),
                                 n_outputs_dims=((4, 2),), whole=(2,))[0]
