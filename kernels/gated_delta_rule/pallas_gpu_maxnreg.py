"""A register cap (PTX `.maxnreg`) for a Pallas GPU (Triton lowering) kernel.

Why this exists
    Nsight Compute on an H200 (experiments/LOG.md, eighth session) found every chunk-parallel
    kernel of the default path using 198-255 registers a thread at 4 warps, so two programs
    share an SM (12.5% occupancy), with the schedulers idle two cycles in three and the warps
    mostly waiting on global loads. ptxas takes registers freely up to its 255 limit unless the
    PTX caps them; Triton caps them with its `maxnreg` option (the module attribute
    "ttg.maxnreg", which its lowering turns into `.maxnreg`), but jax 0.11's
    `plgpu.CompilerParams` has only num_warps and num_stages.

    `CappedParams` adds `max_registers`. Pallas picks a pallas_call's lowering rule by the exact
    type of its compiler params, so this subclass gets its own rule: jax's Triton rule, run with
    its module builder wrapped to set "ttg.maxnreg" on the Triton module it returns, before
    the module is serialized into the custom call that XLA compiles. XLA's own Triton passes
    (the same ones pip's triton runs) carry the attribute to the PTX.

    Patches jax 0.11.2 internals (`jax._src.pallas.triton`), only while one such kernel lowers;
    written against that version, which the project pins.
"""

from __future__ import annotations

import dataclasses
import functools

from jax._src.lib.mlir import ir
from jax._src.pallas import core as pallas_core
from jax._src.pallas.triton import core as triton_core
from jax._src.pallas.triton import lowering
from jax._src.pallas.triton import pallas_call_registration as registration


@dataclasses.dataclass(frozen=True)
class CappedParams(triton_core.CompilerParams):
    """Triton compiler params with a register cap a thread (a multiple of 8, 24 to 255)."""
    max_registers: int | None = None

    def __post_init__(self):
        r = self.max_registers
        if r is not None and not (24 <= r <= 255 and r % 8 == 0):
            raise ValueError(f"max_registers must be a multiple of 8 in [24, 255], got {r}")


def _capped_lowering(ctx, *in_nodes, compiler_params, **params):
    build = lowering.lower_jaxpr_to_triton_module
    cap = compiler_params.max_registers

    @functools.wraps(build)
    def build_capped(*args, **kwargs):
        result = build(*args, **kwargs)
        if cap is not None:
            module = result.module.operation
            module.attributes["ttg.maxnreg"] = ir.IntegerAttr.get(
                ir.IntegerType.get_signless(32), cap)
        return result

    lowering.lower_jaxpr_to_triton_module = build_capped
    try:
        return registration.pallas_call_lowering(ctx, *in_nodes, compiler_params=compiler_params,
                                                 **params)
    finally:
        lowering.lower_jaxpr_to_triton_module = build


pallas_core.register_lowering_rule(CappedParams, _capped_lowering, "gpu")
