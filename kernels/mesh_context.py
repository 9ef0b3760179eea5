"""Run a Mosaic (Pallas TPU) kernel per shard of the mesh in context.

Why this exists
    XLA cannot partition a Mosaic custom call ("Mosaic kernels cannot be automatically
    partitioned"), so under a sharded jit each kernel must run inside `jax.shard_map`. The
    kernels here are independent over batch and heads, so the mesh axes that shard the
    batch (data, fsdp) and the heads (tensor) in `hybrid_jax.sharding` map onto those dims;
    the sequence is never split. The mesh is the one in context (`jax.set_mesh` or
    `jax.sharding.use_abstract_mesh`; `hybrid_jax.train.program` enters it while the step is
    traced); with no mesh, or a single device, the kernel is called directly.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import jax
from jax.sharding import PartitionSpec as P

BATCH_AXES = ("data", "fsdp")
HEAD_AXIS = "tensor"


def target_platform() -> str:
    """The platform being compiled for: the device of the abstract mesh in context (a CPU
    host lowering for TPU topology devices says "tpu"), else jax.default_backend()."""
    mesh = jax.sharding.get_abstract_mesh()
    device = None if mesh.empty else getattr(mesh, "abstract_device", None)
    return device.platform if device is not None else jax.default_backend()


def resolve_xla_or_pallas_gpu(op: str, name: str) -> str:
    """For an op with two implementations, "xla" (anywhere) and "pallas_gpu": the one `name`
    runs as on `target_platform()`. "auto" is "pallas_gpu" on a GPU, else "xla"; an explicit
    name that cannot run here raises, naming `op`."""
    platform = target_platform()
    if name == "auto":
        return "pallas_gpu" if platform == "gpu" else "xla"
    if name not in ("xla", "pallas_gpu"):
        raise ValueError(f"{op} implementation={name!r} is unknown; expected 'auto' or one of "
                         f"('xla', 'pallas_gpu')")
    if name == "pallas_gpu" and platform != "gpu":
        raise RuntimeError(f"{op} implementation='pallas_gpu' needs a GPU backend, but this "
                           f"platform is {platform!r}")
    return name


def shard_batch_and_heads(fn: Callable, args: Sequence, head_dims: Sequence,
                          n_outputs_dims: Sequence, whole: Sequence[int] = (),
                          unbatched: Sequence[int] = ()):
    """fn(*args) per shard. head_dims[i]: the head dim of args[i] (None: not sharded by
    heads; dim 0 is the batch). whole: indices of args that every shard gets whole
    (parameters: their cotangents are summed over the shards). unbatched: indices of args
    with no batch dim (parameters split by heads only, e.g. per-channel weights; their
    cotangents are summed over the batch shards). n_outputs_dims: (ndim, head dim or None)
    per output.
    Heads are sharded over `tensor` only if it divides every head dim; what cannot be split
    is replicated, with a warning (the kernel then runs on gathered inputs, still per device)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or math.prod(mesh.axis_sizes) == 1:
        return fn(*args)
    # Axes already manual (a caller's shard_map, e.g. the GDN layer's) are not split again.
    manual = set(mesh.manual_axes)
    sizes = {a: n for a, n in zip(mesh.axis_names, mesh.axis_sizes) if a not in manual}
    if math.prod(sizes.values()) == 1:
        return fn(*args)
    first = next(a for i, a in enumerate(args)  # its dim 0 is the batch
                 if i not in whole and i not in unbatched)
    batch = tuple(a for a in BATCH_AXES if sizes.get(a, 1) > 1)
    if batch and first.shape[0] % math.prod(sizes[a] for a in batch):
        warnings.warn(f"{getattr(fn, '__name__', 'kernel')}: batch {first.shape[0]} does not "
                      f"divide over mesh axes {batch}; the kernel runs on the gathered batch")
        batch = ()
    t = sizes.get(HEAD_AXIS, 1)
    heads_ok = t > 1 and all(d is None or a.shape[d] % t == 0 for a, d in zip(args, head_dims))
    if t > 1 and not heads_ok:
        warnings.warn(f"{getattr(fn, '__name__', 'kernel')}: head counts "
                      f"{[a.shape[d] for a, d in zip(args, head_dims) if d is not None]} do not "
                      f"divide over tensor={t}; every device runs all heads")
    head = HEAD_AXIS if heads_ok else None

    def spec(ndim, head_dim, batched=True):
        parts = [None] * ndim
        if batched:
            parts[0] = batch or None
        if head_dim is not None:
            parts[head_dim] = head
        return P(*parts)

    in_specs = tuple(P() if i in whole else spec(a.ndim, d, i not in unbatched)
                     for i, (a, d) in enumerate(zip(args, head_dims)))
    out_specs = tuple(spec(n, d) for n, d in n_outputs_dims)
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                         check_vma=False)(*args)
