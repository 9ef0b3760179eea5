"""Splash attention (TPU) in TPU interpret mode against the XLA attention, and its dispatch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

from kernels.attention import api, resolve_attention_implementation
from kernels.attention.reference import xla_attention
from kernels.attention.splash import splash_attention

from tests.helpers.attention import make_qkv

INTERPRET = pltpu.InterpretParams()


@pytest.mark.parametrize("T, N, G, H, causal, window", [
    (130, 4, 2, 16, True, None),     # GQA, T not a multiple of the 128 block
    (130, 2, 1, 16, True, 40),       # window smaller than a block, MQA
    (256, 2, 2, 32, True, 129),      # window crossing a block boundary
    (100, 2, 2, 16, False, None),    # non-causal with padded (segment-separated) keys
])
def test_splash_matches_xla_forward_and_grads(T, N, G, H, causal, window):
    q, k, v = make_qkv(0, 1, T, N, G, H)
    w = jnp.asarray(np.random.default_rng(1).normal(size=(1, T, N, H)), jnp.float32)

    def loss(fn, q, k, v, **kw):
        return jnp.sum(fn(q, k, v, causal=causal, local_window_size=window, **kw) * w)

    got, g_got = jax.jit(jax.value_and_grad(
        lambda q, k, v: loss(splash_attention, q, k, v, interpret=INTERPRET),
        argnums=(0, 1, 2)))(q, k, v)
    want, g_want = jax.value_and_grad(lambda q, k, v: loss(xla_attention, q, k, v),
                                      argnums=(0, 1, 2))(q, k, v)
    out = splash_attention(q, k, v, causal=causal, local_window_size=window,
                           interpret=INTERPRET)
    ref = xla_attention(q, k, v, causal=causal, local_window_size=window)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    np.testing.assert_allclose(out, ref, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    for a, b in zip(g_got, g_want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_splash_bf16():
    q, k, v = (x.astype(jnp.bfloat16) for x in make_qkv(2, 1, 128, 2, 1, 32))
    out = splash_attention(q, k, v, local_window_size=16, interpret=INTERPRET)
    ref = xla_attention(q, k, v, local_window_size=16)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(jnp.float32), ref.astype(jnp.float32),
                               atol=3e-2, rtol=3e-2)


def test_auto_picks_splash_when_compiling_for_tpu():
    """Under an abstract mesh whose device is a TPU (what `hybrid-jax compile` sets)."""
    device = jax.sharding.AbstractDevice(device_kind="TPU v5 lite", num_cores=1, platform="tpu")
    mesh = jax.sharding.AbstractMesh((1,), ("data",), abstract_device=device)
    with jax.sharding.use_abstract_mesh(mesh):
        assert api.target_platform() == "tpu"
        assert resolve_attention_implementation("auto") == "splash"
        assert resolve_attention_implementation("splash") == "splash"
        with pytest.raises(RuntimeError, match="GPU"):
            resolve_attention_implementation("cudnn")
    if jax.default_backend() == "cpu":
        assert resolve_attention_implementation("auto") == "xla"
