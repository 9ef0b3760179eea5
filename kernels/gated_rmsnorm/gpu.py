"""The gated RMSNorm on a GPU: XLA's forward (`reference.gated_rmsnorm`) and a Pallas (Triton)
backward, in one `jax.custom_vjp`.

Why this exists
    JAX's derivative of the norm and gate became, on an H100 at the 370M model (rows of V = 96
    over B8 T2048 H22), three fusions taking 0.41 ms a layer: rows whose length is not a power
    of two reduce slowly in XLA, and the scale's gradient is a second reduction over every
    token. Here one pass reads dy, o and the gate once and writes do and dgate once, with
    per-block sums for dscale.

Math per row (n = r o, r = 1/sqrt(mean(o^2) + eps), s = sigmoid(gate), y = n scale gate s):
    dn = dy scale gate s,   do = r (dn - n mean(dn n)),
    dgate = dy n scale s (1 + gate (1 - s)),   dscale = sum over rows of dy n gate s
One program per ROWS rows of [B*T*H, V], the row padded to a power of two in registers.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from kernels.gated_rmsnorm.reference import gated_rmsnorm
from kernels.gated_delta_rule.gpu.triton_common import triton_params

# the best of benchmarks/gdn_output_norm.py's launch sweep at the 370M dims (H200): at 64 rows
# and 4 warps each [64, 128] fp32 tile is 64 registers a thread and the kernel spills
ROWS, WARPS = 32, 8


def _bwd_kernel(o_ref, g_ref, s_ref, dy_ref, do_ref, dg_ref, ds_ref, *, N, V, Vp, eps, ROWS):
    i = pl.program_id(0)
    r0 = i * ROWS
    # a traced column start (program 0 of a grid dim of 1): the interpreter checks a static
    # slice's bounds, and this one runs past V, masked
    cols = pl.ds(pl.program_id(1) * Vp, Vp)
    rows = pl.ds(r0, ROWS)
    cmask = jnp.arange(Vp) < V
    mask = ((r0 + jnp.arange(ROWS)) < N)[:, None] & cmask[None, :]
    load = lambda ref: pltriton.load(ref.at[rows, cols], mask=mask, other=0.0).astype(
        jnp.float32)
    o, g, dy = load(o_ref), load(g_ref), load(dy_ref)
    scale = pltriton.load(s_ref.at[pl.ds(0, 1), cols], mask=cmask[None, :], other=0.0)
    r = jax.lax.rsqrt(jnp.sum(o * o, axis=1, keepdims=True) / V + eps)
    n = o * r
    sg = jax.nn.sigmoid(g)
    gate = g * sg
    dn = dy * scale * gate
    do = r * (dn - n * (jnp.sum(dn * n, axis=1, keepdims=True) / V))
    dg = dy * n * scale * sg * (1.0 + g * (1.0 - sg))
    pltriton.store(do_ref.at[rows, cols], do.astype(do_ref.dtype), mask=mask)
    pltriton.store(dg_ref.at[rows, cols], dg.astype(dg_ref.dtype), mask=mask)
    pltriton.store(ds_ref.at[pl.ds(i, 1), cols], jnp.sum(dy * n * gate, axis=0, keepdims=True),
                   mask=cmask[None, :])


def gated_rmsnorm_bwd(o, gate, scale, dy, eps: float, interpret: bool = False, *,
                      rows: int = ROWS, warps: int = WARPS):
    """(do, dgate, dscale) of `reference.gated_rmsnorm` at cotangent dy; each in its input's
    dtype. rows (a power of two) and warps: the launch (benchmarks sweep them)."""
    V = o.shape[-1]
    N = o.size // V
    Vp = max(16, 1 << (V - 1).bit_length())
    nb = -(-N // rows)
    whole = pl.BlockSpec(memory_space=pl.ANY)
    kernel = functools.partial(_bwd_kernel, N=N, V=V, Vp=Vp, eps=eps, ROWS=rows)
    do, dg, ds = pl.pallas_call(
        kernel, grid=(nb, 1), in_specs=[whole] * 4, out_specs=[whole] * 3,
        out_shape=(jax.ShapeDtypeStruct((N, V), o.dtype), jax.ShapeDtypeStruct((N, V), gate.dtype),
                   jax.ShapeDtypeStruct((nb, V), jnp.float32)),
        interpret=interpret, name="gated_rmsnorm_bwd",
        compiler_params=triton_params(warps, 1, interpret),
    )(o.reshape(N, V), gate.reshape(N, V), scale.astype(jnp.float32).reshape(1, V),
      dy.reshape(N, V))
    return do.reshape(o.shape), dg.reshape(gate.shape), ds.sum(0).astype(scale.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def gated_rmsnorm_gpu(o, gate, scale, eps: float, out_dtype, interpret: bool = False):
    """`reference.gated_rmsnorm` whose backward is `gated_rmsnorm_bwd`."""
    return gated_rmsnorm(o, gate, scale, eps, out_dtype)


gated_rmsnorm_gpu.defvjp(
    lambda o, g, s, eps, dt, interpret: (gated_rmsnorm(o, g, s, eps, dt), (o, g, s)),
    lambda eps, dt, interpret, res, dy: gated_rmsnorm_bwd(*res, dy, eps, interpret))
