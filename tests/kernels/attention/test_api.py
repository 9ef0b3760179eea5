"""Attention dispatch: the xla path against a float64 NumPy softmax, masks, dispatch errors."""

import importlib
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import attention, resolve_attention_implementation

from tests.helpers.attention import make_qkv


def np_attention(q, k, v, *, causal=True, window=None, scale=None):
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    B, T, N, H = q.shape
    S, G = k.shape[1], k.shape[2]
    k, v = np.repeat(k, N // G, axis=2), np.repeat(v, N // G, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", q, k) * (H ** -0.5 if scale is None else scale)
    i, j = np.arange(T)[:, None], np.arange(S)[None, :]
    allowed = np.ones((T, S), bool)
    if causal:
        allowed &= j <= i
    if window is not None:
        allowed &= j > i - window
    logits = np.where(allowed, logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bnts,bsnh->btnh", p, v)


@pytest.mark.parametrize("T, N, G, H, causal, window", [
    (37, 4, 2, 16, True, None),
    (37, 4, 1, 16, True, 5),
    (50, 6, 3, 32, True, 16),
    (64, 2, 2, 8, True, 1),
    (29, 4, 4, 16, False, None),
])
def test_xla_matches_numpy(T, N, G, H, causal, window):
    q, k, v = make_qkv(0, 2, T, N, G, H)
    out = attention(q, k, v, causal=causal, local_window_size=window, implementation="xla")
    ref = np_attention(q, k, v, causal=causal, window=window)
    assert out.shape == (2, T, N, H) and out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref, rtol=2e-5, atol=2e-5)


def test_custom_scale():
    q, k, v = make_qkv(1, 1, 17, 2, 1, 8)
    out = attention(q, k, v, scale=0.7, implementation="xla")
    np.testing.assert_allclose(out, np_attention(q, k, v, scale=0.7), rtol=2e-5, atol=2e-5)


def test_window_semantics_match_jax_dot_product_attention():
    """Our window W must equal jax's local_window_size=(W - 1, 0), the form the cudnn path uses."""
    q, k, v = make_qkv(2, 2, 40, 4, 2, 16)
    for W in (1, 3, 8):
        ours = attention(q, k, v, local_window_size=W, implementation="xla")
        with jax.default_matmul_precision("highest"):  # ours is HIGHEST; XLA's GPU default is TF32
            theirs = jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                                  local_window_size=(W - 1, 0),
                                                  implementation="xla")
        np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=2e-5)


def test_window_at_least_T_equals_full_causal():
    q, k, v = make_qkv(3, 1, 24, 2, 2, 8)
    full = attention(q, k, v, implementation="xla")
    for W in (24, 100):
        np.testing.assert_array_equal(attention(q, k, v, local_window_size=W,
                                                implementation="xla"), full)


def test_window_one_returns_own_value():
    q, k, v = make_qkv(4, 1, 12, 4, 2, 8)
    out = attention(q, k, v, local_window_size=1, implementation="xla")
    np.testing.assert_allclose(out, np.repeat(np.asarray(v), 2, axis=2), rtol=1e-6)


def test_gradients_respect_causality_and_window():
    T, W = 16, 4
    q, k, v = make_qkv(5, 1, T, 2, 1, 8)

    def out_at(t, k, v):
        return jnp.sum(attention(q, k, v, local_window_size=W, implementation="xla")[:, t])

    t = 9
    dk, dv = jax.grad(out_at, argnums=(1, 2))(t, k, v)
    seen = np.zeros(T, bool)
    seen[t - W + 1:t + 1] = True
    for d in (dk, dv):
        per_pos = np.abs(np.asarray(d)).sum(axis=(0, 2, 3))
        assert np.all(per_pos[~seen] == 0) and np.all(per_pos[seen] > 0)


def test_bf16_output_dtype_and_accuracy():
    q, k, v = make_qkv(6, 2, 33, 4, 2, 16)
    out = attention(*(x.astype(jnp.bfloat16) for x in (q, k, v)), local_window_size=8,
                    implementation="xla")
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(jnp.float32), np_attention(q, k, v, window=8),
                               atol=3e-2, rtol=3e-2)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks the CPU dispatch")
def test_dispatch_on_cpu():
    assert resolve_attention_implementation("auto") == "xla"
    assert resolve_attention_implementation("xla") == "xla"
    q, k, v = make_qkv(7, 1, 8, 2, 2, 8)
    with pytest.raises(RuntimeError, match="'cpu'"):
        attention(q, k, v, implementation="cudnn")
    with pytest.raises(RuntimeError, match="'cpu'"):
        attention(q, k, v, implementation="splash")


@pytest.mark.parametrize("kwargs, shapes, match", [
    ({"implementation": "flash"}, None, "unknown"),
    ({"local_window_size": 4, "causal": False}, None, "causal=True"),
    ({"local_window_size": 0}, None, "local_window_size"),
    ({}, ((1, 8, 3, 8), (1, 8, 2, 8)), "not a multiple"),
    ({}, ((1, 8, 2, 8), (1, 6, 2, 8)), "as many keys"),
])
def test_bad_inputs_raise(kwargs, shapes, match):
    q_shape, kv_shape = shapes or ((1, 8, 2, 8), (1, 8, 2, 8))
    q, k, v = (jnp.zeros(s, jnp.float32) for s in (q_shape, kv_shape, kv_shape))
    with pytest.raises(ValueError, match=match):
        attention(q, k, v, **kwargs)


@pytest.mark.gpu
@pytest.mark.parametrize("window", [None, 64])
def test_cudnn_matches_xla_on_gpu(window):
    assert resolve_attention_implementation("auto", dtype=jnp.bfloat16) == "cudnn"
    q, k, v = make_qkv(8, 2, 256, 8, 2, 64, dtype=jnp.bfloat16)
    run = jax.jit(attention, static_argnames=("local_window_size", "implementation"))
    got = run(q, k, v, local_window_size=window, implementation="cudnn")
    want = run(q, k, v, local_window_size=window, implementation="xla")
    np.testing.assert_allclose(got.astype(jnp.float32), want.astype(jnp.float32),
                               atol=2e-2, rtol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(jax.device_count() < 2, reason="needs 2 GPUs")
def test_cudnn_under_fsdp_mesh_with_unlike_qkv_shardings():
    """cuDNN's partitioner refuses q, k, v sharded unlike each other (the 370M fsdp=2 step hit
    that); the call runs per shard of batch and heads instead."""
    from jax.sharding import NamedSharding, PartitionSpec as P
    from hybrid_jax.sharding import make_mesh
    mesh = make_mesh((1, 2, 1), jax.devices()[:2])  # Auto axes, as the train step's
    q, k, v = make_qkv(9, 4, 256, 8, 2, 64, dtype=jnp.bfloat16)
    q = jax.device_put(q, NamedSharding(mesh, P("fsdp")))
    k = jax.device_put(k, NamedSharding(mesh, P(None, "fsdp")))  # sequence-sharded, unlike q
    want = jax.jit(attention, static_argnames="implementation")(q, k, v, implementation="xla")
    with jax.set_mesh(mesh):
        got = jax.jit(attention, static_argnames="implementation")(q, k, v,
                                                                     implementation="cudnn")
    np.testing.assert_allclose(got.astype(jnp.float32), want.astype(jnp.float32),
                               atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("dtype, head_dim, want", [
    (jnp.bfloat16, 64, "cudnn"), (jnp.bfloat16, 104, "cudnn"), (jnp.bfloat16, None, "cudnn"),
    (jnp.bfloat16, 52, "xla"),      # not a multiple of 8 (gpu-small's first d416 had this)
    (jnp.bfloat16, 264, "xla"),     # over cuDNN's 256
    (jnp.float32, 64, "xla"),       # cuDNN takes only 16-bit floats
])
def test_auto_on_gpu_picks_cudnn_only_where_it_can_run(monkeypatch, dtype, head_dim, want):
    api = importlib.import_module("kernels.attention.api")

    monkeypatch.setattr(api, "target_platform", lambda: "gpu")
    assert api.resolve_attention_implementation("auto", dtype=dtype, head_dim=head_dim) == want
    # An explicit request is never rerouted.
    assert api.resolve_attention_implementation("cudnn", dtype=dtype, head_dim=head_dim) == "cudnn"
