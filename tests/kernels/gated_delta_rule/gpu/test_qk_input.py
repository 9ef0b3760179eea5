"""q and k's input kernel (qk_input.py) against the same steps in XLA: forward and gradient, in
interpret mode on CPU and compiled on a GPU, at awkward shapes (T not a multiple of the rows a
program, K not a power of two); its lowering for CUDA; and the op running it only with
use_qk_l2norm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.gated_delta_rule import reference
from kernels.gated_delta_rule.gpu.qk_input import qk_input


def _xla(x, Tp, Kp, scale, out_dtype):
    y = reference.l2norm(x.astype(jnp.float32)) * scale
    return jnp.pad(y, ((0, 0), (0, Tp - x.shape[1]), (0, 0), (0, Kp - x.shape[-1]))).astype(
        out_dtype)


def _check(shape, Tp, Kp, in_dtype, out_dtype, interpret, scale=0.3):
    x = jax.random.normal(jax.random.key(0), shape, in_dtype)
    dy = jax.random.normal(jax.random.key(1), (shape[0], Tp, shape[2], Kp), out_dtype)
    y, vjp = jax.vjp(lambda x: qk_input(x, Tp, Kp, scale, out_dtype, interpret), x)
    y_ref, vjp_ref = jax.vjp(lambda x: _xla(x, Tp, Kp, scale, out_dtype), x)
    (dx,), (dx_ref,) = vjp(dy), vjp_ref(dy)
    assert y.shape == y_ref.shape and y.dtype == out_dtype and dx.dtype == in_dtype
    f = lambda a: np.asarray(a, np.float64)
    # bf16: one rounding of the same fp32 values (the gradient's fp32 order differs)
    tol = 0 if out_dtype == jnp.float32 else 1e-2
    np.testing.assert_allclose(f(y), f(y_ref), atol=1e-6 + tol * np.abs(f(y_ref)).max())
    tol = 1e-5 if in_dtype == jnp.float32 else 1e-2
    np.testing.assert_allclose(f(dx), f(dx_ref), atol=tol * np.abs(f(dx_ref)).max())
    assert not np.any(f(y)[:, shape[1]:]) and not np.any(f(y)[..., shape[-1]:])


@pytest.mark.parametrize("shape, Tp, Kp, in_dtype, out_dtype", [
    ((2, 100, 3, 48), 128, 64, jnp.bfloat16, jnp.bfloat16),   # the 370M heads, T padded
    ((1, 70, 2, 96), 96, 128, jnp.float32, jnp.float32),        # 32 rows a program
    ((1, 33, 1, 16), 48, 16, jnp.bfloat16, jnp.float32),        # 16 rows a program
    ((1, 64, 2, 256), 64, 256, jnp.float32, jnp.bfloat16)])
def test_interpret_matches_xla(shape, Tp, Kp, in_dtype, out_dtype):
    _check(shape, Tp, Kp, in_dtype, out_dtype, interpret=True)


def test_rejects_a_padding_it_cannot_write():
    x = jnp.zeros((1, 100, 1, 48))
    with pytest.raises(ValueError, match="Tp a multiple of 16 >= T"):
        qk_input(x, 96, 64, 1.0, jnp.float32, True)
    with pytest.raises(ValueError, match="Kp a power of two >= K"):
        qk_input(x, 112, 96, 1.0, jnp.float32, True)


@pytest.mark.parametrize("l2norm", [True, False])
def test_the_op_runs_it_only_with_l2norm_and_it_lowers_for_cuda(triton_lowers_for_h100, l2norm):
    """Forward and backward of the op lowered for CUDA on this host (jax 0.11.2 internals, as
    in test_plan.py): q and k's kernels each way with use_qk_l2norm; without it none (XLA's
    pad and cast, which vanish where there is nothing to pad)."""
    from kernels.gated_delta_rule.gpu.chunk import chunk_gated_delta_rule_pallas_gpu
    args = [jax.ShapeDtypeStruct(s, jnp.bfloat16) for s in
            ((1, 100, 2, 48), (1, 100, 2, 48), (1, 100, 2, 96), (1, 100, 2), (1, 100, 2))]

    def loss(*a):
        o, _ = chunk_gated_delta_rule_pallas_gpu(*a, precision="default", use_qk_l2norm=l2norm)
        return jnp.sum(o.astype(jnp.float32))

    text = jax.jit(jax.grad(loss, argnums=range(5))).trace(*args).lower(
        lowering_platforms=("cuda",)).as_text()
    assert ("gdr_qk_input" in text) == l2norm


@pytest.mark.gpu
@pytest.mark.parametrize("in_dtype, out_dtype", [(jnp.bfloat16, jnp.bfloat16),
                                                 (jnp.float32, jnp.float32)])
def test_gpu_matches_xla(in_dtype, out_dtype):
    _check((2, 300, 3, 48), 320, 64, in_dtype, out_dtype, interpret=False)
