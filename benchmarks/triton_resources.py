"""Shared memory, registers and spills of each Pallas GPU (Triton) kernel for sm_90, on a CPU host.

Why this exists
    XLA only checks a Triton kernel's shared memory when it compiles it on a GPU
    ("RESOURCE_EXHAUSTED: Shared memory size limit exceeded: requested N, available: 232448").
    Here each `pallas_call` of the gated delta rule is lowered for CUDA on this host (the
    lowering is told it targets an H100; no device is touched), its Triton-IR module is captured
    with its num_warps / num_stages, and pip's `triton` compiles it for sm_90 in a separate
    virtualenv (`triton_compile_child.py`), through TTGIR, LLVM IR, PTX and its bundled ptxas.

What it measures, and how far to trust it
    `shared` is Triton's shared-memory allocation (metadata.shared), the number XLA compares with
    232448 (227 KiB, the sm_90 per-block opt-in limit). XLA runs its own copy of the same pass
    pipeline on its own pinned Triton commit, so a pip Triton release is only a stand-in, and it
    UNDER-counts: against jax 0.11.2's XLA on an H200 pip triton 3.6.0 gave
    262144 / 196608 / 229376 / 196608 bytes for the largest kernel of four shapes where XLA
    asked for 360448 / 262144 / 262144 / 311296 (triton 3.9.0: no closer). So a kernel that
    fits here may not fit on the GPU: use it to compare variants of one kernel, not as a gate.

Setup (once; the Triton venv stays out of git through .git/info/exclude):
    PYENV_VERSION=3.12.1 python3.12 -m venv /work/main/.tritonvenv
    /work/main/.tritonvenv/bin/pip install triton==3.6.0
    echo '/.tritonvenv/' >> /work/main/.git/info/exclude

Usage (project venv):
    .venv/bin/python benchmarks/triton_resources.py --shape B=1,T=300,H=2,HV=4,K=96,V=192 \
        --precision highest --chunk-size 64 --out /tmp/res.json
The op's Mosaic GPU kernels (precision "default" where they take the shape, `gpu/config.py`)
are not Triton and are not listed; at "highest" or a chunk size other than 64 every kernel is.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile

SMEM_LIMIT_SM90 = 232448  # bytes: cudaDevAttrMaxSharedMemoryPerBlockOptin on H100 and H200
SHAPE_KEYS = ("B", "T", "H", "HV", "K", "V")
DEFAULT_TRITON_PYTHON = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                     ".tritonvenv", "bin", "python")
CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "triton_compile_child.py")


def parse_shape(text: str) -> dict:
    """"B=1,T=300,H=2,HV=4,K=96,V=192" -> {"B": 1, ...}; every key once, nothing else."""
    shape = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in SHAPE_KEYS or key in shape:
            raise ValueError(f"bad shape {text!r}: want {','.join(k + '=N' for k in SHAPE_KEYS)}")
        shape[key] = int(value)
    missing = [k for k in SHAPE_KEYS if k not in shape]
    if missing:
        raise ValueError(f"shape {text!r} lacks {missing}")
    return shape


def shape_label(shape: dict) -> str:
    return ",".join(f"{k}={shape[k]}" for k in SHAPE_KEYS)


@contextlib.contextmanager
def _capture_triton_modules():
    """Record every pallas_call's Triton module (text) and launch parameters while lowering for
    CUDA on a host without a GPU. Patches jax 0.11.2 internals; restores them on exit."""
    from jax._src.interpreters import mlir
    from jax._src.pallas.triton import gpu_info, lowering
    from jax._src.pallas.triton import pallas_call_registration as pcr

    h100 = gpu_info.get_gpu_info_from_version(gpu_info.GpuVersion.H100)  # sm_90, as H200
    saved = (pcr.gpu_info_lib.get_gpu_info, lowering.lower_jaxpr_to_triton_module,
             mlir.custom_call)
    modules, kernels = [], []

    def lower(*args, **kwargs):
        result = saved[1](*args, **kwargs)
        modules.append(result.module.operation.get_asm(enable_debug_info=False))
        return result

    def custom_call(call_target_name, *args, backend_config=None, **kwargs):
        if call_target_name == pcr.CUSTOM_CALL_TARGET_NAME:
            # The lowering builds the module just before its custom call: pair them in order.
            if len(modules) != len(kernels) + 1:
                raise RuntimeError("Triton module and custom call out of step; has the "
                                   "jax Pallas Triton lowering changed?")
            cfg = backend_config
            kernels.append(dict(name=cfg["name"].value, num_warps=int(cfg["num_warps"].value),
                                num_stages=int(cfg["num_stages"].value),
                                grid=[int(cfg[f"grid_{a}"].value) for a in "xyz"],
                                ttir=modules[-1]))
        return saved[2](call_target_name, *args, backend_config=backend_config, **kwargs)

    pcr.gpu_info_lib.get_gpu_info = lambda: h100
    lowering.lower_jaxpr_to_triton_module = lower
    mlir.custom_call = custom_call
    try:
        yield kernels
    finally:
        (pcr.gpu_info_lib.get_gpu_info, lowering.lower_jaxpr_to_triton_module,
         mlir.custom_call) = saved


def capture_kernels(shape: dict, *, precision: str, chunk_size: int, backward: bool = True,
                    **config) -> list[dict]:
    """Lower forward (+ backward under jax.grad) for CUDA; one dict per Triton pallas_call, in
    order. config: KernelConfig's fields."""
    import jax
    import jax.numpy as jnp

    from kernels.gated_delta_rule.gpu.chunk import chunk_gated_delta_rule_pallas_gpu
    from kernels.gated_delta_rule.gpu.config import KernelConfig

    B, T, H, HV, K, V = (shape[k] for k in SHAPE_KEYS)
    sds = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
    args = (sds(B, T, H, K), sds(B, T, H, K), sds(B, T, HV, V), sds(B, T, HV), sds(B, T, HV),
            sds(B, HV, K, V))

    def loss(q, k, v, g, beta, s0):
        o, S = chunk_gated_delta_rule_pallas_gpu(
            q, k, v, g, beta, initial_state=s0, chunk_size=chunk_size, precision=precision,
            config=KernelConfig(**config))
        return jnp.sum(o) + jnp.sum(S)

    fn = jax.grad(loss, argnums=tuple(range(6))) if backward else loss
    with _capture_triton_modules() as kernels:
        jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",))
    if not kernels:
        raise RuntimeError("no Triton kernel was lowered; at precision 'default' with chunk "
                           "size 64 most kernels are Mosaic GPU")
    return kernels


def compile_kernels(kernels: list[dict], triton_python: str, capability: int = 90,
                    dump_dir=None) -> dict:
    """Compile in the Triton venv (subprocess); returns the child's JSON. dump_dir: where each
    kernel's TTGIR goes (NN_name.ttgir), to read its layouts and conversions."""
    if not os.path.exists(triton_python):
        raise FileNotFoundError(f"no Triton venv python at {triton_python}; see this module's "
                                "docstring for the setup commands")
    with tempfile.TemporaryDirectory(prefix="triton_resources_") as tmp:
        manifest = dict(capability=capability, cache_dir=os.path.join(tmp, "cache"), kernels=[],
                        dump_dir=dump_dir and os.path.abspath(dump_dir))
        for i, k in enumerate(kernels):
            path = os.path.join(tmp, f"{i:02d}_{k['name']}.ttir")
            with open(path, "w") as f:
                f.write(k["ttir"])
            manifest["kernels"].append(dict(name=k["name"], ttir_path=path,
                                            num_warps=k["num_warps"],
                                            num_stages=k["num_stages"]))
        manifest_path = os.path.join(tmp, "manifest.json")
        with open(manifest_path, "w") as f:
            json.dump(manifest, f)
        proc = subprocess.run([triton_python, CHILD, manifest_path], capture_output=True,
                              text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"triton_compile_child.py failed ({proc.returncode}):\n"
                           f"{proc.stderr[-4000:]}")
    return json.loads(proc.stdout)


def format_table(rows: list[dict], limit: int = SMEM_LIMIT_SM90) -> str:
    """rows: {case, name, num_warps, num_stages, shared, regs, spill_stores, spill_loads, error;
    optionally converts}."""
    head = ("case", "kernel", "warps", "stages", "shared B", "limit", "fits", "regs",
            "spill st/ld B", "converts")
    lines = []
    for r in rows:
        if r.get("error"):
            first = r["error"].strip().splitlines()[0][:80]
            lines.append((r["case"], r["name"], str(r["num_warps"]), str(r["num_stages"]),
                          "ERROR", str(limit), "?", "-", first, "-"))
            continue
        fits = "yes" if r["shared"] <= limit else "NO"
        lines.append((r["case"], r["name"], str(r["num_warps"]), str(r["num_stages"]),
                      str(r["shared"]), str(limit), fits, str(r["regs"]),
                      f"{r['spill_stores']}/{r['spill_loads']}", str(r.get("converts", "-"))))
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(l) for l in lines])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", action="append", required=True, type=parse_shape,
                   help="B=..,T=..,H=..,HV=..,K=..,V=.. (repeat for several)")
    p.add_argument("--precision", choices=("highest", "default"), default="highest")
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--forward-only", action="store_true", help="no jax.grad: forward kernels")
    p.add_argument("--num-warps", type=int, default=None, help="state forward's warps")
    p.add_argument("--num-warps-bwd", type=int, default=None, help="dh and dqk warps (4)")
    p.add_argument("--num-warps-prep", type=int, default=None, help="prep kernels' warps (4)")
    p.add_argument("--num-stages", type=int, default=None)
    p.add_argument("--block-v", type=int, default=None, help="the state pass's V tile")
    p.add_argument("--block-d", type=int, default=None, help="the prep's K/V tile (64)")
    p.add_argument("--triton-python", default=DEFAULT_TRITON_PYTHON)
    p.add_argument("--out", help="write every row (and the Triton/ptxas versions) as JSON")
    p.add_argument("--dump-ttgir", metavar="DIR", help="write each kernel's TTGIR there")
    a = p.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    kw = {k: v for k, v in dict(num_warps=a.num_warps, num_warps_bwd=a.num_warps_bwd,
                                 num_warps_prep=a.num_warps_prep, num_stages=a.num_stages,
                                 block_v=a.block_v, block_d=a.block_d).items()
          if v is not None}
    rows, versions = [], {}
    for shape in a.shape:
        kernels = capture_kernels(shape, precision=a.precision, chunk_size=a.chunk_size,
                                  backward=not a.forward_only, **kw)
        if a.dump_ttgir:
            os.makedirs(a.dump_ttgir, exist_ok=True)
        result = compile_kernels(kernels, a.triton_python, dump_dir=a.dump_ttgir)
        versions = dict(triton=result["triton"], ptxas=result["ptxas"])
        for k, r in zip(kernels, result["kernels"]):
            rows.append(dict(r, case=shape_label(shape), grid=k["grid"]))
    print(f"sm_90, triton {versions['triton']}, ptxas {versions['ptxas']}, precision="
          f"{a.precision}, C={a.chunk_size}, "
          f"{'forward' if a.forward_only else 'forward+backward'}")
    print(format_table(rows))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(dict(versions, precision=a.precision, chunk_size=a.chunk_size,
                           forward_only=a.forward_only, limit=SMEM_LIMIT_SM90, kernels=rows),
                      f, indent=1)
    return 1 if any(r.get("error") or r["shared"] > SMEM_LIMIT_SM90 for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
