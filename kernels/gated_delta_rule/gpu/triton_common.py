"""What the Triton (Pallas GPU) kernels share: the in-kernel dot at each precision, the
contraction dims of lax.dot_general, Triton launch parameters, and the whole-sequence block
specs of the sequential state-pass kernels."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

NN = ((1,), (0,))   # a @ b
NT = ((1,), (1,))   # a @ b.T
TN = ((0,), (0,))   # a.T @ b


def dot_fn(precision: str, interpret: bool):
    """In-kernel 2-D dot with an fp32 result; contracting dims given like lax.dot_general.
    "default": bf16 operands; "tf32": one TF32 pass; "highest": TF32x3 (three tensor-core
    passes, about fp32 accuracy). Interpret mode (CPU) has no TF32, so "tf32" and "highest"
    are exact fp32 there."""
    if precision == "default":
        def dot(a, b, dims):
            return lax.dot_general(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16),
                                   (dims, ((), ())), preferred_element_type=jnp.float32)
    else:
        prec = (lax.Precision.HIGHEST if interpret
                else lax.DotAlgorithmPreset.TF32_TF32_F32_X3 if precision == "highest"
                else lax.DotAlgorithmPreset.TF32_TF32_F32)

        def dot(a, b, dims):
            return lax.dot_general(a, b, (dims, ((), ())), precision=prec,
                                   preferred_element_type=jnp.float32)
    return dot


def triton_params(num_warps: int, num_stages: int, interpret: bool):
    """The Triton compiler parameters of one pallas_call (None in interpret mode)."""
    if interpret:
        return None
    from jax.experimental.pallas import triton as pltriton
    return pltriton.CompilerParams(num_warps=num_warps, num_stages=num_stages)


def v_tile(V: int, block_v: int) -> int:
    """The state pass's V tile: the largest power of two dividing V, at most block_v."""
    return min(block_v, V & -V)


def seq_specs(Tp, Kp, C, N, BV):
    """Whole-sequence blocks of the sequential state-pass kernels over grid (BH, V tiles):
    "k" [Tp, Kp] (w, kd, qd), "v" [Tp, BV] (u, o, delta, dd, dO), "c" [Tp, C] (aqk), "gc"
    [Kp, N], "state" [Kp, BV] and "states" [N * Kp, BV] (the per-chunk states)."""
    return dict(k=pl.BlockSpec((None, Tp, Kp), lambda i, j: (i, 0, 0)),
                v=pl.BlockSpec((None, Tp, BV), lambda i, j: (i, 0, j)),
                c=pl.BlockSpec((None, Tp, C), lambda i, j: (i, 0, 0)),
                gc=pl.BlockSpec((None, Kp, N), lambda i, j: (i, 0, 0)),
                state=pl.BlockSpec((None, Kp, BV), lambda i, j: (i, 0, j)),
                states=pl.BlockSpec((None, N * Kp, BV), lambda i, j: (i, 0, j)))
