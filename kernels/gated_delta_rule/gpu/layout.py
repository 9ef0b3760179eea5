"""The caller's layout of q, k, v, o and their gradients, as the GPU kernels read and write it.

The kernels run one program per (batch x value head i, chunk or V tile). With heads = HV they
index the caller's arrays [B, T, HV, d], seen as [B, Tp, HV * d] (a free reshape when T is a
multiple of the chunk): program i reads batch i // heads, columns from (i % heads) * d. That
spares XLA a transpose to [B * HV, Tp, d] and back for each of q, k, v, o, dO, dq, dk, dv
(on an H200 at B4 T4096 H16 K=V=128, forward+backward 1.693 ms against 1.848 with them,
experiments/LOG.md).
heads=None is the [B * HV, Tp, d] layout.
"""

from __future__ import annotations

import jax
from jax.experimental import pallas as pl


def block_spec(C: int, d: int, heads: int | None) -> pl.BlockSpec:
    """A Triton BlockSpec over grid (BH, chunks) of program i's [C, d] block of chunk n."""
    if heads is None:
        return pl.BlockSpec((None, C, d), lambda i, n: (i, n, 0))
    return pl.BlockSpec((None, C, d), lambda i, n: (i // heads, n, i % heads))


def shape(BH: int, Tp: int, d: int, heads: int | None) -> tuple[int, int, int]:
    """The array shape of BH programs' [Tp, d] slices."""
    return (BH, Tp, d) if heads is None else (BH // heads, Tp, heads * d)


def dims(q, v, heads: int | None) -> tuple[int, int, int, int]:
    """(BH, Tp, Kp, Vp) of q- and v-shaped arrays."""
    if heads is None:
        return (*q.shape, v.shape[-1])
    (B, Tp, HK), HVp = q.shape, v.shape[-1]
    if HK % heads or HVp % heads or v.shape[:2] != (B, Tp):
        raise ValueError(f"the caller's layout needs q [B, Tp, heads * Kp] and v [B, Tp, "
                         f"heads * Vp]; got {q.shape}, {v.shape} with heads={heads}")
    return B * heads, Tp, HK // heads, HVp // heads


def flat(x, heads: int | None, BH: int):
    """x, or with heads its shape seen as [BH, Tp, d] (a ShapeDtypeStruct, for shape checks)."""
    if heads is None:
        return x
    if x.ndim != 3 or x.shape[0] * heads != BH or x.shape[-1] % heads:
        raise ValueError(f"expected the caller's layout [B, Tp, heads * d] with B * heads = "
                         f"{BH}, heads = {heads}; got {x.shape}")
    return jax.ShapeDtypeStruct((BH, x.shape[1], x.shape[2] // heads), x.dtype)


def tile(ref, i, rows, heads: int | None, d: int, col=0, width: int | None = None):
    """A Mosaic GPU GMEM ref's block (a TMA box) of program i: `rows`, columns col:col+width
    (all d by default) of its [Tp, d] slice."""
    width = d if width is None else width
    if heads is None:
        return ref.at[i, rows] if width == d else ref.at[i, rows, pl.ds(col, width)]
    return ref.at[i // heads, rows, pl.ds((i % heads) * d + col, width)]
