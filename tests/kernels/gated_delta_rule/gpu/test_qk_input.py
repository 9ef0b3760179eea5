"""q and k's input kernel (qk_input.py) against the same steps in XLA: forward and gradient, in
interpret mode on CPU and compiled on a GPU, at awkward shapes (T not a multiple of the rows a
program, K not a power of two)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.gated_delta_rule import reference
from kernels.gated_delta_rule.gpu.qk_input import qk_input


def _xla(x, Tp, Kp, scale, normalize, out_dtype):
    y = x.astype(jnp.float32)
    y = (reference.l2norm(y) if normalize else y) * scale
    return jnp.pad(y, ((0, 0), (0, Tp - x.shape[1]), (0, 0), (0, Kp - x.shape[-1]))).astype(
        out_dtype)


def _check(shape, Tp, Kp, normalize, in_dtype, out_dtype, interpret, scale=0.3):
    x = jax.random.normal(jax.random.key(0), shape, in_dtype)
    dy = jax.random.normal(jax.random.key(1), (shape[0], Tp, shape[2], Kp), out_dtype)
    y, vjp = jax.vjp(lambda x: qk_input(x, Tp, Kp, scale, normalize, out_dtype, interpret), x)
    y_ref, vjp_ref = jax.vjp(lambda x: _xla(x, Tp, Kp, scale, normalize, out_dtype), x)
    (dx,), (dx_ref,) = vjp(dy), vjp_ref(dy)
    assert y.shape == y_ref.shape and y.dtype == out_dtype and dx.dtype == in_dtype
    f = lambda a: np.asarray(a, np.float64)
    # bf16: one rounding of the same fp32 values (the gradient's fp32 order differs)
    tol = 0 if out_dtype == jnp.float32 else 1e-2
    np.testing.assert_allclose(f(y), f(y_ref), atol=1e-6 + tol * np.abs(f(y_ref)).max())
    tol = 1e-5 if in_dtype == jnp.float32 else 1e-2
    np.testing.assert_allclose(f(dx), f(dx_ref), atol=tol * np.abs(f(dx_ref)).max())
    assert not np.any(f(y)[:, shape[1]:]) and not np.any(f(y)[..., shape[-1]:])


@pytest.mark.parametrize("shape, Tp, Kp, normalize, in_dtype, out_dtype", [
    ((2, 100, 3, 48), 128, 64, True, jnp.bfloat16, jnp.bfloat16),   # the 370M heads, T padded
    ((1, 70, 2, 96), 96, 128, True, jnp.float32, jnp.float32),        # 32 rows a program
    ((1, 33, 1, 16), 48, 16, False, jnp.bfloat16, jnp.float32),       # scale and pad only
    ((1, 64, 2, 256), 64, 256, True, jnp.float32, jnp.bfloat16)])
def test_interpret_matches_xla(shape, Tp, Kp, normalize, in_dtype, out_dtype):
    _check(shape, Tp, Kp, normalize, in_dtype, out_dtype, interpret=True)


def test_rejects_a_padding_it_cannot_write():
    x = jnp.zeros((1, 100, 1, 48))
    with pytest.raises(ValueError, match="Tp a multiple of 16 >= T"):
        qk_input(x, 96, 64, 1.0, True, jnp.float32, True)
    with pytest.raises(ValueError, match="Kp a power of two >= K"):
        qk_input(x, 112, 96, 1.0, True, jnp.float32, True)


@pytest.mark.gpu
@pytest.mark.parametrize("in_dtype, out_dtype", [(jnp.bfloat16, jnp.bfloat16),
                                                 (jnp.float32, jnp.float32)])
def test_gpu_matches_xla(in_dtype, out_dtype):
    _check((2, 300, 3, 48), 320, 64, True, in_dtype, out_dtype, interpret=False)
