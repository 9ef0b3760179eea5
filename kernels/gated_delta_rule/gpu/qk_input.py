"""q and k L2-normalised over K, scaled, zero-padded to [B, Tp, H, Kp] and cast, in one Pallas
(Triton) pass each way: what `use_qk_l2norm` costs on the GPU path.

Why this exists
    As XLA ops this was a row reduction over K (48 at the 370M model) and a separate pad to
    Kp = 64: on an H100, 0.094 ms for the reduction and 0.084 for the pad of one [8, 2048, 22,
    48] bf16 tensor, about 0.8 TB/s, and the backward's reduction 0.13 ms (0.6 TB/s). Rows of
    48 or 96 elements are not a power of two, and XLA's row reductions are slow at them. Here
    each program holds a [R, Kp] tile: read once, written once, both ways. Without the
    normalisation there is no reduction, and XLA's scale, pad and cast fuse into their
    neighbours or vanish (chunk.py), so this kernel is not used.

forward:   y = s x / sqrt(sum_k x^2 + eps),  padded with zeros
backward:  dx = s r (dy - n (n . dy)),  r = 1/sqrt(sum_k x^2 + eps),  n = r x
x [B, T, H, K] of any float dtype; y [B, Tp, H, Kp] in `out_dtype` (float32 math in the
kernel); dx in x's dtype. The eps is the reference's (`reference.L2NORM_EPS`).
"""

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from kernels.gated_delta_rule import reference
from kernels.gated_delta_rule.gpu.triton_common import triton_params

ROWS = 64  # tokens a program at most; [64, Kp <= 256] fp32 is 128 registers a thread at 4 warps


def rows_for(Tp: int) -> int:
    """Tokens a program: the largest power of two <= ROWS dividing Tp."""
    return min(ROWS, Tp & -Tp)


def _norm(x):
    """(n, r): the normalised rows and their 1/norm."""
    r = jax.lax.rsqrt(jnp.sum(x * x, axis=1, keepdims=True) + reference.L2NORM_EPS)
    return x * r, r


def _tile(x_ref, T, K, Kp, R):
    """x's rows of this program (batch b, tokens n*R.., head h) as [R, Kp] fp32, zeros past T
    and past K; and that mask."""
    b, n, h = (pl.program_id(i) for i in range(3))
    t = n * R + jnp.arange(R)
    mask = (t < T)[:, None] & (jnp.arange(Kp) < K)[None, :]
    idx = (pl.ds(b * T + n * R, R), pl.ds(h * K, Kp))
    return pltriton.load(x_ref.at[idx], mask=mask, other=0.0).astype(jnp.float32), idx, mask


def _fwd_kernel(x_ref, y_ref, *, T, K, Kp, R, scale):
    x, _, _ = _tile(x_ref, T, K, Kp, R)
    y_ref[...] = (_norm(x)[0] * scale).astype(y_ref.dtype)


def _bwd_kernel(x_ref, dy_ref, dx_ref, *, T, K, Kp, R, scale):
    x, idx, mask = _tile(x_ref, T, K, Kp, R)
    dy = dy_ref[...].astype(jnp.float32) * scale
    nx, r = _norm(x)
    dx = r * (dy - nx * jnp.sum(nx * dy, axis=1, keepdims=True))
    pltriton.store(dx_ref.at[idx], dx.astype(dx_ref.dtype), mask=mask)


def _call(kernel, shape, Tp, Kp, scale, out_shape, in_specs, out_specs, interpret, name):
    """pallas_call over (B, Tp / R, H) for x of shape [B, T, H, K]; specs "padded" (the
    program's [R, Kp] block of [B * Tp, H * Kp]) or "whole" (a raw ref, indexed in-kernel)."""
    B, T, H, K = shape
    R = rows_for(Tp)
    kernel = functools.partial(kernel, T=T, K=K, Kp=Kp, R=R, scale=scale)
    padded = pl.BlockSpec((R, Kp), lambda b, n, h: (b * (Tp // R) + n, h))
    spec = lambda s: padded if s == "padded" else pl.BlockSpec(memory_space=pl.ANY)
    return pl.pallas_call(kernel, grid=(B, Tp // R, H), out_shape=out_shape,
                          in_specs=[spec(s) for s in in_specs], out_specs=spec(out_specs),
                          interpret=interpret, name=name,
                          compiler_params=triton_params(4, 1, interpret))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4, 5))
def qk_input(x, Tp: int, Kp: int, scale: float, out_dtype, interpret: bool):
    """x [B, T, H, K] -> [B, Tp, H, Kp] in out_dtype (see the module docstring). Tp: a multiple
    of 16 >= T; Kp: a power of two >= K."""
    B, T, H, K = x.shape
    if Tp % 16 or Tp < T or Kp & (Kp - 1) or Kp < K:
        raise ValueError(f"qk_input needs Tp a multiple of 16 >= T and Kp a power of two >= K; "
                         f"got T={T}, Tp={Tp}, K={K}, Kp={Kp}")
    y = _call(_fwd_kernel, x.shape, Tp, Kp, scale,
              jax.ShapeDtypeStruct((B * Tp, H * Kp), out_dtype), ["whole"], "padded",
              interpret, "gdr_qk_input")(x.reshape(B * T, H * K))
    return y.reshape(B, Tp, H, Kp)


def _qk_input_fwd(x, Tp, Kp, scale, out_dtype, interpret):
    return qk_input(x, Tp, Kp, scale, out_dtype, interpret), x


def _qk_input_bwd(Tp, Kp, scale, out_dtype, interpret, x, dy):
    B, T, H, K = x.shape
    dx = _call(_bwd_kernel, x.shape, Tp, Kp, scale,
               jax.ShapeDtypeStruct((B * T, H * K), x.dtype), ["whole", "padded"], "whole",
               interpret, "gdr_qk_input_bwd")(x.reshape(B * T, H * K),
                                              dy.reshape(B * Tp, H * Kp))
    return (dx.reshape(B, T, H, K),)


qk_input.defvjp(_qk_input_fwd, _qk_input_bwd)
