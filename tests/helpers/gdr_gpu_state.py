"""The GPU state pass's test operands and plain-jnp references, shared by the forward and the
backward Mosaic GPU state kernel tests (no tests here): random operands in `state_fwd`'s
layouts, the chunk loop with and without the kernel's bf16 casts, and the check that a kernel
follows those casts.

Errors: `rel_err` (tests/helpers/gdr.py) is max|a - b| / max|b|; `rms_err` is ||a - b|| / ||b||
in the Frobenius norm."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tests.helpers.gdr import rel_err

BH, N, C = 2, 3, 64
CASES = [(64, 64), (64, 128), (128, 64), (128, 128)]  # (Kp, V): 1 or 2 V tiles of 64


@functools.lru_cache(maxsize=None)
def state_inputs(Kp, V, seed=0):
    """Random state-pass operands in `state_fwd`'s layouts, rounded to bf16 (the
    kernel's operand dtype) but held in fp32, so every implementation sees the same values."""
    Tp = N * C
    ks = jax.random.split(jax.random.key(seed), 7)
    bf = lambda x: x.astype(jnp.bfloat16).astype(jnp.float32)
    w = bf(jax.random.normal(ks[0], (BH, Tp, Kp)) / np.sqrt(Kp))
    u = bf(jax.random.normal(ks[1], (BH, Tp, V)))
    kd = bf(jax.random.normal(ks[2], (BH, Tp, Kp)) / np.sqrt(Kp))
    qd = bf(jax.random.normal(ks[3], (BH, Tp, Kp)) / np.sqrt(Kp))
    causal = jnp.tile(jnp.tril(jnp.ones((C, C))), (N, 1))  # aqk is lower-triangular per chunk
    aqk = bf(jax.random.normal(ks[4], (BH, Tp, C)) * causal / np.sqrt(C))
    # gc differs per state row here (in the model it is exp(G_C) repeated over Kp), so a
    # transposed decay broadcast would show.
    gc = jax.random.uniform(ks[5], (BH, Kp, N), minval=0.3, maxval=1.0)
    s0 = 0.5 * jax.random.normal(ks[6], (BH, Kp, V))
    return w, u, kd, gc, qd, aqk, s0


bf16_round = lambda x: x.astype(jnp.bfloat16).astype(jnp.float32)
dot_highest = functools.partial(jnp.einsum, precision=lax.Precision.HIGHEST,
                                preferred_element_type=jnp.float32)
chunks = lambda x: x.reshape(x.shape[0], x.shape[1] // C, C, x.shape[-1])


def state_reference(w, u, kd, gc, qd, aqk, s0, *, bf16_casts, states=None):
    """Plain-jnp float32 loop over chunks; with bf16_casts, S and delta are rounded to bf16
    where the kernel stores them as wgmma operands (the inputs are bf16 values already).
    A list passed as `states` receives the fp32 chunk-entry states S_n."""
    cast = bf16_round if bf16_casts else (lambda x: x)
    dot = dot_highest
    Tp = w.shape[1]
    w, u, kd, qd, aqk = map(chunks, (w, u, kd, qd, aqk))
    S = s0
    outs = []
    for n in range(Tp // C):
        if states is not None:
            states.append(S)
        Sb = cast(S)
        delta = u[:, n] - dot("bck,bkv->bcv", w[:, n], Sb)
        db = cast(delta)
        outs.append(dot("bck,bkv->bcv", qd[:, n], Sb) + dot("bcd,bdv->bcv", aqk[:, n], db))
        S = gc[:, :, n, None] * S + dot("bck,bcv->bkv", kd[:, n], db)
    return jnp.concatenate(outs, axis=1), S


def rms_err(a, b):
    """Relative error in the Frobenius norm: ||a - b|| / ||b||."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# The kernel against the loop with its casts is not held to a fixed tight tolerance: the
# interpreter's wgmma and XLA's dot (whose CPU code differs by host) sum the fp32 products in
# different orders, so a value next to a bf16 rounding boundary where it becomes a wgmma operand
# (S, delta, dS, dd) can round the other way, and the flip propagates through the chunk
# recurrence. The recurrence never mixes V columns, so the cascade stays in the flip's column:
# its max error reached half the casts' own effect (ds0 at (Kp, V) = (128, 128): 1.1e-3 against
# 2.1e-3) while its RMS error over the output stayed at most 0.06 of theirs. A missing, extra or
# misplaced cast moves every column: the loop with one of its casts dropped, or with the fp32
# state accumulator or fp32 output rounded to bf16, differed from it by 0.6 to 1.2 of the casts'
# effect (RMS) on the output it shows most on, and by 0.36 or more on any output it reaches.
# Hence per output: RMS err(kernel, cast loop) < CAST_RATIO * RMS err(cast loop, no-cast loop).
# An output that no cast reaches (dqd) must match to 1e-5 (max): only summation order differs.
CAST_RATIO = 0.25


def assert_follows_casts(names, got, cast, nocast):
    for name, a, c, f in zip(names, got, cast, nocast):
        a, c, f = (np.asarray(x) for x in (a, c, f))
        assert a.shape == c.shape, (name, a.shape, c.shape)
        effect = rms_err(c, f)
        if effect == 0:
            assert rel_err(a, c) < 1e-5, (name, rel_err(a, c))
        else:
            assert rms_err(a, c) < CAST_RATIO * effect, (name, rms_err(a, c), effect)


def callers_layout(x):  # [BH, Tp, V] as one batch of BH heads: the caller's layout [1, Tp, BH * V]
    return jnp.moveaxis(x, 0, 1).reshape(1, x.shape[1], -1)
