"""Compile the full sharded train step for a TPU slice ahead of time, on a CPU-only host.

Why this exists
    A pod job that does not fit HBM fails minutes after the slice is paid for. libtpu can
    compile for a topology it is not running on (`jax.experimental.topologies`): the same
    `build_program` the loop uses, with the mesh laid over the topology's devices, lowered
    from abstract arrays (nothing is allocated) and compiled by the TPU compiler, which
    reports the per-device memory it will need and the FLOPs it will run.

What is compiled
    The train step exactly as `hybrid-jax train` jits it: state donated, shardings from the
    one rules table, micro-batch accumulation. Lowering runs under
    `jax.sharding.use_abstract_mesh` of the topology mesh, so kernels dispatch as on a TPU
    (attention "auto" is splash; Mosaic kernels learn the TPU generation).

Constraints
    Needs libtpu (`pip install .[tpu]`). Memory is per device (a v5p chip is one megacore
    device; a v4 chip shows up as 2 devices, each with half the chip's HBM).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time

import jax
import jax.numpy as jnp

from hybrid_jax.flops import train_flops_per_token
from hybrid_jax.train.config import RunConfig

GiB = 1 << 30
# Chip generation -> (HBM bytes per chip, libtpu's name, peak dense bf16 FLOP/s per chip).
TOPOLOGIES = {
    "v4": (32 * GiB, "v4", 275e12),
    "v5e": (16 * GiB, "v5e", 197e12),
    "v5p": (95 * GiB, "v5p", 459e12),
    "v6e": (32 * GiB, "v6e", 918e12),
}
_NAME = re.compile(r"^(?P<gen>[a-z0-9]+):(?P<dims>\d+(x\d+){1,2})$")


class TopologyError(ValueError):
    """The topology name is not one we know how to compile for."""


class DoesNotFit(RuntimeError):
    """The TPU compiler refused the step: it needs more HBM than a device has."""

    def __init__(self, message: str, required: float | None, available: float | None):
        super().__init__(message)
        self.required, self.available = required, available


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_OOM = re.compile(r"required for (?P<what>[^(]*)\((?P<req>[\d.]+)(?P<ru>[KMGT]?)\) exceeds "
                  r"available HBM \((?P<avail>[\d.]+)(?P<au>[KMGT]?)\)")


def _does_not_fit(e: Exception) -> DoesNotFit:
    text = str(e)
    m = _OOM.search(text)
    if not m:
        return DoesNotFit(text.splitlines()[0], None, None)
    req = float(m["req"]) * _UNITS[m["ru"]]
    avail = float(m["avail"]) * _UNITS[m["au"]]
    return DoesNotFit(f"the TPU compiler ran out of HBM: {m['what'].strip()} need "
                      f"{req / GiB:.2f} GiB per device, {(req - avail) / GiB:.2f} GiB "
                      f"({100 * (req - avail) / avail:.0f}%) more than the {avail / GiB:.2f} GiB "
                      f"it can use", req, avail)


@dataclasses.dataclass
class CompileReport:
    topology: str
    device_kind: str
    n_devices: int
    n_chips: int
    mesh_shape: tuple[int, int, int]
    hbm_per_device: int
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    code_bytes: int
    compiled_flops_per_device: float | None
    model_flops_per_step: float
    attention_implementation: str
    gdn_implementation: str
    compile_seconds: float
    peak_flops_per_chip: float

    @property
    def ideal_step_seconds(self) -> float:
        """Model FLOPs per step at 100% of the slice's peak dense bf16 FLOP/s (an MFU floor)."""
        return self.model_flops_per_step / (self.peak_flops_per_chip * self.n_chips)

    @property
    def total_bytes(self) -> int:
        """Peak per-device footprint: live arguments, outputs not aliased to (donated)
        arguments, temporaries and generated code."""
        return (self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes
                + self.code_bytes)

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.hbm_per_device

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(total_bytes=self.total_bytes, fits=self.fits,
                 ideal_step_seconds=self.ideal_step_seconds)
        return d


def parse_topology(name: str) -> tuple[str, tuple[int, ...]]:
    m = _NAME.match(name.strip().lower())
    if not m or m["gen"] not in TOPOLOGIES:
        raise TopologyError(
            f"unknown TPU topology {name!r}; expected GEN:AxB or GEN:AxBxC with GEN one of "
            f"{sorted(TOPOLOGIES)} (e.g. v5e:4x4, v5p:2x2x1, v6e:2x4, v4:2x2x1)")
    return m["gen"], tuple(int(d) for d in m["dims"].split("x"))


def topology_devices(name: str):
    """(generation, chips, the topology's TPU devices); needs libtpu, no TPU."""
    gen, dims = parse_topology(name)
    # libtpu takes /tmp/libtpu_lockfile for the whole process; compiling needs no TPU, so let
    # several compiles (pytest-xdist workers, a sweep of checks) load it side by side.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    try:
        from jax.experimental import topologies
        topo = topologies.get_topology_desc(f"{TOPOLOGIES[gen][1]}:{'x'.join(map(str, dims))}",
                                            "tpu")
    except Exception as e:  # libtpu missing, or libtpu refused the shape
        raise TopologyError(f"cannot build TPU topology {name!r}: {type(e).__name__}: {e} "
                            "(ahead-of-time TPU compilation needs libtpu: pip install "
                            "'.[tpu]')") from e
    return gen, math.prod(dims), list(topo.devices)


def abstract_batch(cfg: RunConfig, batch_sharding) -> dict:
    B, T = cfg.train.global_batch, cfg.train.seq_len
    spec = lambda dt: jax.ShapeDtypeStruct((B, T), dt, sharding=batch_sharding)
    return {"inputs": spec(jnp.int32), "targets": spec(jnp.int32),
            "loss_mask": spec(jnp.float32)}


def compile_train_step(cfg: RunConfig, topology: str) -> CompileReport:
    """Lower and compile the sharded train step of `cfg` for `topology`. Raises MeshError if
    the mesh does not fit the device count or the batch, DoesNotFit if the TPU compiler
    refuses for lack of HBM (it does so itself when temporaries alone overflow)."""
    from hybrid_jax.train.loop import check_fits
    from hybrid_jax.train.program import build_program
    from hybrid_jax.train.runinfo import implementations

    gen, n_chips, devices = topology_devices(topology)
    mesh_shape = check_fits(cfg, len(devices))
    t0 = time.perf_counter()
    program = build_program(cfg, mesh_shape, devices)
    with jax.sharding.use_abstract_mesh(program.mesh.abstract_mesh):
        kernels = implementations(cfg.model)  # as resolved for the topology's platform
        lowered = program.step.lower(program.abstract_state,
                                     abstract_batch(cfg, program.batch_sharding))
        try:
            compiled = lowered.compile()
        except jax.errors.JaxRuntimeError as e:
            if "RESOURCE_EXHAUSTED" in str(e):
                raise _does_not_fit(e) from None
            raise
    seconds = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = None if not cost or "flops" not in cost else float(cost["flops"])
    per_device_hbm = TOPOLOGIES[gen][0] * n_chips // len(devices)
    tokens = cfg.train.global_batch * cfg.train.seq_len
    return CompileReport(
        topology=topology, device_kind=devices[0].device_kind, n_devices=len(devices),
        n_chips=n_chips, mesh_shape=tuple(mesh_shape), hbm_per_device=per_device_hbm,
        argument_bytes=mem.argument_size_in_bytes, output_bytes=mem.output_size_in_bytes,
        alias_bytes=mem.alias_size_in_bytes, temp_bytes=mem.temp_size_in_bytes,
        code_bytes=mem.generated_code_size_in_bytes, compiled_flops_per_device=flops,
        model_flops_per_step=train_flops_per_token(cfg.model, cfg.train.seq_len) * tokens,
        attention_implementation=kernels.get("attention", "none"),
        gdn_implementation=kernels.get("gdn", "none"), compile_seconds=seconds,
        peak_flops_per_chip=TOPOLOGIES[gen][2])
