"""The Pallas TPU kernels compile with Mosaic for a real TPU target (ahead of time, no TPU),
sharded over a v5e:2x2 mesh through the mesh in context (the gated delta rule through its API,
which runs the kernel per shard). Needs libtpu (marked `tpu`)."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kernels.attention.splash import splash_attention
from kernels.gated_delta_rule import chunk_gated_delta_rule

pytestmark = [pytest.mark.tpu,
              pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                 reason="needs libtpu: pip install '.[tpu]'")]


@pytest.fixture(scope="module")
def mesh():
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies

    devices = topologies.get_topology_desc("v5e:2x2", "tpu").devices
    return Mesh(np.asarray(devices).reshape(2, 1, 2), ("data", "fsdp", "tensor"))


def _arg(mesh, shape, spec, dtype=jnp.bfloat16):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))


def _compile(mesh, fn, *args):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        return jax.jit(fn).lower(*args).compile()


def test_gated_delta_rule_forward_and_backward_compile_sharded(mesh):
    B, T, H, HV, K, V = 4, 320, 2, 4, 96, 192
    heads = P(("data", "fsdp"), None, "tensor", None)
    gates = P(("data", "fsdp"), None, "tensor")
    args = (_arg(mesh, (B, T, H, K), heads), _arg(mesh, (B, T, H, K), heads),
            _arg(mesh, (B, T, HV, V), heads), _arg(mesh, (B, T, HV), gates, jnp.float32),
            _arg(mesh, (B, T, HV), gates, jnp.float32))
    def loss(q, k, v, g, b):
        o, S = chunk_gated_delta_rule(q, k, v, g, b, use_qk_l2norm=True, output_final_state=True,
                                      implementation="pallas_tpu")
        return jnp.sum(o.astype(jnp.float32)) + jnp.sum(S)

    compiled = _compile(mesh, jax.grad(loss, argnums=range(5)), *args)
    text = compiled.as_text()
    assert "gated_delta_rule_fwd" in text and "gated_delta_rule_bwd" in text


@pytest.mark.parametrize("window", [None, 128])
def test_splash_forward_and_backward_compile_sharded(mesh, window):
    spec = P(("data", "fsdp"), None, "tensor", None)
    q = _arg(mesh, (4, 256, 4, 128), spec)
    kv = _arg(mesh, (4, 256, 2, 128), spec)

    def loss(q, k, v):
        o = splash_attention(q, k, v, local_window_size=window, interpret=False)
        return jnp.sum(o.astype(jnp.float32))

    compiled = _compile(mesh, jax.grad(loss, argnums=(0, 1, 2)), q, kv, kv)
    assert compiled.memory_analysis().temp_size_in_bytes >= 0
