"""The Mosaic GPU chunk prep backward (kernels/gated_delta_rule/gpu/prep_mosaic_bwd.py) on a CPU
host: in the Mosaic GPU interpreter against the three Triton prep backward kernels in Pallas
interpret mode (the same bf16 operands, fp32 sums in another order), the interpreter's race
detector, the caller's layout, lowering for CUDA and bad input. The whole op with it is in
test_pallas_gpu.py beside this file."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import mosaic_gpu as plgpu

from kernels.gated_delta_rule.gpu import prep_triton as pt
from kernels.gated_delta_rule.gpu.prep_mosaic import prep_fwd
from kernels.gated_delta_rule.gpu.prep_mosaic_bwd import prep_bwd

from tests.helpers.gdr_gpu_prep import prep_operands, triton_prep_kw
from tests.helpers.gdr_gpu_state import callers_layout
from tests.helpers.interpret_child import in_child

C, BH, TP = 64, 2, 128
NAMES = ("dq", "dk", "dv", "dg", "dbeta")


def _operands(Kp, Vp, decay=1.0, interpret=True):
    """q, k, v, gs, beta, the forward's T (from the Mosaic prep forward, compiled unless
    interpret) and random cotangents of w, u, kd, qd, aqk."""
    (q, k, v, gs, beta), rng = prep_operands(Kp, Vp, decay, C=C, BH=BH, TP=TP)
    bf = jnp.bfloat16
    ip = plgpu.InterpretGPUParams() if interpret else None
    T = jax.jit(functools.partial(prep_fwd, C=C, save_inverse=True, interpret=ip))(
        q, k, v, gs, beta)[5]
    cot = lambda d: jnp.asarray(rng.normal(size=(BH, TP, d)), bf)  # noqa: E731
    return q, k, v, gs, beta, T, cot(Kp), cot(Vp), cot(Kp), cot(Kp), cot(C)


def _interpret(args, detect_races=False, heads=None):
    ip = plgpu.InterpretGPUParams(detect_races=detect_races)
    return jax.jit(functools.partial(prep_bwd, C=C, heads=heads, interpret=ip))(*args)


@pytest.mark.parametrize("Kp,Vp,decay", [(128, 128, 1.0), (64, 192, 20.0)])
@in_child
def test_interpret_matches_the_triton_prep_backward(Kp, Vp, decay):
    """Against `prep_triton.prep_bwd` (decays="xla", "default", bf16 cotangents) in Pallas
    interpret mode. fp32 sums run in another order, so now and then a value near a bf16
    rounding boundary rounds the other way: in the bf16 outputs dq, dk, dv (99% stay bitwise)
    and in the bf16 wgmma operands dT, T^T dT, d(k k^T) and dQK, whose flips reach dg and dbeta
    (fp32): within 1e-4 of the largest element (2.2e-5 for dg at Kp = Vp = 128). decay 20: g
    down to -20 a token."""
    args = _operands(Kp, Vp, decay)
    got = _interpret(args)
    kw = triton_prep_kw("default", "xla", C=C, block_d=64)
    want = jax.jit(functools.partial(pt.prep_bwd, **kw))(*args)
    for name, a, b in zip(NAMES, got, want):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        bf16 = a.dtype == jnp.bfloat16
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        assert np.all(np.isfinite(a)) and np.abs(b).max() > 0, name
        if bf16:
            assert np.abs(a - b).max() <= 2 ** -7 * np.abs(b).max(), name
            assert np.mean(a == b) > 0.99, (name, np.mean(a == b))
        else:
            assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max(), name


@in_child
def test_interpret_scale_is_q_scaled_outside():
    """scale = 1/2 (a power of two, so every product scales exactly): bitwise the outputs for
    q / 2 given unscaled, dq then the cotangent of the unscaled q (half that of q / 2)."""
    q, *rest = args = _operands(64, 64)
    ip = plgpu.InterpretGPUParams()
    got = jax.jit(functools.partial(prep_bwd, C=C, scale=0.5, interpret=ip))(*args)
    want = _interpret((q * 0.5, *rest))
    for name, a, b in zip(NAMES, got, want):
        b = b * 0.5 if name == "dq" else b
        assert a.dtype == b.dtype and bool(jnp.all(a == b)), name


@in_child
def test_interpret_no_races():
    from jax._src.pallas.mosaic_gpu.interpret import interpret_pallas_call as ipc
    jax.block_until_ready(_interpret(_operands(128, 128), detect_races=True))
    assert not ipc.get_races().races_found


@in_child
def testcallers_layout_reads_and_writes_the_same_chunks():
    """heads: q, k, v and dq, dk, dv in the caller's [B, Tp, heads * d] layout give bitwise the
    results of the [BH, Tp, d] layout."""
    args = _operands(64, 192)
    want = _interpret(args)
    got = _interpret((*map(callers_layout, args[:3]), *args[3:]), heads=BH)
    for name, a, b in zip(NAMES, got, want):
        if name in ("dq", "dk", "dv"):
            b = callers_layout(b)
        assert a.shape == b.shape and bool(jnp.all(a == b)), name


@pytest.mark.parametrize("Kp,Vp,heads", [(128, 128, None), (64, 192, None), (128, 256, BH)])
def test_lowers_for_cuda(Kp, Vp, heads):
    """Lowered to its custom call on this host (the Mosaic GPU lowering: layouts, shared memory
    of 177,160 bytes at Kp = Vp = 128 and 209,928 at Kp = 128, Vp = 256, under Hopper's
    232,448)."""
    bf, f32 = jnp.bfloat16, jnp.float32
    S = jax.ShapeDtypeStruct
    if heads:
        qk, v = S((BH // heads, TP, heads * Kp), bf), S((BH // heads, TP, heads * Vp), bf)
    else:
        qk, v = S((BH, TP, Kp), bf), S((BH, TP, Vp), bf)
    args = (qk, qk, v, S((BH, 2, TP), f32), S((BH, TP), f32), S((BH, TP, C), bf),
            S((BH, TP, Kp), bf), S((BH, TP, Vp), bf), S((BH, TP, Kp), bf), S((BH, TP, Kp), bf),
            S((BH, TP, C), bf))
    fn = functools.partial(prep_bwd, C=C, heads=heads)
    lowered = jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",))
    assert "stablehlo.custom_call @mosaic_gpu" in lowered.as_text()


@pytest.mark.gpu
@pytest.mark.parametrize("Kp,Vp", [(128, 128), (128, 192), (64, 128)])
def test_gpu_matches_the_triton_prep_backward(Kp, Vp):
    """Compiled, against the compiled Triton kernels as the plan launches them, on the same
    operands (their dots round the same bf16 operands; fp32 sums in another order), in the
    caller's layout as the op runs it: within 1e-4 of the largest element."""
    from kernels.gated_delta_rule.gpu import chunk, config
    args = _operands(Kp, Vp, interpret=False)
    args = (*map(callers_layout, args[:3]), *args[3:])
    got = jax.jit(functools.partial(prep_bwd, C=C, heads=BH))(*args)
    p = config.plan("default", False, config.KernelConfig(), C=C, Kp=Kp, V=Vp, B=1, HV=BH,
                    bf16_qkv=False)  # the Triton prep backward, decays "xla"
    assert (p.prep_bwd, p.decays) == ("triton", "xla")
    want = jax.jit(functools.partial(pt.prep_bwd, heads=BH, **chunk._triton_prep(p)))(*args)
    for name, a, b in zip(NAMES, got, want):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        assert np.all(np.isfinite(a)), name
        assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max(), (name, np.abs(a - b).max())


def test_rejects_what_it_does_not_take():
    q, k, v, gs, beta, T, dw, du, dkd, dqd, daqk = (jnp.zeros(x.shape, x.dtype) for x in (
        jax.ShapeDtypeStruct((BH, TP, 128), jnp.bfloat16),) * 3 + (
        jax.ShapeDtypeStruct((BH, 2, TP), jnp.float32), jax.ShapeDtypeStruct((BH, TP), jnp.float32),
        jax.ShapeDtypeStruct((BH, TP, C), jnp.bfloat16)) + (
        jax.ShapeDtypeStruct((BH, TP, 128), jnp.bfloat16),) * 4 + (
        jax.ShapeDtypeStruct((BH, TP, C), jnp.bfloat16),))
    rest = (T, dw, du, dkd, dqd, daqk)
    with pytest.raises(ValueError, match="Kp in"):
        prep_bwd(q[..., :32], k[..., :32], v, gs, beta, *rest, C=C)
    with pytest.raises(ValueError, match="takes bf16 q, k, v"):
        prep_bwd(q.astype(jnp.float32), k, v, gs, beta, *rest, C=C)
    with pytest.raises(ValueError, match=r"du: expected shape \(2, 128, 128\)"):
        prep_bwd(q, k, v, gs, beta, T, dw, du[..., :64], dkd, dqd, daqk, C=C)
