"""The Mosaic GPU per-chunk gradient kernel (kernels/gated_delta_rule/gpu/grad_mosaic.py) on a
CPU host: in the Mosaic GPU interpreter against its two halves written out (plain-jnp products
for the state pass's chunk operands, then the Mosaic prep backward), the interpreter's race
detector, the caller's layout, lowering for CUDA (its shared memory must fit) and bad input;
compiled on a GPU against the Triton kernels. The whole op with it is in test_pallas_gpu.py."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import mosaic_gpu as plgpu

from kernels.gated_delta_rule.gpu.grad_mosaic import chunk_grads, takes_shape
from kernels.gated_delta_rule.gpu.prep_mosaic import prep_fwd
from kernels.gated_delta_rule.gpu.prep_mosaic_bwd import prep_bwd

from tests.helpers.gdr_gpu_prep import prep_operands
from tests.helpers.gdr_gpu_state import callers_layout
from tests.helpers.interpret_child import in_child

C, BH, N = 64, 2, 2
TP = N * C
NAMES = ("dq", "dk", "dv", "dg", "dbeta", "dgc")


def _operands(Kp, V, decay=1.0, interpret=True):
    """q, k, v, gs, beta; the forward's T (the Mosaic prep forward, compiled unless interpret);
    states, dstates [BH, N*Kp, V] and delta, dd, dO [BH, TP, V] as small integers (bf16), so
    that every product over V is exact in fp32, in any order of summation."""
    (q, k, v, gs, beta), rng = prep_operands(Kp, V, decay, C=C, BH=BH, TP=TP)
    ip = plgpu.InterpretGPUParams() if interpret else None
    T = jax.jit(functools.partial(prep_fwd, C=C, save_inverse=True, interpret=ip))(
        q, k, v, gs, beta)[5]
    ints = lambda *s: jnp.asarray(rng.integers(-3, 4, s), jnp.bfloat16)  # noqa: E731
    return (q, k, v, gs, beta, T, ints(BH, N * Kp, V), ints(BH, N * Kp, V), ints(BH, TP, V),
            ints(BH, TP, V), ints(BH, TP, V))


def _chunk_operand_grads(states, dstates, delta, dd, do):
    """dw, dkd, dqd [BH, TP, Kp], daqk [BH, TP, C] (bf16) and dgc [BH, N, Kp] in plain jnp:
    exact fp32 sums (integer operands), rounded to bf16 as the kernel rounds them."""
    f32, bf16 = jnp.float32, jnp.bfloat16
    Kp = states.shape[1] // N
    S, dS = (x.astype(f32).reshape(BH, N, Kp, -1) for x in (states, dstates))
    dl, ddn, don = (x.astype(f32).reshape(BH, N, C, -1) for x in (delta, dd, do))
    mm = lambda a, b: jnp.einsum("bncv,bnkv->bnck", a, b,  # noqa: E731
                                 precision=jax.lax.Precision.HIGHEST)
    flat = lambda x: x.reshape(BH, TP, -1).astype(bf16)  # noqa: E731
    return (flat(-mm(ddn, S)), flat(mm(dl, dS)), flat(mm(don, S)), flat(mm(don, dl)),
            jnp.sum(dS * S, axis=-1))


def _interpret(args, detect_races=False, **kw):
    ip = plgpu.InterpretGPUParams(detect_races=detect_races)
    return jax.jit(functools.partial(chunk_grads, C=C, interpret=ip, **kw))(*args)


@pytest.mark.parametrize("Kp,V,decay,scale", [(128, 128, 1.0, 1.0), (64, 192, 20.0, 0.37)])
@in_child
def test_interpret_is_its_two_halves(Kp, V, decay, scale):
    """Bitwise `prep_mosaic_bwd.prep_bwd` fed with the chunk operands' cotangents, and dgc,
    with phase 2's inputs loaded early (V = 128) and late (V = 192). decay 20: g down to -20 a
    token; scale: q's, applied inside."""
    q, k, v, gs, beta, T, states, dstates, delta, dd, do = args = _operands(Kp, V, decay)
    got = _interpret(args, scale=scale)
    dw, dkd, dqd, daqk, dgc = _chunk_operand_grads(states, dstates, delta, dd, do)
    ip = plgpu.InterpretGPUParams()
    want = jax.jit(functools.partial(prep_bwd, C=C, scale=scale, interpret=ip))(
        q, k, v, gs, beta, T, dw, dd, dkd, dqd, daqk)
    for name, a, b in zip(NAMES, got, (*want, dgc)):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert bool(jnp.all(jnp.isfinite(a))) and float(jnp.max(jnp.abs(b))) > 0, name
        assert bool(jnp.all(a == b)), name


@pytest.mark.parametrize("Kp,V", [(128, 128), (64, 192)])
@in_child
def test_interpret_no_races_and_the_callers_layout(Kp, V):
    """The race detector, with phase 2's inputs loaded early (V = 128) and into phase 1's
    shared memory once it is done (V = 192); q, k, v, dO, dq, dk, dv in the caller's layout
    [BH / heads, Tp, heads * d]: bitwise the same outputs."""
    from jax._src.pallas.mosaic_gpu.interpret import interpret_pallas_call as ipc
    args = _operands(Kp, V)
    want = _interpret(args, detect_races=True)
    assert not ipc.get_races().races_found
    moved = (0, 1, 2, 10)  # q, k, v, dO
    got = _interpret(tuple(callers_layout(x) if j in moved else x for j, x in enumerate(args)),
                     heads=BH)
    for name, a, b in zip(NAMES, got, want):
        b = callers_layout(b) if name in ("dq", "dk", "dv") else b
        assert a.shape == b.shape and bool(jnp.all(a == b)), name


def _specs(Kp, V, heads=None):
    bf, f32 = jnp.bfloat16, jnp.float32
    S = jax.ShapeDtypeStruct
    lay = (lambda d: S((BH, TP, d), bf)) if heads is None else (
        lambda d: S((BH // heads, TP, heads * d), bf))
    return (lay(Kp), lay(Kp), lay(V), S((BH, 2, TP), f32), S((BH, TP), f32), S((BH, TP, C), bf),
            S((BH, N * Kp, V), bf), S((BH, N * Kp, V), bf), S((BH, TP, V), bf),
            S((BH, TP, V), bf), lay(V))


def _zeros(V):
    return [jnp.zeros(s.shape, s.dtype) for s in _specs(128, V)]


@pytest.mark.parametrize("Kp,V,heads", [(128, 128, None), (128, 192, BH), (64, 64, None)])
def test_lowers_for_cuda(Kp, V, heads):
    """Lowered to its custom call on this host: layouts, and shared memory within Hopper's
    232,448 bytes a block (the lowering raises otherwise; 227,384 at Kp = 128, V = 128 with
    the early loads and at V = 192 without)."""
    fn = functools.partial(chunk_grads, C=C, heads=heads)
    text = jax.jit(fn).trace(*_specs(Kp, V, heads)).lower(lowering_platforms=("cuda",)).as_text()
    assert "stablehlo.custom_call @mosaic_gpu" in text


@pytest.mark.gpu
@pytest.mark.parametrize("Kp,V", [(128, 128), (128, 192), (64, 64)])
def test_gpu_matches_the_triton_kernels(Kp, V):
    """Compiled, in the caller's layout as the op runs it, against the compiled Triton dqk and
    prep backward as the plan launches them: dqk's outputs are exact (integer operands), the
    prep backward's fp32 sums run in another order: within 1e-4 of the largest element."""
    from kernels.gated_delta_rule.gpu import chunk, config, prep_triton, state_triton
    args = list(_operands(Kp, V, interpret=False))
    for j in (0, 1, 2, 10):
        args[j] = callers_layout(args[j])
    q, k, v, gs, beta, T, states, dstates, delta, dd, do = args
    got = jax.jit(functools.partial(chunk_grads, C=C, heads=BH))(*args)
    p = config.plan("default", False, config.KernelConfig(), C=C, Kp=Kp, V=V, B=1, HV=BH,
                    bf16_qkv=False)  # the Triton dqk and prep backward, decays "xla"
    assert (p.dqk, p.prep_bwd, p.decays) == ("triton", "triton", "xla")
    dw, dkd, dqd, daqk, dgc = jax.jit(functools.partial(
        state_triton.dqk, C=C, out_dtype=jnp.bfloat16, heads=BH,
        **chunk._triton_state(p, backward=True)))(states, dstates, delta, dd, do)
    want = jax.jit(functools.partial(prep_triton.prep_bwd, heads=BH, **chunk._triton_prep(p)))(
        q, k, v, gs, beta, T, dw, dd, dkd, dqd, daqk)
    for name, a, b in zip(NAMES, got, (*want, dgc)):
        assert a.shape == b.shape, name
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        assert np.all(np.isfinite(a)), name
        assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max(), (name, np.abs(a - b).max())


def test_rejects_what_it_does_not_take():
    zeros = _zeros(V=128)
    with pytest.raises(ValueError, match=r"V a multiple of 64 up to 192"):
        chunk_grads(*_zeros(V=256), C=C)
    with pytest.raises(ValueError, match="take bf16 q, k, v"):
        chunk_grads(zeros[0].astype(jnp.float32), *zeros[1:], C=C)
    with pytest.raises(ValueError, match=r"dstates: expected shape \(2, 256, 128\)"):
        chunk_grads(*zeros[:7], zeros[7][:, :128], *zeros[8:], C=C)
    with pytest.raises(ValueError, match="caller's layout"):
        chunk_grads(*zeros, C=C, heads=3)
    assert takes_shape(64, 128, 192) and takes_shape(64, 64, 64)
    assert not takes_shape(64, 128, 256) and not takes_shape(64, 128, 96)
    assert not takes_shape(32, 128, 128) and not takes_shape(64, 256, 128)



@in_child
def test_interpret_whole_v96_is_the_padded_kernel():
    """The ladder's heads (Kp 64, V 96 in the prep's 128): the states, dstates, delta, dd and
    dO 96 wide, v read and dv written as the first 96 of 128 columns, every bf16 operand on the
    64-byte swizzle. Against the kernel at V = 128 with those operands zero past 96: the same
    dq, dk, dg and dv's first 96 columns; dbeta and dgc, fp32 row sums over V whose order
    differs at 96 columns, to fp32 rounding."""
    args = _operands(64, 128)
    zero_past_96 = lambda x: x.at[..., 96:].set(0)  # noqa: E731
    padded = args[:2] + (zero_past_96(args[2]),) + args[3:6] + tuple(
        zero_past_96(x) for x in args[6:])
    want = _interpret(padded)
    got = _interpret(padded[:6] + tuple(x[..., :96] for x in padded[6:]))
    for name, a, b in zip(NAMES, got, want):
        a, b = (a[..., :96], b[..., :96]) if name == "dv" else (a, b)
        assert a.shape == b.shape, name
        if name in ("dbeta", "dgc"):
            err = float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
            assert err < 1e-6, (name, err)
        else:
            assert bool(jnp.all(a == b)), name


@pytest.mark.parametrize("heads", [None, BH])
def test_whole_v96_lowers_for_cuda(heads):
    S = jax.ShapeDtypeStruct
    specs = list(_specs(64, 128, heads))
    for j in (6, 7):  # states, dstates
        specs[j] = S((BH, N * 64, 96), jnp.bfloat16)
    for j in (8, 9):  # delta, dd
        specs[j] = S((BH, TP, 96), jnp.bfloat16)
    specs[10] = _specs(64, 96, heads)[10]  # dO, as o: 96 wide
    fn = functools.partial(chunk_grads, C=C, heads=heads)
    text = jax.jit(fn).trace(*specs).lower(lowering_platforms=("cuda",)).as_text()
    assert "stablehlo.custom_call @mosaic_gpu" in text
