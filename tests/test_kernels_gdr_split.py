"""The split state pass (`pallas_gpu_split.py`): against float64 oracles through the public
function and against the fused Triton state pass kernel for kernel. Its CUDA lowering is a case
of tests/test_kernels_gdr_pallas_gpu.py's lowering test."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.gated_delta_rule import pallas_gpu as pg
from kernels.gated_delta_rule import pallas_gpu_state as ps
from kernels.gated_delta_rule.pallas_gpu_split import state_pass_split
from tests.test_kernels_gdr import rel_err
from tests.test_kernels_gdr_pallas_gpu import CPU_CASES, GPU_CASES, _check_against_float64


@pytest.mark.parametrize("case", sorted(CPU_CASES))
def test_interpret_split_matches_float64(case):
    _check_against_float64(CPU_CASES[case], interpret=True, prep="pallas", state_pass="split")


def test_interpret_split_default_precision_is_bf16_accurate():
    _check_against_float64((1, 40, 1, 2, 96, 64, True, "mild", 32, True, None), interpret=True,
                           prep="pallas", precision="default", tol=2e-2, state_pass="split")


def _state_pass_operands(seed, BH=3, N=3, C=16, Kp=32, V=48, dtype=jnp.float32):
    ks = iter(jax.random.split(jax.random.key(seed), 12))
    rnd = lambda *s: (0.3 * jax.random.normal(next(ks), s)).astype(dtype)
    Tp = N * C
    row, col = jnp.arange(C)[:, None], jnp.arange(C)[None, :]
    aqk = jnp.tile(jnp.where(row >= col, 1.0, 0.0), (N, 1))[None] * rnd(BH, Tp, C)
    gc = jnp.broadcast_to(jax.random.uniform(next(ks), (BH, 1, N), minval=0.3, maxval=1.0),
                          (BH, Kp, N))
    return (rnd(BH, Tp, Kp), rnd(BH, Tp, V), rnd(BH, Tp, Kp), gc, rnd(BH, Tp, Kp),
            aqk.astype(dtype), jax.random.normal(next(ks), (BH, Kp, V)))


@pytest.mark.parametrize("split_fn", ["split", "splitbwd"])
@pytest.mark.parametrize("precision, block_v", [("highest", 16), ("default", 32)])
def test_split_equals_fused_state_pass(precision, block_v, split_fn):
    """Same operands through the fused state pass and a split one (split both ways, or the fused
    forward and the split backward): outputs and all seven cotangents. V=48 with
    block_v 16 runs three V tiles (key-side cotangents summed over them). In fp32 ("highest")
    interpret mode the two compute the same sums in the same order, so the bound is tight. At
    "default" they round differently, at bf16 level: the fused kernel rounds each V tile's
    key-side partial to bf16 before XLA adds them up, the split one adds the tiles in fp32 and
    rounds once; and the split one's dgc sums dS * S over a dS stored in bf16."""
    tol = 1e-6 if precision == "highest" else 1e-2
    dtype = jnp.float32 if precision == "highest" else jnp.bfloat16
    args = _state_pass_operands(0, dtype=dtype)
    cfg = pg.kernel_config(precision, True, args[0].shape[-1], args[1].shape[-1],
                           block_v=block_v)
    rng = np.random.default_rng(1)
    w_o = jnp.asarray(rng.normal(size=args[1].shape), jnp.float32)
    w_s = jnp.asarray(rng.normal(size=args[6].shape), jnp.float32)

    def run(fn):
        def loss(*a):
            o, sf = fn(*a, cfg)
            return jnp.sum(o.astype(jnp.float32) * w_o) + jnp.sum(sf * w_s), (o, sf)
        (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(7)),
                                                     has_aux=True))(*args)
        return out, grads

    splitbwd = lambda *a: ps.state_pass_splitbwd(*a, "")  # (..., cfg, mosaic=""): all Triton
    (o, sf), grads = run(state_pass_split if split_fn == "split" else splitbwd)
    (o_ref, sf_ref), grads_ref = run(ps.state_pass)
    errs = {"o": rel_err(o, o_ref), "sf": rel_err(sf, sf_ref)}
    errs.update({f"d{n}": rel_err(a, b) for n, a, b in
                 zip(("w", "u", "kd", "gc", "qd", "aqk", "s0"), grads, grads_ref)})
    for a, b in zip(grads, grads_ref):
        assert a.dtype == b.dtype and a.shape == b.shape
    assert max(errs.values()) < tol, errs


@pytest.mark.gpu
@pytest.mark.parametrize("case", ["T300-K96-V192-gqa-mild-init-l2", "T257-K128-V128-strong-init"])
def test_gpu_split_matches_float64(case):
    _check_against_float64(GPU_CASES[case], interpret=False, prep="pallas", state_pass="split")


def test_pallas_gpu_split_is_an_api_and_model_implementation_for_gpus_only():
    """`implementation="pallas_gpu_split"` routes to state_pass="split", is refused off a GPU
    backend, and is a valid model.gdn_implementation at both precisions."""
    from hybrid_jax.config import ModelConfig
    from kernels import chunk_gated_delta_rule
    from kernels.gated_delta_rule import api
    fn = api._pallas_fn("pallas_gpu_split")
    assert fn.keywords == {"state_pass": "split"} and fn.func is pg.chunk_gated_delta_rule_pallas_gpu
    args = [jnp.zeros((1, 64, 1, 64))] * 3 + [jnp.zeros((1, 64, 1))] * 2
    with pytest.raises(RuntimeError, match="compiles only for a gpu"):
        chunk_gated_delta_rule(*args, implementation="pallas_gpu_split")
    for precision in ("highest", "default"):
        ModelConfig(gdn_implementation="pallas_gpu_split", gdn_precision=precision)
