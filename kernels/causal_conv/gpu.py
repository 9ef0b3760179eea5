"""The causal convolution with SiLU on a GPU: Pallas (Triton) forward and backward kernels in one
`jax.custom_vjp`.

Why this exists
    JAX's derivative of the shifted-slice convolution is a pad, W shifted products and W
    reductions over tokens, which XLA spreads over several fusions. At the 370M model (B8
    T2048, 4,224 conv channels a layer) it took 5.8 ms of an H100's training step, about four
    times the bytes it must move. Here one pass reads x and dz and writes dx, with per-program
    sums for dw.

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

from kernels.causal_conv.reference import out_channels
from kernels.gated_delta_rule.gpu.triton_common import triton_params

# tokens a program, rows whose loads issue together, channels a program, warps a program
LAUNCH = dict(seg=128, unroll=8, cb=64, warps=1)


class _Rows:
    """The rows and columns one program touches. Programs run over blocks of CB columns of z
    (the output, and dz); with groups (G, Gp) each group of G channels of x sits in Gp columns
    of z, zero past G, so z's column j of group h is x's channel h * G + j (none for j >= G).
    Rows and columns are index arrays, not pl.ds: the interpreter clamps a slice that runs past
    the array where the GPU masks it. The row is clipped into range, the columns are not (a
    clipped column index would hide their contiguity from Triton, whose loads would then not
    vectorise)."""

    def __init__(self, T, C, G, Gp, CB):
        oc = pl.program_id(2) * CB + jnp.arange(CB)
        self.T, omask = T, oc < C // G * Gp
        if G == Gp:
            xc, xmask = oc, omask
        else:
            j = oc % Gp
            xc, xmask = oc // Gp * G + j, omask & (j < G)
        self.cols = {"x": (xc[None, :], xmask[None, :]), "z": (oc[None, :], omask[None, :])}

    def index(self, row0, t, cols):
        c, _ = self.cols[cols]
        return (jnp.full((1, 1), row0 + jnp.clip(t, 0, self.T - 1), jnp.int32), c)

    def load(self, ref, row0, t, cols):
        """ref's row row0 + t at `cols` ("x": x's channels, "z": z's columns) as [1, CB] fp32,
        zeros for t outside [0, T) and columns with no channel."""
        ok = self.cols[cols][1] & (t >= 0) & (t < self.T)
        return pltriton.load(ref.at[self.index(row0, t, cols)], mask=ok,
                             other=0.0).astype(jnp.float32)

    def store(self, ref, row0, t, cols, value, ok=True):
        pltriton.store(ref.at[self.index(row0, t, cols)], value.astype(ref.dtype),
                       mask=self.cols[cols][1] & ok)


def _fwd_kernel(x_ref, w_ref, z_ref, *, T, C, G, Gp, W, SEG, UNROLL, CB):
    rows = _Rows(T, C, G, Gp, CB)
    b, t0 = pl.program_id(0), pl.program_id(1) * SEG
    w = [rows.load(w_ref, j, 0, "x") for j in range(W)]
    row0 = b * T

    def body(i, xs):  # xs: x at rows t-W+1 .. t-1 of the next row t
        base = t0 + i * UNROLL
        new = [rows.load(x_ref, row0, base + r, "x") for r in range(UNROLL)]
        for r in range(UNROLL):
            win = xs + [new[r]]  # x_{t-W+1} .. x_t
            y = sum(w[j] * win[j] for j in range(W))
            t = base + r
            # columns with no channel get SiLU(0) = 0: the groups' zero padding
            rows.store(z_ref, row0, t, "z", y * jax.nn.sigmoid(y), t < T)
            xs = win[1:]
        return xs

    xs = [rows.load(x_ref, row0, t0 - W + 1 + j, "x") for j in range(W - 1)]
    jax.lax.fori_loop(0, SEG // UNROLL, body, xs)


def _bwd_kernel(x_ref, w_ref, dz_ref, dx_ref, dw_ref, *, T, C, G, Gp, W, SEG, UNROLL, CB):
    rows = _Rows(T, C, G, Gp, CB)
    b, n = pl.program_id(0), pl.program_id(1)
    t0 = n * SEG
    t_end = jnp.minimum(t0 + SEG, T)
    w = [rows.load(w_ref, j, 0, "x") for j in range(W)]
    row0 = b * T
    # the walk starts W - 1 rows past the segment: dx at its last row needs dy there
    top = t0 + SEG - 1 + W - 1

    def body(i, carry):
        # xs: x at rows t .. t-W+2 of the next row t; dys: dy at rows t+1 .. t+W-1
        xs, dys, dw = carry
        base = top - i * UNROLL
        new_x = [rows.load(x_ref, row0, base - r - W + 1, "x") for r in range(UNROLL)]
        dzs = [rows.load(dz_ref, row0, base - r, "z") for r in range(UNROLL)]
        for r in range(UNROLL):
            t = base - r
            win = xs + [new_x[r]]  # x_t .. x_{t-W+1}; win[m] meets w_{W-1-m}
            y = sum(w[W - 1 - m] * win[m] for m in range(W))
            s = jax.nn.sigmoid(y)
            dy = dzs[r] * s * (1.0 + y * (1.0 - s))
            dx = w[W - 1] * dy + sum(w[W - 1 - k] * dys[k - 1] for k in range(1, W))
            mine = (t >= t0) & (t < t_end)
            rows.store(dx_ref, row0, t, "x", dx, mine)
            keep = jnp.where(mine, dy, 0.0)
            dw = [dw[j] + win[W - 1 - j] * keep for j in range(W)]
            xs, dys = win[1:], ([dy] + dys)[:W - 1]
        return xs, dys, dw

    xs = [rows.load(x_ref, row0, top - m, "x") for m in range(W - 1)]
    zeros = jnp.zeros((1, CB), jnp.float32)
    steps = -(-(SEG + W - 1) // UNROLL)
    _, _, dw = jax.lax.fori_loop(0, steps, body, (xs, [zeros] * (W - 1), [zeros] * W))
    for j in range(W):
        rows.store(dw_ref, (b * pl.num_programs(1) + n) * W + j, 0, "x", dw[j])


def _launch(kernel, inputs, out_shape, T, C, groups, W, launch, interpret, name):
    seg, unroll, cb, warps = (launch[k] for k in ("seg", "unroll", "cb", "warps"))
    if seg % unroll:
        raise ValueError(f"causal conv launch: seg={seg} is not a multiple of unroll={unroll}")
    G, Gp = groups or (C, C)
    B = inputs[0].shape[0] // T
    whole = pl.BlockSpec(memory_space=pl.ANY)
    return pl.pallas_call(
        functools.partial(kernel, T=T, C=C, G=G, Gp=Gp, W=W, SEG=seg, UNROLL=unroll, CB=cb),
        grid=(B, -(-T // seg), -(-(C // G * Gp) // cb)), in_specs=[whole] * len(inputs),
        out_specs=jax.tree.map(lambda _: whole, out_shape), out_shape=out_shape,
        interpret=interpret, name=name, compiler_params=triton_params(warps, 1, interpret),
    )(*inputs)


def conv_silu_fwd(x_BTC, w_WC, groups=None, *, interpret: bool = False,
                  launch: dict = LAUNCH):
    """SiLU(y) in x's dtype, w rounded to x's dtype first (as the reference does); the math in
    fp32, rounded once. groups (G, Gp): z is [B, T, C / G * Gp], each group of G channels
    followed by Gp - G zero columns (a value head padded to the width its consumer computes
    at, written here rather than by a separate pad)."""
    B, T, C = x_BTC.shape
    W, Cz = w_WC.shape[0], out_channels(C, groups)
    z = _launch(_fwd_kernel, (x_BTC.reshape(B * T, C), w_WC.astype(x_BTC.dtype)),
                jax.ShapeDtypeStruct((B * T, Cz), x_BTC.dtype), T, C, groups, W, launch,
                interpret, "causal_conv_silu_fwd")
    return z.reshape(B, T, Cz)


def conv_silu_bwd(x_BTC, w_WC, dz_BTC, groups=None, *, interpret: bool = False,
                  launch: dict = LAUNCH):
    """(dx [B, T, C] in x's dtype, dw [W, C] in w's dtype) of `conv_silu_fwd` at cotangent dz
    (z's shape; its padding columns are not read: they do not depend on x or w)."""
    B, T, C = x_BTC.shape
    W = w_WC.shape[0]
    NT = -(-T // launch["seg"])
    out_shape = (jax.ShapeDtypeStruct((B * T, C), x_BTC.dtype),
                 jax.ShapeDtypeStruct((B * NT * W, C), jnp.float32))
    dx, dw = _launch(_bwd_kernel, (x_BTC.reshape(B * T, C), w_WC.astype(x_BTC.dtype),
                                   dz_BTC.reshape(B * T, -1)),
                     out_shape, T, C, groups, W, launch, interpret, "causal_conv_silu_bwd")
    return dx.reshape(B, T, C), dw.reshape(B * NT, W, C).sum(0).astype(w_WC.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_silu_gpu(x_BTC, w_WC, groups=None, interpret: bool = False):
    """`reference.conv_silu(x, w, groups=groups)` (no history) by the two kernels."""
    return conv_silu_fwd(x_BTC, w_WC, groups, interpret=interpret)


conv_silu_gpu.defvjp(
    lambda x, w, groups, interpret: (conv_silu_fwd(x, w, groups, interpret=interpret), (x, w)),
    lambda groups, interpret, res, dz: conv_silu_bwd(*res, dz, groups, interpret=interpret))
