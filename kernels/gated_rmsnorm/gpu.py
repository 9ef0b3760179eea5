"""The gated RMSNorm on a GPU: a Pallas (Triton) forward and backward, in one `jax.custom_vjp`.

Why this exists
    XLA reduces rows whose length is not a power of two slowly. At the 370M model (rows of
    V = 96 over B8 T2048 H22) on an H100 its forward took 0.195 ms a layer, about three times
    its bytes, and its derivative three fusions taking 0.41 ms: the scale's gradient is a
    second reduction over every token. Here the forward is one pass that reads o and the gate
    and writes y, and the backward one pass that reads dy, o and the gate once and writes do
    and dgate, with per-block sums for dscale.

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

from kernels.gated_delta_rule.gpu.triton_common import triton_params

# the launches: the best of benchmarks/gdn_output_norm.py's sweeps at the 370M dims. Backward
# (H200 and H100): at 64 rows and 4 warps each [64, 128] fp32 tile is 64 registers a thread and
# the kernel spills. Forward: 32 rows and 4 warps took 0.88x XLA's time on an H100 (8 warps
# 1.0x), 0.75x on an H200 (8 warps the same).
FWD_ROWS, FWD_WARPS = 32, 4
BWD_ROWS, BWD_WARPS = 32, 8


def _block(N, V, Vp, ROWS):
    """(rows, cols, mask, load, scale) of this program's [ROWS, Vp] block of [N, V] (or of o's
    first V columns); mask(width): its rows below N and columns below width; load reads a
    ref's block as fp32, zeros outside; scale loads the [1, V] scale."""
    r0 = pl.program_id(0) * ROWS
    # a traced column start (program 0 of a grid dim of 1): the interpreter checks a static
    # slice's bounds, and this one runs past V, masked
    cols = pl.ds(pl.program_id(1) * Vp, Vp)
    rows = pl.ds(r0, ROWS)
    mask = lambda width: ((r0 + jnp.arange(ROWS)) < N)[:, None] & (
        jnp.arange(Vp) < width)[None, :]
    load = lambda ref: pltriton.load(ref.at[rows, cols], mask=mask(V), other=0.0).astype(
        jnp.float32)
    scale = lambda ref: pltriton.load(ref.at[pl.ds(0, 1), cols],
                                      mask=(jnp.arange(Vp) < V)[None, :], other=0.0)
    return rows, cols, mask, load, scale


def _normed(o, g, V, eps):
    """(r [ROWS, 1], n = r o, sigmoid(g), the gate g sigmoid(g)) in fp32."""
    r = jax.lax.rsqrt(jnp.sum(o * o, axis=1, keepdims=True) / V + eps)
    sg = jax.nn.sigmoid(g)
    return r, o * r, sg, g * sg


def _fwd_kernel(o_ref, g_ref, s_ref, y_ref, *, N, V, Vo, Vp, eps, ROWS):
    rows, cols, mask, load, load_scale = _block(N, V, Vp, ROWS)
    _, n, _, gate = _normed(load(o_ref), load(g_ref), V, eps)
    y = n * load_scale(s_ref) * gate
    pltriton.store(y_ref.at[rows, cols], y.astype(y_ref.dtype), mask=mask(V))


def _bwd_kernel(o_ref, g_ref, s_ref, dy_ref, do_ref, dg_ref, ds_ref, *, N, V, Vo, Vp, eps,
                ROWS):
    i = pl.program_id(0)
    rows, cols, mask, load, load_scale = _block(N, V, Vp, ROWS)
    o, g, dy, scale = load(o_ref), load(g_ref), load(dy_ref), load_scale(s_ref)
    r, n, sg, gate = _normed(o, g, V, eps)
    dn = dy * scale * gate
    do = r * (dn - n * (jnp.sum(dn * n, axis=1, keepdims=True) / V))
    dg = dy * n * scale * sg * (1.0 + g * (1.0 - sg))
    # do over o's whole width Vo: its columns past V are 0 here (o, dy and the gate load as 0)
    pltriton.store(do_ref.at[rows, cols], do.astype(do_ref.dtype), mask=mask(Vo))
    pltriton.store(dg_ref.at[rows, cols], dg.astype(dg_ref.dtype), mask=mask(V))
    pltriton.store(ds_ref.at[pl.ds(i, 1), cols], jnp.sum(dy * n * gate, axis=0, keepdims=True),
                   mask=(jnp.arange(Vp) < V)[None, :])


def _launch(kernel, args, out_shapes, *, eps, rows, warps, interpret, name):
    """`kernel` over N rows, ROWS rows a program: args (o, gate, scale[, dy]) as [N, Vo],
    [N, V], [1, V][, [N, V]], with Vo >= V (o's columns past V are zero padding)."""
    Vo, V = args[0].shape[-1], args[1].shape[-1]
    N = args[1].size // V
    Vp = max(16, 1 << (Vo - 1).bit_length())
    whole = pl.BlockSpec(memory_space=pl.ANY)
    return pl.pallas_call(
        functools.partial(kernel, N=N, V=V, Vo=Vo, Vp=Vp, eps=eps, ROWS=rows),
        grid=(-(-N // rows), 1), in_specs=[whole] * len(args),
        out_specs=[whole] * len(out_shapes), out_shape=out_shapes, interpret=interpret,
        name=name, compiler_params=triton_params(warps, 1, interpret),
    )(*(a.reshape(-1, a.shape[-1]) for a in args))


def gated_rmsnorm_fwd(o, gate, scale, eps: float, out_dtype, interpret: bool = False, *,
                      rows: int = FWD_ROWS, warps: int = FWD_WARPS):
    """`reference.gated_rmsnorm(o[..., :V], gate, scale, eps, out_dtype)` in one pass, V =
    gate's width (o may be wider, zero past V). rows (a power of two) and warps: the launch
    (benchmarks sweep them)."""
    y, = _launch(_fwd_kernel, (o, gate, scale.astype(jnp.float32)),
                 (jax.ShapeDtypeStruct((gate.size // gate.shape[-1], gate.shape[-1]),
                                       out_dtype),), eps=eps, rows=rows, warps=warps,
                 interpret=interpret, name="gated_rmsnorm_fwd")
    return y.reshape(gate.shape)


def gated_rmsnorm_bwd(o, gate, scale, dy, eps: float, interpret: bool = False, *,
                      rows: int = BWD_ROWS, warps: int = BWD_WARPS):
    """(do, dgate, dscale) of `gated_rmsnorm_fwd` at cotangent dy; each in its input's dtype
    and shape (do zero past V). rows (a power of two) and warps: the launch (benchmarks sweep
    them)."""
    V = gate.shape[-1]
    N = gate.size // V
    do, dg, ds = _launch(
        _bwd_kernel, (o, gate, scale.astype(jnp.float32), dy),
        (jax.ShapeDtypeStruct((N, o.shape[-1]), o.dtype),
         jax.ShapeDtypeStruct((N, V), gate.dtype),
         jax.ShapeDtypeStruct((-(-N // rows), V), jnp.float32)),
        eps=eps, rows=rows, warps=warps, interpret=interpret, name="gated_rmsnorm_bwd")
    return do.reshape(o.shape), dg.reshape(gate.shape), ds.sum(0).astype(scale.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def gated_rmsnorm_gpu(o, gate, scale, eps: float, out_dtype, interpret: bool = False):
    """`reference.gated_rmsnorm`, forward and backward as the kernels above."""
    return gated_rmsnorm_fwd(o, gate, scale, eps, out_dtype, interpret)


gated_rmsnorm_gpu.defvjp(
    lambda o, g, s, eps, dt, interpret: (gated_rmsnorm_fwd(o, g, s, eps, dt, interpret),
                                         (o, g, s)),
    lambda eps, dt, interpret, res, dy: gated_rmsnorm_bwd(*res, dy, eps, interpret))
