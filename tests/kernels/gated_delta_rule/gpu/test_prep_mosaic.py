"""The Mosaic GPU chunk prep forward (kernels/gated_delta_rule/gpu/prep_mosaic.py) on a CPU host:
in the Mosaic GPU interpreter against the Triton prep kernel in Pallas interpret mode (the same
bf16 roundings, so nearly bitwise), the interpreter's race detector, the caller's layout,
lowering for CUDA and bad input. The whole op with it is in test_pallas_gpu.py beside this file."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import mosaic_gpu as plgpu

from kernels.gated_delta_rule.gpu import prep_triton as pt
from kernels.gated_delta_rule.gpu.prep_mosaic import prep_fwd

from tests.helpers.gdr_gpu_prep import prep_operands, triton_prep_kw
from tests.helpers.gdr_gpu_state import callers_layout

C, BH, TP = 64, 2, 128
NAMES = ("w", "u", "kd", "qd", "aqk", "T")


def _operands(Kp, Vp, decay=1.0):
    return prep_operands(Kp, Vp, decay, C=C, BH=BH, TP=TP)[0]


def _interpret(args, detect_races=False):
    ip = plgpu.InterpretGPUParams(detect_races=detect_races)
    return jax.jit(functools.partial(prep_fwd, C=C, save_inverse=True, interpret=ip))(*args)


@pytest.mark.parametrize("Kp,Vp,decay", [(128, 128, 1.0), (64, 192, 20.0), (128, 64, 1.0)])
def test_interpret_matches_the_triton_prep(Kp, Vp, decay):
    """Against `prep_triton.prep_fwd` (decays="xla", "default", saving T) in Pallas
    interpret mode: the same bf16 operands and fp32 sums, rounded in another order here and
    there (a few elements one bf16 ulp apart; bitwise at the other shapes when written).
    decay 20: g down to -20 a token."""
    args = _operands(Kp, Vp, decay)
    got = _interpret(args)
    kw = triton_prep_kw("default", "xla", C=C, block_d=64)
    want = jax.jit(functools.partial(pt.prep_fwd, out_dtype=jnp.bfloat16, save_inverse=True,
                                     **kw))(*args)
    for name, a, b in zip(NAMES, got, want):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        assert a.shape == b.shape and np.all(np.isfinite(a)), name
        assert np.abs(a - b).max() <= 2 ** -7 * np.abs(b).max(), name
        assert np.mean(a == b) > 0.99, (name, np.mean(a == b))  # 0.996 for w at decay 20


def test_interpret_scale_is_q_scaled_outside():
    """scale = 1/2 (a power of two: every product scales exactly): bitwise the outputs for
    q / 2 given unscaled; only aqk and qd depend on q."""
    q, *rest = args = _operands(128, 64)
    got = jax.jit(functools.partial(prep_fwd, C=C, save_inverse=True, scale=0.5,
                                    interpret=plgpu.InterpretGPUParams()))(*args)
    want = _interpret((q * 0.5, *rest))
    for name, a, b in zip(NAMES, got, want):
        assert bool(jnp.all(a == b)), name


def test_interpret_no_races():
    from jax._src.pallas.mosaic_gpu.interpret import interpret_pallas_call as ipc
    jax.block_until_ready(_interpret(_operands(128, 128), detect_races=True))
    assert not ipc.get_races().races_found


def testcallers_layout_reads_the_same_chunks():
    """heads: q, k, v in the caller's [B, Tp, heads * d] layout (TMA slices of each head's
    columns) give bitwise the outputs of the [BH, Tp, d] layout."""
    q, k, v, gs, beta = _operands(64, 192)
    want = _interpret((q, k, v, gs, beta))
    fn = functools.partial(prep_fwd, C=C, save_inverse=True, heads=BH,
                           interpret=plgpu.InterpretGPUParams())
    got = jax.jit(fn)(*map(callers_layout, (q, k, v)), gs, beta)
    for name, a, b in zip(NAMES, got, want):
        assert a.shape == b.shape and bool(jnp.all(a == b)), name


@pytest.mark.parametrize("Kp,Vp,heads", [(128, 128, None), (64, 192, None), (128, 128, BH)])
def test_lowers_for_cuda(Kp, Vp, heads):
    spec = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)
    q, k, v, gs, beta = _operands(Kp, Vp)
    if heads:
        q, k, v = map(callers_layout, (q, k, v))
    fn = functools.partial(prep_fwd, C=C, save_inverse=True, heads=heads)
    lowered = jax.jit(fn).trace(*map(spec, (q, k, v, gs, beta))).lower(
        lowering_platforms=("cuda",))
    assert "stablehlo.custom_call @mosaic_gpu" in lowered.as_text()


def test_rejects_what_it_does_not_take():
    q, k, v, gs, beta = _operands(128, 128)
    with pytest.raises(ValueError, match="Kp in"):
        prep_fwd(q[..., :32], k[..., :32], v, gs, beta, C=C)
    with pytest.raises(ValueError, match="Vp a multiple of 64"):
        prep_fwd(q, k, v[..., :96], gs, beta, C=C)
    with pytest.raises(ValueError, match=r"gs must be \[BH, 2, Tp\]"):
        prep_fwd(q, k, v, gs[:, 0], beta, C=C)
