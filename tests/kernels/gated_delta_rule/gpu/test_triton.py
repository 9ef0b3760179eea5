"""The Triton kernels of the GPU gated delta rule (gpu/prep_triton.py, gpu/state_triton.py) one
by one, in Pallas interpret mode on CPU: the prep's in-tile (I + A)^-1, its three decay modes
against each other forward and backward, and the caller's layout of the prep backward and of
the dqk kernel (bitwise the [B*HV, Tp, d] layout). The whole op against float64 is in
test_pallas_gpu.py beside this file."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from kernels.gated_delta_rule.gpu import chunk_math
from kernels.gated_delta_rule.gpu import prep_triton as pt
from kernels.gated_delta_rule.gpu import state_triton as st
from kernels.gated_delta_rule.gpu.triton_common import dot_fn

from tests.helpers.gdr import rel_err
from tests.helpers.gdr_gpu_prep import triton_prep_kw


@pytest.mark.parametrize("C", [16, 64])
def test_prep_unit_lower_inverse_matches_numpy(C):
    """The prep kernels' (I + A)^-1 (plain jnp on [C, C] tiles, so testable outside a kernel),
    whose first level is formed without products, against numpy's inverse."""
    A = np.tril(np.random.default_rng(C).uniform(-1, 1, (C, C)), -1) / 4
    row = lax.broadcasted_iota(jnp.int32, (C, C), 0)
    col = lax.broadcasted_iota(jnp.int32, (C, C), 1)
    got = chunk_math.unit_lower_inverse(jnp.asarray(A, jnp.float32), row, col, C,
                                        dot_fn("highest", interpret=True))
    np.testing.assert_allclose(got, np.linalg.inv(np.eye(C) + A), rtol=1e-5, atol=1e-6)


BH, TP, C, KP, VP = 2, 64, 32, 32, 48


def _prep_operands(decay=3.0):
    rng = np.random.default_rng(3)
    normal = lambda d, s=1.0: jnp.asarray(rng.normal(size=(BH, TP, d)) * s, jnp.float32)
    q, k, v = normal(KP, 1 / 6), normal(KP, 1 / 6), normal(VP)
    g = jnp.asarray(-rng.uniform(0, decay, (BH, TP)), jnp.float32)
    beta = jnp.asarray(rng.uniform(0, 2, (BH, TP)), jnp.float32)
    cts = tuple(normal(d) for d in (KP, VP, KP, KP, C))  # dw, du, dkd, dqd, daqk
    return q, k, v, g, beta, cts


@functools.lru_cache(maxsize=None)
def _prep_both_ways(decays, precision="highest"):
    """prep_fwd (saving T) and prep_bwd with `decays`; dg mapped back to g (for "xla", through
    `decay_input`'s vjp, as JAX does in the op)."""
    kw = triton_prep_kw(precision, decays, C=C)
    dt = jnp.float32 if precision == "highest" else jnp.bfloat16

    @jax.jit
    def run(q, k, v, g, beta, cts):
        g_in, to_g = jax.vjp(functools.partial(chunk_math.decay_input, C=C, decays=decays), g)
        *out, T = pt.prep_fwd(q, k, v, g_in, beta, out_dtype=dt, save_inverse=True, **kw)
        alone = pt.prep_fwd(q, k, v, g_in, beta, out_dtype=dt, **kw)
        dq, dk, dv, dg_in, dbeta = pt.prep_bwd(q, k, v, g_in, beta, T,
                                               *(c.astype(dt) for c in cts), **kw)
        return out, alone, (*out, dq, dk, dv, to_g(dg_in)[0], dbeta)

    out, alone, result = run(*_prep_operands())
    for a, b in zip(out, alone):  # writing T changes none of the outputs
        assert bool(jnp.all(a == b))
    return result


def test_prep_decay_modes_agree_forward_and_backward():
    """The three sources of the in-chunk log-decays (`chunk_math.DECAYS`) at "highest" (exact
    fp32 in interpret mode) on strong decays (g down to -3 a token): "outer" and "xla" take
    differences of one cumulative sum, "exact" sums each difference over its own terms; the
    outputs and every cotangent agree to fp32 rounding, so a wrong term in any dg formula
    (three of them) would show."""
    names = ("w", "u", "kd", "qd", "aqk", "dq", "dk", "dv", "dg", "dbeta")
    exact = _prep_both_ways("exact")
    for decays in ("outer", "xla"):
        for name, a, b in zip(names, _prep_both_ways(decays), exact):
            assert rel_err(a, b) < 2e-5, (decays, name, rel_err(a, b))


def test_prep_default_precision_keeps_the_operand_dtypes():
    """At "default" the chunk operands and T are bf16; dq, dk, dv come in q's dtype (fp32 here)
    and dg, dbeta in fp32; within bf16 rounding of the "highest" run."""
    got = _prep_both_ways("outer", "default")
    want = _prep_both_ways("exact")
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.dtype == (jnp.bfloat16 if i < 5 else jnp.float32), i
        assert rel_err(a, b) < 2e-2, (i, rel_err(a, b))


def _callers(x, heads):  # [BH, Tp, d] as B = BH / heads batches: the caller's [B, Tp, heads * d]
    B = x.shape[0] // heads
    return jnp.moveaxis(x.reshape(B, heads, *x.shape[1:]), 1, 2).reshape(B, x.shape[1], -1)


def test_prep_bwd_in_the_callers_layout_is_bitwise_the_same():
    """heads: the backward reads q, k, v and writes dq, dk, dv in the caller's layout (what it
    does after the Mosaic prep forward): bitwise the [B*HV, Tp, d] layout's results."""
    kw = triton_prep_kw("default", "xla", C=C)

    @jax.jit
    def run(q, k, v, g, beta, cts):
        g_in = chunk_math.decay_input(g, C, "xla")
        *_, T = pt.prep_fwd(q, k, v, g_in, beta, out_dtype=jnp.bfloat16, save_inverse=True,
                            **kw)
        cts = tuple(c.astype(jnp.bfloat16) for c in cts)
        return (pt.prep_bwd(q, k, v, g_in, beta, T, *cts, **kw),
                pt.prep_bwd(*(_callers(x, BH) for x in (q, k, v)), g_in, beta, T, *cts,
                            heads=BH, **kw))

    want, got = run(*_prep_operands())
    for i, (a, b) in enumerate(zip(got, want)):
        b = _callers(b, BH) if i < 3 else b
        assert a.shape == b.shape and bool(jnp.all(a == b)), i


def test_dqk_reads_do_in_the_callers_layout():
    """heads: dO in the caller's layout (after the Mosaic state forward, where V > 192 keeps
    this kernel Triton): bitwise the [B*HV, Tp, V] layout's results; a wrong layout is named."""
    rng = np.random.default_rng(4)
    N, Kp, V = 2, 32, 64
    r = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.bfloat16)
    states, dstates = r(BH, N * Kp, V), r(BH, N * Kp, V)
    delta, dd, do = r(BH, N * C, V), r(BH, N * C, V), r(BH, N * C, V)
    run = functools.partial(st.dqk, states, dstates, delta, dd, C=C, out_dtype=jnp.bfloat16,
                            precision="default", interpret=True, num_warps=4, num_stages=1,
                            block_v=32)
    want = jax.jit(run)(do)
    got = jax.jit(functools.partial(run, heads=BH))(_callers(do, BH))
    for a, b in zip(got, want):
        assert a.shape == b.shape and bool(jnp.all(a == b))
    with pytest.raises(ValueError, match="do: expected"):
        run(do, heads=BH)
