"""The Mosaic GPU parallel kernel of the split state backward (kernels/gated_delta_rule/
pallas_mgpu_dqk.py) on a CPU host: in the Mosaic GPU interpreter against the Triton
`_dqk_kernel` in Pallas interpret mode (the same bf16 operands and fp32 sums, in another
order), the interpreter's race detector, lowering for CUDA, bad input, and the whole pallas_gpu
path with state_pass="mosaic_dqk" against the chunked reference; compiled on a GPU in a
gpu-marked test."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import mosaic_gpu as plgpu

from kernels.gated_delta_rule import pallas_gpu_split as ps
from kernels.gated_delta_rule.pallas_gpu_common import _dot_fn
from kernels.gated_delta_rule.pallas_mgpu_dqk import split_dqk_mgpu
from tests.test_kernels_gdr_mgpu import _api_errors

BH, N, C = 2, 2, 64
NAMES = ("dw", "dkd", "dqd", "daqk", "dgc")


def _operands(Kp, V):
    """states, dstates [BH, N*Kp, V]; delta, dd, do [BH, Tp, V]; bf16."""
    rng = np.random.default_rng(Kp + V)
    r = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.bfloat16)
    return r(BH, N * Kp, V), r(BH, N * Kp, V), r(BH, N * C, V), r(BH, N * C, V), r(BH, N * C, V)


def _triton(states, dstates, delta, dd, do):
    """`pallas_gpu_split._dqk_kernel` in Pallas interpret mode, launched as split_bwd does."""
    Kp, V = states.shape[1] // N, states.shape[2]
    c = ps._chunk_specs_all_v(C, Kp, V)
    sds = lambda *shape, dt=jnp.bfloat16: jax.ShapeDtypeStruct(shape, dt)
    return ps._launch(
        functools.partial(ps._dqk_kernel, BV=64, NV=V // 64, dot=_dot_fn("default", True)),
        "gdr_split_dqk", (BH, N), [c["state"], c["state"], c["v"], c["v"], c["v"]],
        [c["k"], c["k"], c["k"], c["c"], c["gc"]],
        [sds(BH, N * C, Kp)] * 3 + [sds(BH, N * C, C), sds(BH, N, Kp, dt=jnp.float32)],
        True, 4, 1)(states, dstates, delta, dd, do)


def _interpret(args, detect_races=False, **kw):
    ip = plgpu.InterpretGPUParams(detect_races=detect_races)
    fn = functools.partial(split_dqk_mgpu, C=C, out_dtype=jnp.bfloat16, interpret=ip, **kw)
    return jax.jit(fn)(*args)


@pytest.mark.parametrize("Kp,V", [(128, 192), (64, 64)])
def test_interpret_matches_the_triton_kernel(Kp, V):
    """Sums over V in one wgmma instead of V tiles of 64: a few bf16 outputs one ulp apart
    (0.02% of dw at Kp = 128, V = 192 when written); dgc's fp32 sums agree to 1e-6."""
    args = _operands(Kp, V)
    for name, a, b in zip(NAMES, _interpret(args), _triton(*args)):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        assert a.shape == b.shape and np.all(np.isfinite(a)), name
        if name == "dgc":
            assert np.abs(a - b).max() <= 1e-6 * np.abs(b).max(), name
        else:
            assert np.abs(a - b).max() <= 2 ** -7 * np.abs(b).max(), name
            assert np.mean(a == b) > 0.99, (name, np.mean(a == b))


def test_interpret_no_races_and_the_callers_layout():
    from jax._src.pallas.mosaic_gpu.interpret import interpret_pallas_call as ipc
    args = _operands(128, 128)
    want = _interpret(args, detect_races=True)
    assert not ipc.get_races().races_found
    do_callers = jnp.moveaxis(args[4], 0, 1).reshape(1, N * C, -1)  # [1, Tp, BH * V]
    got = _interpret((*args[:4], do_callers), heads=BH)
    for name, a, b in zip(NAMES, got, want):
        assert bool(jnp.all(a == b)), name


@pytest.mark.parametrize("Kp,V,heads", [(128, 192, None), (64, 64, None), (128, 128, BH)])
def test_lowers_for_cuda(Kp, V, heads):
    spec = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)
    args = list(_operands(Kp, V))
    if heads:
        args[4] = jnp.moveaxis(args[4], 0, 1).reshape(1, N * C, -1)
    fn = functools.partial(split_dqk_mgpu, C=C, out_dtype=jnp.bfloat16, heads=heads)
    text = jax.jit(fn).trace(*map(spec, args)).lower(lowering_platforms=("cuda",)).as_text()
    assert "stablehlo.custom_call @mosaic_gpu" in text


def test_rejects_what_it_does_not_take():
    states, dstates, delta, dd, do = _operands(64, 64)
    call = functools.partial(split_dqk_mgpu, C=C, out_dtype=jnp.bfloat16)
    with pytest.raises(ValueError, match="V a multiple of 64 up to 192"):
        wide = lambda x: jnp.concatenate([x] * 4, axis=-1)  # V = 256
        call(*map(wide, (states, dstates, delta, dd, do)))
    with pytest.raises(ValueError, match="writes bf16"):
        split_dqk_mgpu(states, dstates, delta, dd, do, C=C, out_dtype=jnp.float32)
    with pytest.raises(ValueError, match="dd: expected shape"):
        call(states, dstates, delta, dd[:, :C], do)
    with pytest.raises(ValueError, match="caller's layout"):
        call(states, dstates, delta, dd, do, heads=3)


def test_api_state_pass_mosaic_dqk_matches_chunked_reference():
    """The whole pallas_gpu path with every state-pass kernel in Mosaic GPU (interpreter), the
    Triton prep (interpret), and the caller's layout for o and dO; four chunks, as the
    mosaic_dh test (which measured 4.4e-3 at most)."""
    errs = _api_errors((1, 256, 1, 2, 64, 64), interpret=True, state_pass="mosaic_dqk",
                       caller_layout=True)
    assert max(errs.values()) < 1e-2, errs


@pytest.mark.gpu
@pytest.mark.parametrize("caller_layout", [False, True])
def test_gpu_api_state_pass_mosaic_dqk_matches_chunked_reference(caller_layout):
    errs = _api_errors((2, 300, 2, 4, 96, 192), interpret=False, state_pass="mosaic_dqk",
                       caller_layout=caller_layout)
    assert max(errs.values()) < 3e-2, errs
