"""Pieces shared by the Pallas GPU gated delta rule's kernels (`pallas_gpu.py`, the state pass
and its glue; `pallas_gpu_prep.py`, the chunk prep): padding and tile sizes, Triton compiler
parameters, the in-kernel dot at each precision, and lax.dot_general contraction dims."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def _next_pow2(n: int) -> int:
    return 1 << (max(int(n), 1) - 1).bit_length()


def _v_tile(V: int, block_v: int) -> int:
    return min(block_v, V & -V)  # largest power of two dividing V, at most block_v


def _triton_params(num_warps: int, num_stages: int):
    from jax.experimental.pallas import triton as plgpu
    return plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages)


def _dot_fn(precision: str, interpret: bool):
    """In-kernel 2-D dot with fp32 result; contracting dims given like lax.dot_general.
    "default": bf16 operands; "tf32": one TF32 pass; "highest": TF32x3. Interpret mode (CPU)
    has no TF32, so "tf32" and "highest" are exact fp32 there."""
    if precision == "default":
        def dot(a, b, dims):
            return lax.dot_general(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), (dims, ((), ())),
                                   preferred_element_type=jnp.float32)
    else:
        prec = (lax.Precision.HIGHEST if interpret
                else lax.DotAlgorithmPreset.TF32_TF32_F32_X3 if precision == "highest"
                else lax.DotAlgorithmPreset.TF32_TF32_F32)

        def dot(a, b, dims):
            return lax.dot_general(a, b, (dims, ((), ())), precision=prec,
                                   preferred_element_type=jnp.float32)
    return dot


_NN = ((1,), (0,))   # a @ b
_NT = ((1,), (1,))   # a @ b.T
_TN = ((0,), (0,))   # a.T @ b
