"""The in-chunk math that the prep kernels share: where the log-decays come from (`DECAYS`,
`decay_input`), their [C] and [C, C] tiles inside a kernel, and the unit lower inverse
T = (I + A)^-1 on whole [C, C] tiles. The Triton prep (`prep_triton.py`) runs all of it; the
Mosaic GPU kernels read `decay_input`'s array and follow `unit_lower_inverse`'s recursion."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels.gated_delta_rule.gpu.triton_common import NN

DECAYS = ("exact", "outer", "xla")


def decay_input(g, C, decays):
    """What the prep kernels read for the log-decays: g [BH, Tp] itself, or with decays="xla"
    [BH, 2, Tp]: each chunk's G (inclusive cumsum of g) and logF (the chunk's total minus G),
    made by XLA ops outside the kernels' custom_vjp, so JAX differentiates them."""
    if decays != "xla":
        return g
    BH, Tp = g.shape
    G = jnp.cumsum(g.reshape(BH, Tp // C, C), axis=-1)
    return jnp.stack([G.reshape(BH, Tp), (G[..., -1:] - G).reshape(BH, Tp)], axis=1)


def g_shape(BH, Tp, decays):
    """The shape of `decay_input`'s array (and of its cotangent)."""
    return (BH, 2, Tp) if decays == "xla" else (BH, Tp)


def g_spec(C, decays):
    """The BlockSpec of `decay_input`'s array (and of its cotangent) over grid (BH, chunks)."""
    if decays == "xla":
        return pl.BlockSpec((None, 2, C), lambda i, n: (i, 0, n))
    return pl.BlockSpec((None, C), lambda i, n: (i, n))


# ---------------------------------------------------------------------------------------------
# Inside a kernel: the decays' tiles and the inverse.

def iota(C):
    return (lax.broadcasted_iota(jnp.int32, (C, C), 0),
            lax.broadcasted_iota(jnp.int32, (C, C), 1))


def log_decays(g_ref, row, col, decays):
    """G_i = sum_{l <= i} g_l and logF_i = sum_{l > i} g_l: "exact", as masked row sums;
    "outer", from one 1-D scan (G) and the chunk's total minus it (logF); "xla", read. With
    either of the last two, Gd = G_i - G_j cancels: an absolute exponent error of ulp(|G|)
    (1e-4 at G = -1280, g = -20 a token over 64), a relative error of 1e-4 in a decay, far
    below the bf16 rounding of precision="default"'s dot operands (~4e-3)."""
    if decays == "xla":
        return g_ref[0, :], g_ref[1, :]
    g = g_ref[...]
    if decays == "outer":
        G = jnp.cumsum(g)
        return G, jnp.sum(g) - G
    return (jnp.sum(jnp.where(col <= row, g[None, :], 0.0), axis=1),
            jnp.sum(jnp.where(col > row, g[None, :], 0.0), axis=1))


def tile_decays(g_ref, C, decays):
    """Gd [C, C] (sum of g over (j, i]; on and above the diagonal 0, or else G_i - G_j, which
    every caller masks), G [C], logF [C]; from the kernel's g_ref (`decay_input`)."""
    row, col = iota(C)
    G, logF = log_decays(g_ref, row, col, decays)
    if decays != "exact":
        return row, col, G[:, None] - G[None, :], G, logF
    # Gd[i, j] = sum_{l <= i} g_l [l > j]: a running sum down each column of its own terms
    Gd = jnp.cumsum(jnp.where(row > col, g_ref[...][:, None], 0.0), axis=0)
    return row, col, Gd, G, logF


def row_decays(g_ref, C, decays):
    """E = exp(G) and F = exp(logF) [C], summed (or read) as `log_decays` does."""
    G, logF = log_decays(g_ref, *iota(C), decays)
    return jnp.exp(G), jnp.exp(logF)


def masked_decays(Gd, row, col):
    """exp(Gd) on the strict lower triangle (D) and with the diagonal (Dc), 0 elsewhere: one
    exp of a [C, C] tile, masked with -inf before it."""
    Dc = jnp.exp(jnp.where(row >= col, Gd, -jnp.inf))
    return jnp.where(row > col, Dc, 0.0), Dc


def unit_lower_inverse(A, row, col, C, dot_inv):
    """(I + A)^-1 for A zero on and above the diagonal, by recursive 2x2 blocks as
    `reference.unit_lower_inverse` but on whole [C, C] tiles: with X the inverse of the diagonal
    blocks of size s (zero elsewhere) and L the lower-left s x s block of each 2s diagonal block
    of A, X <- X - X L X inverts the 2s blocks ([[X11, 0], [-X22 L21 X11, X22]]). log2(C) - 1
    levels of two tensor-core products each: the first level (s = 1, X = I) needs none, its
    result is I - L. L's mask is s <= (row ^ col) < 2s (same 2s block, different s halves):
    one int tile and no divisions."""
    rc = jnp.bitwise_xor(row, col)
    X = jnp.where(rc == 0, 1.0, jnp.where(rc == 1, -A, 0.0))
    s = 2
    while s < C:
        L = jnp.where((rc >= s) & (rc < 2 * s), A, 0.0)
        X = X - dot_inv(dot_inv(X, L, NN), X, NN)
        s *= 2
    return X
