"""The causal convolution with SiLU: the Pallas kernels against the reference and JAX's
derivative of it, in interpret mode on CPU and compiled on a GPU, at awkward shapes (T past one
program's tokens and not a multiple of its rows, C not a multiple of its channels, W 2 and 4);
per shard under a mesh; dispatch and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.causal_conv import causal_conv_silu, resolve_conv_implementation
from kernels.causal_conv.reference import conv_silu


def _operands(B, T, C, W, dtype):
    ks = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(ks[0], (B, T, C), dtype)
    w = jax.random.normal(ks[1], (W, C), jnp.float32) / W ** 0.5
    return x, w, jax.random.normal(ks[2], (B, T, C), dtype)


def _assert_close(got, want, tol, like):
    assert got.dtype == like.dtype and got.shape == like.shape
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    np.testing.assert_allclose(got, want, atol=tol * np.abs(want).max(), rtol=0)


def _check(B, T, C, W, dtype, run):
    """run(x, w, dz) -> (z, dx, dw) against the reference and its derivative in fp32 on the
    same operands (the kernels' math is fp32; they round w to x's dtype, as the reference
    does), to the output dtype's rounding."""
    x, w, dz = _operands(B, T, C, W, dtype)
    w_used = w.astype(dtype).astype(jnp.float32)
    z_ref, vjp_ref = jax.vjp(lambda x, w: conv_silu(x, w), x.astype(jnp.float32), w_used)
    tol = 1e-5 if dtype == jnp.float32 else 1e-2
    z, dx, dw = run(x, w, dz)
    for got, want, like in zip((z, dx, dw), (z_ref, *vjp_ref(dz.astype(jnp.float32))),
                               (x, x, w)):
        _assert_close(got, want, tol, like)


def _through_api(interpret):
    def run(x, w, dz):
        z, vjp = jax.vjp(lambda x, w: causal_conv_silu(
            x, w, implementation="pallas_gpu", interpret=interpret), x, w)
        return (z, *vjp(dz))
    return run


@pytest.mark.parametrize("B, T, C, W, dtype", [
    (2, 300, 100, 4, jnp.float32),   # T: 2 segments of 128 tokens and a partial one; C: 64 + 36
    (1, 77, 64, 2, jnp.bfloat16),
    (3, 5, 24, 4, jnp.float32)])     # T shorter than W + 1 rows of context
def test_interpret_matches_jax(B, T, C, W, dtype):
    _check(B, T, C, W, dtype, _through_api(interpret=True))


@pytest.mark.parametrize("launch", [dict(seg=16, unroll=4, cb=32, warps=1),
                                    dict(seg=8, unroll=8, cb=16, warps=2)])
def test_interpret_other_launches(launch):
    """Segments shorter than the rows of context a program reads past them (W - 1 = 3 rows;
    seg 8 is one unrolled walk), and channel blocks that split C unevenly."""
    from kernels.causal_conv import gpu

    def run(x, w, dz):
        z = gpu.conv_silu_fwd(x, w, interpret=True, launch=launch)
        return (z, *gpu.conv_silu_bwd(x, w, dz, interpret=True, launch=launch))
    _check(2, 37, 40, 4, jnp.float32, run)


def test_launch_needs_whole_unrolled_walks():
    from kernels.causal_conv import gpu
    x, w, _ = _operands(1, 8, 16, 4, jnp.float32)
    with pytest.raises(ValueError, match="seg=12 is not a multiple of unroll=8"):
        gpu.conv_silu_fwd(x, w, interpret=True, launch=dict(seg=12, unroll=8, cb=16, warps=1))


def test_auto_is_xla_off_a_gpu_and_names_bad_input():
    assert resolve_conv_implementation() == ("pallas_gpu" if jax.default_backend() == "gpu"
                                             else "xla")
    with pytest.raises(ValueError, match="unknown"):
        resolve_conv_implementation("cudnn")
    with pytest.raises(ValueError, match=r"x \[B, T, C\] and w \[W, C\] with W >= 2"):
        causal_conv_silu(jnp.zeros((1, 8, 6)), jnp.zeros((4, 5)))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_gpu_matches_jax(dtype):
    _check(2, 1000, 1056, 4, dtype, _through_api(interpret=False))


_SHARD_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
from hybrid_jax.sharding import make_mesh
from kernels.causal_conv import causal_conv_silu
from kernels.causal_conv.reference import conv_silu
ks = jax.random.split(jax.random.key(0), 3)
x, dz = (jax.random.normal(k, (4, 37, 24)) for k in ks[:2])
w = jax.random.normal(ks[2], (4, 24)) / 2
loss = lambda f: lambda x, w: jnp.sum(f(x, w) * dz)
want = jax.grad(loss(conv_silu), (0, 1))(x, w)
ours = loss(lambda x, w: causal_conv_silu(x, w, interpret=True))
with jax.set_mesh(make_mesh((1, 2, 2), jax.devices())):
    got = jax.jit(jax.grad(ours, (0, 1)))(x, w)
assert "tensor" in str(got[0].sharding.spec), got[0].sharding  # the kernel ran per shard
for a, b in zip(got, want):
    assert float(np.abs(np.asarray(a) - np.asarray(b)).max()) < 1e-4 * float(np.abs(b).max())
print("ok")
"""


def test_per_shard_backward_sums_dw_over_batch_shards():
    """Under a mesh (fsdp=2, tensor=2 on 4 host devices) each shard's kernel sees its batch rows
    and channels only; w's gradient must still be the sum over the batch shards."""
    import os
    import subprocess
    import sys

    from tests.helpers import REPO as root, xla_flags

    env = dict(os.environ, XLA_FLAGS=xla_flags(4), JAX_PLATFORMS="cpu", PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, "-c", _SHARD_SCRIPT], cwd=root, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_kernels_lower_for_cuda(triton_lowers_for_h100):
    """The kernels lowered for CUDA on this host: lowering errors show up without a GPU."""
    from kernels.causal_conv.gpu import conv_silu_gpu
    x, w = jax.ShapeDtypeStruct((2, 300, 100), jnp.bfloat16), jax.ShapeDtypeStruct(
        (4, 100), jnp.float32)
    loss = lambda x, w: jnp.sum(conv_silu_gpu(x, w).astype(jnp.float32))
    text = jax.jit(jax.grad(loss, (0, 1))).trace(x, w).lower(
        lowering_platforms=("cuda",)).as_text()
    assert "causal_conv_silu_fwd" in text and "causal_conv_silu_bwd" in text
