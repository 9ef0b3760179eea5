"""`hybrid-jax compile --config CONFIG --topology v5e:4x4 [key.sub=value ...]`

Compiles the full sharded train step of a run config for a TPU slice ahead of time, on this
machine (no TPU needed, libtpu is: pip install '.[tpu]'), and prints the per-device memory
the TPU compiler plans and the FLOPs per step. Use it before paying for a pod job.

CONFIG is what `hybrid-jax train` takes (a YAML file or a preset name); train.tokens may be
left out (it does not change the step). The mesh is the config's mesh section sized to the
topology's device count (-1 = the rest).

Exit status: 0 the step fits in HBM; 1 it does not (the message says by how much);
2 bad input (config, override, topology name, or a mesh that does not fit the devices).
"""

from __future__ import annotations

import argparse
import json
import sys

GiB = 1 << 30
_ADVICE = "use more devices, more mesh.fsdp / mesh.tensor sharding, or more train.micro_batches"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hybrid-jax compile", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--config", required=True, help="YAML file or model preset name")
    p.add_argument("--topology", required=True, help="TPU slice, e.g. v5e:4x4, v5p:2x2x1")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value")
    return p


def load(config: str, overrides: list[str]):
    """load_config, with train.tokens filled in (2^30: any value of at least one step compiles
    the same step) when the config leaves it unset."""
    from hybrid_jax.config import ConfigError
    from hybrid_jax.train.config import load_config

    try:
        return load_config(config, overrides)
    except ConfigError as e:
        if "train.tokens: is required" not in str(e):
            raise
        return load_config(config, [f"train.tokens={2 ** 30}"] + list(overrides))


def _gib(n: float) -> str:
    return f"{n / GiB:.3f} GiB"


def _loop_note(r, micro_batches: int) -> str:
    if micro_batches == 1 or not r.compiled_flops_per_device:
        return ""
    # The micro-batch accumulation is a lax.scan; XLA's cost analysis counts a loop body once.
    est = r.compiled_flops_per_device * r.n_devices * micro_batches
    return f" (counts the {micro_batches}-micro-batch loop body once: x{micro_batches} = {est:.4g})"


def format_report(r, cfg) -> str:
    lines = [
        f"topology {r.topology}: {r.n_devices} x {r.device_kind} ({r.n_chips} chips), "
        f"mesh (data, fsdp, tensor) = {r.mesh_shape}",
        f"model {cfg.model.family} d={cfg.model.d_model} L={cfg.model.n_layers}; "
        f"batch {cfg.train.global_batch} x {cfg.train.seq_len} tokens, "
        f"{cfg.train.micro_batches} micro-batch(es); attention={r.attention_implementation}, "
        f"gdn={r.gdn_implementation}; compiled in {r.compile_seconds:.1f} s",
        "per-device memory:",
        f"  arguments      {_gib(r.argument_bytes)}",
        f"  outputs        {_gib(r.output_bytes)} ({_gib(r.alias_bytes)} aliased to donated "
        f"arguments)",
        f"  temporaries    {_gib(r.temp_bytes)}",
        f"  generated code {_gib(r.code_bytes)}",
        f"  total          {_gib(r.total_bytes)} of {_gib(r.hbm_per_device)} HBM "
        f"({100 * r.total_bytes / r.hbm_per_device:.1f}%)",
        "FLOPs per step:",
        f"  compiled (XLA cost analysis, per device x devices) "
        + (f"{r.compiled_flops_per_device * r.n_devices:.4g}" if r.compiled_flops_per_device
           else "n/a") + _loop_note(r, cfg.train.micro_batches),
        f"  model (hybrid_jax.flops, 6ND-style)                {r.model_flops_per_step:.4g}",
        f"  at 100% of peak bf16 ({r.peak_flops_per_chip:.3g} FLOP/s per chip): "
        f"{r.ideal_step_seconds:.3g} s per step",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from hybrid_jax.compile.aot import (DoesNotFit, TopologyError, compile_train_step,
                                        parse_topology)
    from hybrid_jax.config import ConfigError
    from hybrid_jax.overrides import OverrideError
    from hybrid_jax.sharding import MeshError

    try:
        parse_topology(args.topology)
        cfg = load(args.config, list(args.overrides))
        report = compile_train_step(cfg, args.topology)
    except (ConfigError, OverrideError, KeyError, FileNotFoundError, MeshError,
            TopologyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"hybrid-jax compile: refused: {msg}", file=sys.stderr)
        return 2
    except DoesNotFit as e:
        if args.json:
            print(json.dumps({"topology": args.topology, "fits": False,
                              "required_bytes": e.required, "available_bytes": e.available}))
        print(f"hybrid-jax compile: does NOT fit on {args.topology}: {e}; {_ADVICE}",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(format_report(report, cfg))
    if not report.fits:
        over = report.total_bytes - report.hbm_per_device
        print(f"hybrid-jax compile: does NOT fit: needs {_gib(report.total_bytes)} per device, "
              f"{_gib(over)} ({100 * over / report.hbm_per_device:.1f}%) more than the "
              f"{_gib(report.hbm_per_device)} of HBM on {report.device_kind}; {_ADVICE}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
