"""The causal convolution with SiLU on a GPU: Pallas (Triton) forward and backward kernels in one
`jax.custom_vjp`.

Why this exists
    JAX's derivative of the shifted-slice convolution is a pad, W shifted products and W
    reductions over tokens, which XLA spreads over several fusions. At the 370M model (B8
    T2048, 4,224 conv channels a layer) it took 5.8 ms of an H100's training step, about four
    times the bytes it must move. Here one pass reads x and dz and writes dx, with per-program
    sums for dw; forward and backward take 0.66x XLA's GPU time at the 370M widths, and the
    step 1.9 ms less (H100; docs/kernels-gpu.md).

Math (per channel, y_t = sum_j w_j x_{t-W+1+j}, z = SiLU(y)):
    dy_t = dz_t s_t (1 + y_t (1 - s_t)),  s = sigmoid(y)   (y recomputed in fp32 from x)
    dx_t = sum_j w_j dy_{t+W-1-j},        dw_j = sum_{b,t} x_{t-W+1+j} dy_t

How: each program owns a block of channels and a segment of tokens of one batch row, and walks
its segment one token row at a time, keeping the last W - 1 rows it needs in registers: the
forward walks up and keeps x's, the backward walks down and keeps x's and dy's. So each row of
x and dz is read once (plus W - 1 rows of context at each segment's edges) and no tile is ever
shifted, which Triton cannot do in registers. An earlier kernel recomputed y at W shifted row
offsets of whole tiles instead (20 tile loads a step, about 170 registers a thread) and was
1.5x slower than XLA's derivative. The walk issues the loads of UNROLL rows together, then
does their math in order, so each warp has loads in flight while it computes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from kernels.gated_delta_rule.gpu.triton_common import triton_params

# tokens a program, rows whose loads issue together, channels a program, warps a program
LAUNCH = dict(seg=128, unroll=8, cb=64, warps=1)


def _row_loader(T, C, CB):
    """(cols mask [1, CB], index(row0, t): the index of ref's row row0 + t at this program's
    columns, load(ref, row0, t): that row as [1, CB] fp32, zeros for t outside [0, T) and
    columns past C). Rows and columns are index arrays, not pl.ds: the
    interpreter clamps a slice that runs past the array where the GPU masks it. The row is
    clipped into range, the columns are not (a clipped column index would hide their
    contiguity from Triton, whose loads would then not vectorise)."""
    c = pl.program_id(2) * CB + jnp.arange(CB)
    cmask = (c < C)[None, :]

    def index(row0, t):
        return (jnp.full((1, 1), row0 + jnp.clip(t, 0, T - 1), jnp.int32), c[None, :])

    def load(ref, row0, t):
        ok = cmask & (t >= 0) & (t < T)
        return pltriton.load(ref.at[index(row0, t)], mask=ok, other=0.0).astype(jnp.float32)

    return cmask, index, load


def _fwd_kernel(x_ref, w_ref, z_ref, *, T, C, W, SEG, UNROLL, CB):
    cmask, index, load = _row_loader(T, C, CB)
    b, t0 = pl.program_id(0), pl.program_id(1) * SEG
    w = [load(w_ref, j, 0) for j in range(W)]
    row0 = b * T

    def body(i, xs):  # xs: x at rows t-W+1 .. t-1 of the next row t
        base = t0 + i * UNROLL
        new = [load(x_ref, row0, base + r) for r in range(UNROLL)]
        for r in range(UNROLL):
            win = xs + [new[r]]  # x_{t-W+1} .. x_t
            y = sum(w[j] * win[j] for j in range(W))
            t = base + r
            pltriton.store(z_ref.at[index(row0, t)], (y * jax.nn.sigmoid(y)).astype(z_ref.dtype),
                           mask=cmask & (t < T))
            xs = win[1:]
        return xs

    xs = [load(x_ref, row0, t0 - W + 1 + j) for j in range(W - 1)]
    jax.lax.fori_loop(0, SEG // UNROLL, body, xs)


def _bwd_kernel(x_ref, w_ref, dz_ref, dx_ref, dw_ref, *, T, C, W, SEG, UNROLL, CB):
    cmask, index, load = _row_loader(T, C, CB)
    b, n = pl.program_id(0), pl.program_id(1)
    t0 = n * SEG
    t_end = jnp.minimum(t0 + SEG, T)
    w = [load(w_ref, j, 0) for j in range(W)]
    row0 = b * T
    # the walk starts W - 1 rows past the segment: dx at its last row needs dy there
    top = t0 + SEG - 1 + W - 1

    def body(i, carry):
        # xs: x at rows t .. t-W+2 of the next row t; dys: dy at rows t+1 .. t+W-1
        xs, dys, dw = carry
        base = top - i * UNROLL
        new_x = [load(x_ref, row0, base - r - W + 1) for r in range(UNROLL)]
        dzs = [load(dz_ref, row0, base - r) for r in range(UNROLL)]
        for r in range(UNROLL):
            t = base - r
            win = xs + [new_x[r]]  # x_t .. x_{t-W+1}; win[m] meets w_{W-1-m}
            y = sum(w[W - 1 - m] * win[m] for m in range(W))
            s = jax.nn.sigmoid(y)
            dy = dzs[r] * s * (1.0 + y * (1.0 - s))
            dx = w[W - 1] * dy + sum(w[W - 1 - k] * dys[k - 1] for k in range(1, W))
            mine = (t >= t0) & (t < t_end)
            pltriton.store(dx_ref.at[index(row0, t)], dx.astype(dx_ref.dtype),
                           mask=cmask & mine)
            keep = jnp.where(mine, dy, 0.0)
            dw = [dw[j] + win[W - 1 - j] * keep for j in range(W)]
            xs, dys = win[1:], ([dy] + dys)[:W - 1]
        return xs, dys, dw

    xs = [load(x_ref, row0, top - m) for m in range(W - 1)]
    zeros = jnp.zeros((1, CB), jnp.float32)
    steps = -(-(SEG + W - 1) // UNROLL)
    _, _, dw = jax.lax.fori_loop(0, steps, body, (xs, [zeros] * (W - 1), [zeros] * W))
    for j in range(W):
        pltriton.store(dw_ref.at[index((b * pl.num_programs(1) + n) * W + j, 0)], dw[j],
                       mask=cmask)


def _launch(kernel, inputs, out_shape, T, C, W, launch, interpret, name):
    seg, unroll, cb, warps = (launch[k] for k in ("seg", "unroll", "cb", "warps"))
    if seg % unroll:
        raise ValueError(f"causal conv launch: seg={seg} is not a multiple of unroll={unroll}")
    B = inputs[0].shape[0] // T
    whole = pl.BlockSpec(memory_space=pl.ANY)
    return pl.pallas_call(
        functools.partial(kernel, T=T, C=C, W=W, SEG=seg, UNROLL=unroll, CB=cb),
        grid=(B, -(-T // seg), -(-C // cb)), in_specs=[whole] * len(inputs),
        out_specs=jax.tree.map(lambda _: whole, out_shape), out_shape=out_shape,
        interpret=interpret, name=name, compiler_params=triton_params(warps, 1, interpret),
    )(*inputs)


def conv_silu_fwd(x_BTC, w_WC, *, interpret: bool = False, launch: dict = LAUNCH):
    """SiLU(y) in x's dtype, w rounded to x's dtype first (as the reference does); the math in
    fp32, rounded once."""
    B, T, C = x_BTC.shape
    W = w_WC.shape[0]
    z = _launch(_fwd_kernel, (x_BTC.reshape(B * T, C), w_WC.astype(x_BTC.dtype)),
                jax.ShapeDtypeStruct((B * T, C), x_BTC.dtype), T, C, W, launch, interpret,
                "causal_conv_silu_fwd")
    return z.reshape(B, T, C)


def conv_silu_bwd(x_BTC, w_WC, dz_BTC, *, interpret: bool = False, launch: dict = LAUNCH):
    """(dx [B, T, C] in x's dtype, dw [W, C] in w's dtype) of `conv_silu_fwd` at cotangent dz."""
    B, T, C = x_BTC.shape
    W = w_WC.shape[0]
    NT = -(-T // launch["seg"])
    out_shape = (jax.ShapeDtypeStruct((B * T, C), x_BTC.dtype),
                 jax.ShapeDtypeStruct((B * NT * W, C), jnp.float32))
    dx, dw = _launch(_bwd_kernel, (x_BTC.reshape(B * T, C), w_WC.astype(x_BTC.dtype),
                                   dz_BTC.reshape(B * T, C)),
                     out_shape, T, C, W, launch, interpret, "causal_conv_silu_bwd")
    return dx.reshape(B, T, C), dw.reshape(B * NT, W, C).sum(0).astype(w_WC.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_silu_gpu(x_BTC, w_WC, interpret: bool = False):
    """`reference.conv_silu(x, w)` (no history) by the two kernels."""
    return conv_silu_fwd(x_BTC, w_WC, interpret=interpret)


conv_silu_gpu.defvjp(
    lambda x, w, interpret: (conv_silu_fwd(x, w, interpret=interpret), (x, w)),
    lambda interpret, res, dz: conv_silu_bwd(*res, dz, interpret=interpret))
