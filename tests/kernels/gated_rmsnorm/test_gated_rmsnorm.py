"""The gated RMSNorm: the Pallas forward and backward against the reference and JAX's derivative
of it in fp32, in interpret mode on CPU and compiled on a GPU, at awkward shapes (rows not a
multiple of a program's, V not a power of two); dispatch and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.gated_rmsnorm import gated_rmsnorm, resolve_norm_implementation
from kernels.gated_rmsnorm.reference import gated_rmsnorm as reference


def _check(shape, dtype, interpret, eps=1e-6, pad=0):
    """pad: o carries that many zero columns past V (the gated delta rule's `pad_o`)."""
    ks = jax.random.split(jax.random.key(0), 4)
    o = jnp.pad(jax.random.normal(ks[0], shape, dtype), [(0, 0)] * 3 + [(0, pad)])
    g = jax.random.normal(ks[1], shape, dtype)
    s = 1.0 + 0.1 * jax.random.normal(ks[2], shape[-1:], jnp.float32)
    dy = jax.random.normal(ks[3], shape, dtype)
    y, vjp = jax.vjp(lambda o, g, s: gated_rmsnorm(
        o, g, s, eps=eps, out_dtype=dtype, implementation="pallas_gpu", interpret=interpret),
        o, g, s)
    # the reference's derivative in fp32 (the kernel's math is fp32 throughout); o's gradient
    # past V is zero
    V = shape[-1]
    y_ref, vjp_ref = jax.vjp(lambda o, g, s: reference(
        o[..., :V].astype(jnp.float32), g.astype(jnp.float32), s, eps, jnp.float32), o, g, s)
    tol = 1e-5 if dtype == jnp.float32 else 1e-2
    y_want = np.asarray(y_ref, np.float64)
    assert y.dtype == dtype
    np.testing.assert_allclose(np.asarray(y, np.float64), y_want, rtol=0,
                               atol=tol * np.abs(y_want).max())
    for a, b, x in zip(vjp(dy), vjp_ref(dy.astype(jnp.float32)), (o, g, s)):
        assert a.dtype == x.dtype
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        np.testing.assert_allclose(a, b, atol=tol * np.abs(b).max(), rtol=0)


@pytest.mark.parametrize("shape, dtype, pad", [
    ((2, 37, 3, 96), jnp.float32, 0),     # 222 rows: past three programs of 64; V 96 in 128
    ((2, 37, 3, 96), jnp.bfloat16, 32),   # o in the gated delta rule kernels' width
    ((1, 64, 2, 64), jnp.bfloat16, 0),
    ((1, 5, 1, 24), jnp.float32, 8)])
def test_interpret_matches_jax(shape, dtype, pad):
    _check(shape, dtype, interpret=True, pad=pad)


def test_auto_is_xla_off_a_gpu_and_names_bad_input():
    assert resolve_norm_implementation() == ("pallas_gpu" if jax.default_backend() == "gpu"
                                             else "xla")
    with pytest.raises(ValueError, match="unknown"):
        resolve_norm_implementation("triton")
    with pytest.raises(ValueError, match=r"Vo >= V"):
        gated_rmsnorm(jnp.zeros((1, 2, 3, 4)), jnp.zeros((1, 2, 3, 8)), jnp.ones(8), eps=1e-6,
                      out_dtype=jnp.float32)
    with pytest.raises(ValueError, match=r"scale \[V\]"):
        gated_rmsnorm(jnp.zeros((1, 2, 3, 8)), jnp.zeros((1, 2, 3, 8)), jnp.ones(4), eps=1e-6,
                      out_dtype=jnp.float32)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_gpu_matches_jax(dtype):
    _check((2, 1000, 22, 96), dtype, interpret=False, pad=32)


_SHARD_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
from hybrid_jax.sharding import make_mesh
from kernels.gated_rmsnorm import gated_rmsnorm
from kernels.gated_rmsnorm.reference import gated_rmsnorm as reference
ks = jax.random.split(jax.random.key(0), 4)
o, g, dy = (jax.random.normal(k, (4, 9, 2, 24)) for k in ks[:3])
s = 1.0 + 0.1 * jax.random.normal(ks[3], (24,))
loss = lambda f: lambda o, g, s: jnp.sum(f(o, g, s) * dy)
want = jax.grad(loss(lambda o, g, s: reference(o, g, s, 1e-6, jnp.float32)), (0, 1, 2))(o, g, s)
ours = loss(lambda o, g, s: gated_rmsnorm(o, g, s, eps=1e-6, out_dtype=jnp.float32,
                                           interpret=True))
with jax.set_mesh(make_mesh((1, 2, 2), jax.devices())):
    got = jax.jit(jax.grad(ours, (0, 1, 2)))(o, g, s)
assert "tensor" in str(got[0].sharding.spec), got[0].sharding  # the kernel ran per shard
for a, b in zip(got, want):
    assert float(np.abs(np.asarray(a) - np.asarray(b)).max()) < 1e-4 * float(np.abs(b).max())
print("ok")
"""


def test_per_shard_backward_sums_dscale_over_batch_and_head_shards():
    """Under a mesh (fsdp=2, tensor=2 on 4 host devices) each shard's kernel sees its batch rows
    and heads only; the scale's gradient must still be the sum over all of them."""
    import os
    import subprocess
    import sys

    from tests.helpers import REPO as root, xla_flags

    env = dict(os.environ, XLA_FLAGS=xla_flags(4), JAX_PLATFORMS="cpu", PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, "-c", _SHARD_SCRIPT], cwd=root, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_kernels_lower_for_cuda(triton_lowers_for_h100):
    """Forward and backward lowered for CUDA on this host (jax 0.11.2 internals, as in the gated
    delta rule's tests): lowering errors show up without a GPU."""
    from kernels.gated_rmsnorm.gpu import gated_rmsnorm_gpu
    o = jax.ShapeDtypeStruct((2, 37, 3, 96), jnp.bfloat16)
    s = jax.ShapeDtypeStruct((96,), jnp.float32)
    loss = lambda o, g, s: jnp.sum(gated_rmsnorm_gpu(o, g, s, 1e-6, jnp.bfloat16).astype(
        jnp.float32))
    text = jax.jit(jax.grad(loss, (0, 1, 2))).trace(o, o, s).lower(
        lowering_platforms=("cuda",)).as_text()
    assert "gated_rmsnorm_fwd" in text and "gated_rmsnorm_bwd" in text
