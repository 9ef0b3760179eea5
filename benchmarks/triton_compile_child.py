"""Compile captured Triton-IR (TTIR) kernels for a CUDA target with pip's `triton`; no GPU needed.

Runs in the separate Triton virtualenv (see `benchmarks/triton_resources.py`, which writes the
manifest and calls this script), never in the project venv: jaxlib's Triton and pip's must not
share a process. Prints one JSON object on stdout:
    {"triton": version, "ptxas": version line, "kernels": [{name, num_warps, num_stages,
     shared, regs, spill_stores, spill_loads, converts, error}]}

`shared` is Triton's own allocation (metadata.shared, bytes of dynamic shared memory the launch
asks for), the number XLA checks against the card's opt-in limit. Registers and spills come from
the ptxas -v log of Triton's own ptxas run (the one bundled in the wheel). `converts` counts
`ttg.convert_layout` ops in the TTGIR: each moves a tensor between thread layouts, most through
shared memory with a barrier (the ninth session tied a prep forward slowdown to three of them).

Usage: python triton_compile_child.py MANIFEST.json
    MANIFEST = {"capability": 90, "cache_dir", "dump_dir" (optional: each kernel's TTGIR goes
                there), "kernels": [{"name", "ttir_path", "num_warps", "num_stages"}]}
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import traceback

_REGS = re.compile(r"Used (\d+) registers")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def parse_ptxas_log(log: str) -> dict:
    """Registers and spill bytes of the (single) kernel in a `ptxas -v` log."""
    regs, spills = _REGS.findall(log), _SPILLS.findall(log)
    if not regs or not spills:
        raise ValueError(f"no register/spill lines in the ptxas log:\n{log[-2000:]}")
    return dict(regs=int(regs[-1]), spill_stores=int(spills[-1][0]),
                spill_loads=int(spills[-1][1]))


def count_converts(ttgir: str) -> int:
    """Layout conversions in a TTGIR module's text (one `ttg.convert_layout` op each)."""
    return len(re.findall(r"= ttg\.convert_layout ", ttgir))


def compile_one(kernel: dict, capability: int, dump_dir=None) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget

    out = dict(name=kernel["name"], num_warps=kernel["num_warps"],
               num_stages=kernel["num_stages"], shared=None, regs=None, spill_stores=None,
               spill_loads=None, converts=None, error=None)
    # Triton prints the ptxas -v log on stdout when asked to; catch it rather than run ptxas
    # a second time (minutes for the largest kernels).
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(
                kernel["ttir_path"], target=GPUTarget("cuda", capability, 32),
                options=dict(num_warps=kernel["num_warps"], num_stages=kernel["num_stages"]))
    except Exception as e:  # one kernel's failure must not hide the others' numbers
        out["error"] = f"{type(e).__name__}: {e}"[:4000] + "\n" + traceback.format_exc()[-2000:]
        return out
    out["shared"] = int(compiled.metadata.shared)
    out["converts"] = count_converts(compiled.asm["ttgir"])
    if dump_dir:  # named as the TTIR was: NN_kernel
        stem = os.path.splitext(os.path.basename(kernel["ttir_path"]))[0]
        with open(os.path.join(dump_dir, stem + ".ttgir"), "w") as f:
            f.write(compiled.asm["ttgir"])
    out.update(parse_ptxas_log(log.getvalue()))
    return out


def main(argv):
    # Imported here so that the parsing above is testable in the project venv, without triton.
    import triton
    from triton import knobs
    from triton.backends.nvidia.compiler import get_ptxas

    if len(argv) != 2:
        raise SystemExit(f"usage: {argv[0]} MANIFEST.json")
    with open(argv[1]) as f:
        manifest = json.load(f)
    knobs.nvidia.dump_ptxas_log = True
    # The cache would skip ptxas on a repeat and so lose the log.
    knobs.cache.dir = manifest["cache_dir"]
    capability = int(manifest.get("capability", 90))
    kernels = [compile_one(k, capability, manifest.get("dump_dir"))
               for k in manifest["kernels"]]
    ptxas = get_ptxas(capability)
    version = ptxas.version.strip().splitlines()[-1] if ptxas.version else None
    json.dump(dict(triton=triton.__version__, ptxas=version, kernels=kernels), sys.stdout)


if __name__ == "__main__":
    main(sys.argv)
