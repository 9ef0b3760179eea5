"""Registers and spills of each Mosaic GPU kernel of the gated delta rule, as ptxas reports
them: the op (forward+backward, `pallas_gpu` at precision "default") is compiled and run once
per shape, each in a child process with MOSAIC_GPU_DUMP_PTXAS=1, and ptxas' report becomes one row
per kernel and shape.

    python benchmarks/gdn_kernel_ptxas.py --out /tmp/ptxas     # on a GPU machine

Why: these kernels run one warpgroup a program, so a kernel at 255 registers a thread spills
to local memory, and ptxas then serializes its wgmmas where a spill reads an accumulator
(its warning C7514, the "serialized" column). Neither shows in a timing; both show here.
Writes OUT/gdn_ptxas.json, OUT/gdn_ptxas.md and the raw report OUT/ptxas.log.
"""

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from benchmarks.gdn_kernel import label, parse_shape  # noqa: E402
from benchmarks.gdn_kernel_variants import SHAPES  # noqa: E402

_CHILD = """
import sys
sys.path.insert(0, {root!r})
import jax
from benchmarks.gdn_kernel import jax_fn, jax_inputs, parse_shape
if jax.devices()[0].platform != "gpu":
    sys.exit("gdn_kernel_ptxas needs a CUDA GPU: ptxas runs only where Mosaic GPU compiles")
(q, k, v, g, b), do = jax_inputs(parse_shape({shape!r}))
jax.block_until_ready(jax_fn("pallas_gpu_default", "fwd+bwd")(q, k, v, g, b, do))
"""

_ENTRY = re.compile(r"Function properties for (\S+)")
_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")
_SERIAL = re.compile(r"\(C7514\).*in the function '([^']+)'")


def parse(text, shape):
    """ptxas -v output of one child -> rows: shape, kernel, registers, spill_stores,
    spill_loads, serialized (ptxas' C7514 named the kernel)."""
    serialized = set(_SERIAL.findall(text))
    rows, kernel = [], None
    for line in text.splitlines():
        if m := _ENTRY.search(line):
            kernel = m.group(1)
            rows.append({"shape": shape, "kernel": kernel, "registers": None,
                         "spill_stores": None, "spill_loads": None,
                         "serialized": kernel in serialized})
        elif kernel and (m := _SPILL.search(line)):
            rows[-1]["spill_stores"], rows[-1]["spill_loads"] = map(int, m.groups())
        elif kernel and (m := _REGS.search(line)):
            rows[-1]["registers"] = int(m.group(1))
            kernel = None
    return rows


def table(rows):
    lines = ["| shape | kernel | registers | spill stores / loads (bytes) | wgmmas serialized |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        shape = label(parse_shape(r["shape"])) if r["shape"] else "?"
        name = r["kernel"].removesuffix("_mosaic_gpu_kernel")
        lines.append(f"| {shape} | {name} | {r['registers']} | {r['spill_stores']} / "
                     f"{r['spill_loads']} | {'yes (C7514)' if r['serialized'] else 'no'} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", action="append", help="B=..,T=..,H=..,K=..,V=..[,HV=..] "
                   "(default: the four benchmark shapes)")
    p.add_argument("--timeout", type=float, default=120, help="seconds for each child")
    p.add_argument("--out", required=True, help="directory for gdn_ptxas.json, .md, ptxas.log")
    args = p.parse_args(argv)
    shapes = args.shape or list(SHAPES)
    for text in shapes:
        parse_shape(text)  # a malformed shape fails here, not in the child
    env = {**os.environ, "MOSAIC_GPU_DUMP_PTXAS": "1"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, logs = [], []
    for shape in shapes:  # a child per shape: ptxas' report cannot then mix two shapes
        child = subprocess.run([sys.executable, "-c", _CHILD.format(root=str(REPO_ROOT),
                                                                     shape=shape)],
                               env=env, capture_output=True, text=True, timeout=args.timeout)
        log = child.stdout + child.stderr
        logs.append(f"@@ {shape}\n{log}")
        (out / "ptxas.log").write_text("\n".join(logs))
        if child.returncode:
            last = log.strip().splitlines()[-1] if log.strip() else ""
            sys.exit(f"gdn_kernel_ptxas: the child for {shape} failed ({child.returncode}): "
                     f"{last}")
        found = parse(log, shape)
        if not found:
            sys.exit(f"gdn_kernel_ptxas: ptxas reported no kernel for {shape} (was "
                     f"MOSAIC_GPU_DUMP_PTXAS honoured?); see {out / 'ptxas.log'}")
        rows += found
    (out / "gdn_ptxas.json").write_text(json.dumps({"rows": rows}, indent=1))
    text = table(rows)
    (out / "gdn_ptxas.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
