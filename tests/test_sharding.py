import jax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from hybrid_jax import sharding
from hybrid_jax.presets import get_preset
from hybrid_jax.sharding import MeshError, default_rules, no_sharding, resolve_mesh_shape
from hybrid_jax.train.step import abstract_model

from tests.helpers import xla_flags

MESH_222 = {"data": 2, "fsdp": 2, "tensor": 2}


def test_rules_shard_divisible_dims():
    spec, notes = default_rules().spec(("embed", "mlp"), (64, 192), MESH_222)
    assert spec == P("fsdp", "tensor") and notes == []
    spec, _ = default_rules().spec(("vocab", "embed"), (512, 64), MESH_222)
    assert spec == P("tensor", "fsdp")


def test_indivisible_dim_is_replicated_with_a_note():
    spec, notes = default_rules().spec(("vocab", "embed"), (259, 64), {**MESH_222, "tensor": 4})
    assert spec == P(None, "fsdp")
    assert notes == ["vocab=259 not divisible by tensor=4"]


def test_size_one_axes_and_unsharded_names():
    spec, notes = default_rules().spec(("conv", "gdn_qk"), (4, 48),
                                       {"data": 8, "fsdp": 1, "tensor": 1})
    assert spec == P(None, None) and notes == []


def test_a_mesh_axis_is_used_once_per_array():
    rules = sharding.Rules({"a": "tensor", "b": "tensor"})
    spec, notes = rules.spec(("a", "b"), (4, 4), MESH_222)
    assert spec == P("tensor", None) and "already used" in notes[0]


def test_no_sharding_needs_no_mesh():
    spec, notes = no_sharding().spec(("vocab", "embed"), (512, 64), MESH_222)
    assert spec == P(None, None) and notes == []


def test_unknown_logical_name_is_an_error():
    with pytest.raises(KeyError, match="no sharding rule"):
        default_rules().spec(("nonsense",), (4,), MESH_222)


@pytest.mark.parametrize("family", ["transformer", "hybrid", "gdn"])
def test_every_parameter_has_a_rule(family):
    _, state = abstract_model(get_preset(f"{family}_tiny"))
    leaves = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    for var in leaves:
        axes = var.get_metadata()["out_sharding"]
        spec, notes = default_rules().spec(tuple(axes), var.get_value().shape, MESH_222)
        assert notes == [], (axes, var.get_value().shape, notes)


def test_resolve_mesh_shape():
    assert resolve_mesh_shape((-1, 1, 1), 8) == (8, 1, 1)
    assert resolve_mesh_shape((2, -1, 2), 8) == (2, 2, 2)
    assert resolve_mesh_shape((2, 2, 2), 8) == (2, 2, 2)
    with pytest.raises(MeshError, match="has 4 devices, but 8 are available"):
        resolve_mesh_shape((2, 2, 1), 8)
    with pytest.raises(MeshError, match="do not divide the 8 devices"):
        resolve_mesh_shape((3, -1, 1), 8)


def test_param_plan_on_one_device():
    _, state = abstract_model(get_preset("hybrid_tiny"))
    mesh = sharding.make_mesh((1, 1, 1))
    plan = sharding.param_plan(state, mesh)
    assert plan.notes == []
    assert plan.specs["embed"] == P(None, None)
    assert set(jax.tree.leaves(plan.shardings)) and sharding.data_parallel_size(mesh) == 1


def test_constrain_pins_activations_to_the_batch_axes_under_a_mesh():
    """No mesh: the array itself. Under the step's mesh (8 fake devices, a fresh process):
    batch over (data, fsdp), the last dim over tensor where asked, whatever the input had."""
    import os
    import subprocess
    import sys

    import jax.numpy as jnp
    x = jnp.ones((4, 6, 8))
    assert sharding.constrain(x, ("batch", None, None)) is x
    code = """
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
from hybrid_jax import sharding
mesh = sharding.make_mesh((2, 2, 2))
x = jax.device_put(jnp.ones((4, 6, 8)), NamedSharding(mesh, P(None, None, "fsdp")))
f = lambda x: (sharding.constrain(x, ("batch", None, None)),
               sharding.constrain(x, ("batch", None, "vocab")))
with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
    a, b = jax.jit(f)(x)
want_a = NamedSharding(mesh, P(("data", "fsdp"), None, None))
want_b = NamedSharding(mesh, P(("data", "fsdp"), None, "tensor"))
print(a.sharding.is_equivalent_to(want_a, 3), b.sharding.is_equivalent_to(want_b, 3),
      x.sharding.is_equivalent_to(want_a, 3))
"""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=xla_flags(8))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-3:] == ["True", "True", "False"], proc.stdout
