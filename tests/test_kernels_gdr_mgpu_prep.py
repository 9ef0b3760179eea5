"""The Mosaic GPU chunk prep forward (kernels/gated_delta_rule/pallas_mgpu_prep.py) on a CPU host:
in the Mosaic GPU interpreter against the Triton prep kernel in Pallas interpret mode (the same
bf16 roundings, so nearly bitwise), the interpreter's race detector, lowering for CUDA, bad
input, and the whole pallas_gpu path with prep="mosaic" (its forward, the Triton backward)
against float64; compiled on a GPU in a gpu-marked test."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import mosaic_gpu as plgpu

from kernels.gated_delta_rule import pallas_gpu_common as cm
from kernels.gated_delta_rule import pallas_gpu_prep as pp
from kernels.gated_delta_rule.pallas_gpu import chunk_gated_delta_rule_pallas_gpu
from kernels.gated_delta_rule.pallas_mgpu_prep import prep_fwd_mgpu
from tests.test_kernels_gdr import make_inputs
from tests.test_kernels_gdr_pallas_gpu import _check_against_float64

C, BH, TP = 64, 2, 128
NAMES = ("w", "u", "kd", "qd", "aqk", "T")


def _operands(Kp, Vp, decay=1.0):
    rng = np.random.default_rng(Kp + Vp)
    bf = jnp.bfloat16
    q, k = (jnp.asarray(rng.normal(size=(BH, TP, Kp)) / 8, bf) for _ in range(2))
    v = jnp.asarray(rng.normal(size=(BH, TP, Vp)), bf)
    g = jnp.asarray(-rng.uniform(0, decay, (BH, TP)), jnp.float32)
    beta = jnp.asarray(rng.uniform(0, 2, (BH, TP)), jnp.float32)
    return q, k, v, pp.decay_input(g, C, "xla"), beta


def _interpret(args, detect_races=False):
    ip = plgpu.InterpretGPUParams(detect_races=detect_races)
    return jax.jit(functools.partial(prep_fwd_mgpu, C=C, save_inverse=True, interpret=ip))(*args)


@pytest.mark.parametrize("Kp,Vp,decay", [(128, 128, 1.0), (64, 192, 20.0), (128, 64, 1.0)])
def test_interpret_matches_the_triton_prep(Kp, Vp, decay):
    """Against `pallas_gpu_prep.prep_fwd` (decays="xla", "default", saving T) in Pallas
    interpret mode: the same bf16 operands and fp32 sums, rounded in another order here and
    there (a few elements one bf16 ulp apart; bitwise at the other shapes when written).
    decay 20: g down to -20 a token."""
    args = _operands(Kp, Vp, decay)
    got = _interpret(args)
    kw = cm._prep_cfg(cm.kernel_config("default", True, Kp, Vp, decays_in_xla=True))
    want = pp.prep_fwd(*args, C=C, out_dtype=jnp.bfloat16, save_inverse=True, **kw)
    for name, a, b in zip(NAMES, got, want):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        assert a.shape == b.shape and np.all(np.isfinite(a)), name
        assert np.abs(a - b).max() <= 2 ** -7 * np.abs(b).max(), name
        assert np.mean(a == b) > 0.99, (name, np.mean(a == b))  # 0.996 for w at decay 20


def test_interpret_no_races():
    from jax._src.pallas.mosaic_gpu.interpret import interpret_pallas_call as ipc
    jax.block_until_ready(_interpret(_operands(128, 128), detect_races=True))
    assert not ipc.get_races().races_found


def _caller_layout(x):  # [BH, Tp, d] as one batch of BH heads: [1, Tp, BH * d]
    return jnp.moveaxis(x, 0, 1).reshape(1, x.shape[1], -1)


def test_caller_layout_reads_the_same_chunks():
    """heads: q, k, v in the caller's [B, Tp, heads * d] layout (TMA slices of each head's
    columns) give bitwise the outputs of the [BH, Tp, d] layout."""
    q, k, v, gs, beta = _operands(64, 192)
    want = _interpret((q, k, v, gs, beta))
    fn = functools.partial(prep_fwd_mgpu, C=C, save_inverse=True, heads=BH,
                           interpret=plgpu.InterpretGPUParams())
    got = jax.jit(fn)(*map(_caller_layout, (q, k, v)), gs, beta)
    for name, a, b in zip(NAMES, got, want):
        assert a.shape == b.shape and bool(jnp.all(a == b)), name


@pytest.mark.parametrize("Kp,Vp,heads", [(128, 128, None), (64, 192, None), (128, 128, BH)])
def test_lowers_for_cuda(Kp, Vp, heads):
    spec = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)
    q, k, v, gs, beta = _operands(Kp, Vp)
    if heads:
        q, k, v = map(_caller_layout, (q, k, v))
    fn = functools.partial(prep_fwd_mgpu, C=C, save_inverse=True, heads=heads)
    lowered = jax.jit(fn).trace(*map(spec, (q, k, v, gs, beta))).lower(
        lowering_platforms=("cuda",))
    assert "stablehlo.custom_call @mosaic_gpu" in lowered.as_text()


def test_rejects_what_it_does_not_take():
    q, k, v, gs, beta = _operands(128, 128)
    with pytest.raises(ValueError, match="Kp in"):
        prep_fwd_mgpu(q[..., :32], k[..., :32], v, gs, beta, C=C)
    with pytest.raises(ValueError, match="Vp a multiple of 64"):
        prep_fwd_mgpu(q, k, v[..., :96], gs, beta, C=C)
    with pytest.raises(ValueError, match=r"gs must be \[BH, 2, Tp\]"):
        prep_fwd_mgpu(q, k, v, gs[:, 0], beta, C=C)
    x = make_inputs(1, 1, 40, 1, 1, 64, 64)
    api = functools.partial(chunk_gated_delta_rule_pallas_gpu, *x[:5], prep="mosaic",
                            interpret=True)
    with pytest.raises(ValueError, match='precision="default"'):
        api(precision="highest")
    with pytest.raises(ValueError, match='precision="default"'):
        api(precision="default", exact_decays=True)
    with pytest.raises(ValueError, match="chunk_size 64"):
        api(precision="default", chunk_size=32)


@pytest.mark.parametrize("case", [
    (1, 100, 1, 2, 64, 64, True, "mild", 64, True, None),       # T padded, HV = 2H, l2norm
    (1, 70, 1, 1, 128, 128, False, "strong", 64, False, 0.3)])  # g down to -20 a token
def test_api_prep_mosaic_matches_float64(case):
    """The whole op with prep="mosaic" (Mosaic interpreter forward, Triton interpret backward
    through G and logF from XLA) against float64, forward and every gradient."""
    _check_against_float64(case, interpret=True, prep="mosaic", precision="default", tol=2e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("caller_layout", [False, True])
def test_gpu_api_prep_mosaic_matches_float64(caller_layout):
    """Compiled, at the 7B layer's head dims (K = 96 -> 128, V = 192), against float64; also
    with q, k, v read in the caller's layout."""
    errs = _check_against_float64((1, 300, 2, 4, 96, 192, True, "mild", 64, True, None),
                                  interpret=False, prep="mosaic", precision="default",
                                  tol=3e-2, caller_layout=caller_layout)
    print(f"prep=mosaic caller_layout={caller_layout} errors:", errs)
