"""Logical axis names -> mesh axes: the one rules table, the mesh, and parameter shardings.

Mesh axes are (data, fsdp, tensor). The batch is split over data and fsdp; fsdp also shards the
model dimension of every weight (ZeRO-3 style: XLA gathers it for the matmul); tensor shards
heads, the MLP hidden dimension and the vocabulary (Megatron style). A dimension is sharded
only if the mesh axis size divides it; otherwise it is replicated and the reason is reported
(`ShardingPlan.notes`), never an error. `no_sharding()` maps every name to nothing and needs
no mesh, for tests and single-device tools.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axis (or tuple of axes, or None = replicated)
LOGICAL_RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": ("data", "fsdp"),
    "vocab": "tensor",
    "embed": "fsdp",
    "mlp": "tensor",
    "q_heads": "tensor",
    "kv_heads": "tensor",
    "gdn_qk": "tensor",
    "gdn_v": "tensor",
    "gdn_heads": "tensor",
    "conv": None,
    "norm": None,
}


class MeshError(ValueError):
    """The mesh does not fit the devices or the batch; raised before anything compiles."""


@dataclasses.dataclass(frozen=True)
class Rules:
    table: Mapping[str, Any]

    def mesh_axes(self, name: str | None) -> tuple[str, ...]:
        if name is None:
            return ()
        if name not in self.table:
            raise KeyError(f"logical axis {name!r} has no sharding rule; known: {sorted(self.table)}")
        axes = self.table[name]
        return () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)

    def spec(self, logical: tuple[str | None, ...], shape: tuple[int, ...],
             mesh_shape: Mapping[str, int]) -> tuple[P, list[str]]:
        """The PartitionSpec for one array, and a note for each dimension left replicated."""
        used: set[str] = set()
        parts, notes = [], []
        for name, size in zip(logical, shape):
            axes = tuple(a for a in self.mesh_axes(name) if mesh_shape.get(a, 1) > 1)
            n = math.prod(mesh_shape[a] for a in axes)
            if not axes:
                parts.append(None)
            elif used & set(axes):
                notes.append(f"{name}={size}: mesh axes {axes} already used by another dim")
                parts.append(None)
            elif size % n:
                notes.append(f"{name}={size} not divisible by {'x'.join(axes)}={n}")
                parts.append(None)
            else:
                used |= set(axes)
                parts.append(axes[0] if len(axes) == 1 else axes)
        return P(*parts), notes


def default_rules() -> Rules:
    return Rules(LOGICAL_RULES)


def no_sharding() -> Rules:
    """Every logical name replicated; works without a mesh."""
    return Rules({name: None for name in LOGICAL_RULES})


def resolve_mesh_shape(shape: tuple[int, ...], n_devices: int) -> tuple[int, int, int]:
    """Fill the one -1 with the rest of the devices; the product must equal n_devices."""
    shape = tuple(shape)
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if n_devices % known:
            raise MeshError(f"mesh {dict(zip(MESH_AXES, shape))}: the fixed axes ({known}) "
                            f"do not divide the {n_devices} devices")
        shape = tuple(n_devices // known if s == -1 else s for s in shape)
    if math.prod(shape) != n_devices:
        raise MeshError(f"mesh {dict(zip(MESH_AXES, shape))} has {math.prod(shape)} devices, "
                        f"but {n_devices} are available; set the mesh.* sizes to multiply to "
                        f"{n_devices} (one of them may be -1)")
    return shape  # type: ignore[return-value]


def make_mesh(shape: tuple[int, ...], devices: list | None = None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    shape = resolve_mesh_shape(shape, len(devices))
    # Auto axes: with jax.make_mesh's Explicit default a plain x @ w over a sharded contracting
    # dimension raises ShardingTypeError (docs/environment.md).
    if len(devices) == len(jax.devices()) and devices == jax.devices():
        return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES,
                axis_types=(AxisType.Auto,) * 3)


def constrain(x: jax.Array, logical: tuple[str | None, ...]) -> jax.Array:
    """Pin an activation's sharding by logical axis names, under the mesh in context (the train
    step is traced under its abstract mesh); x unchanged without a mesh or on one device.

    Why: with only the inputs and the weights sharded, XLA's partitioner is free to keep the
    [B, T, D] residual stream unsharded and all-reduce partial sums over fsdp's split of the
    model dimension instead of gathering the weights. At 370M, fsdp=2, B16 T2048 that was 102
    GB of collectives a step (transformer; the full fp32 logits among them), 5.0 GB with the
    constraint (benchmarks/collectives.py, CPU HLO), and 56% scaling efficiency on 2 x H200.
    Pinned to the batch axes, activations stay local and only weights are gathered (ZeRO-3)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or math.prod(mesh.axis_sizes) == 1:
        return x
    sizes = {a: n for a, n in zip(mesh.axis_names, mesh.axis_sizes) if a not in mesh.manual_axes}
    spec, _ = default_rules().spec(logical, x.shape, sizes)
    return jax.lax.with_sharding_constraint(x, spec)


def batch_spec() -> P:
    return P(LOGICAL_RULES["batch"])


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, batch_spec())


def data_parallel_size(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in default_rules().mesh_axes("batch"))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


@dataclasses.dataclass
class ShardingPlan:
    shardings: Any            # pytree of NamedSharding, the structure of the params
    specs: Any                # the same pytree of PartitionSpec
    notes: list[str]          # dimensions left replicated, and why


def param_plan(abstract_state, mesh: Mesh, rules: Rules | None = None) -> ShardingPlan:
    """Shardings for an nnx.State whose Variables carry logical axes in `out_sharding`."""
    from flax import nnx

    rules = default_rules() if rules is None else rules
    notes: list[str] = []

    def one(path, var):
        axes = var.get_metadata().get("out_sharding")
        shape = var.get_value().shape
        if axes is None:
            axes = (None,) * len(shape)
        spec, why = rules.spec(tuple(axes), tuple(shape), dict(mesh.shape))
        notes.extend(f"{jax.tree_util.keystr(path, simple=True, separator='/')}: {w}" for w in why)
        return spec

    specs = jax.tree_util.tree_map_with_path(one, abstract_state,
                                             is_leaf=lambda x: isinstance(x, nnx.Variable))
    specs = nnx.to_pure_dict(specs) if isinstance(specs, nnx.State) else specs
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                             is_leaf=lambda x: isinstance(x, P))
    return ShardingPlan(shardings=shardings, specs=specs, notes=notes)
