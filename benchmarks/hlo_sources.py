"""Which source line issued each kernel of a compiled XLA program.

A profile names GPU kernels after the HLO instructions they run (`loop_add_fusion_33` runs
`%loop_add_fusion.33`). Inside CUDA graphs (XLA's command buffers, on by default on GPU) the
trace carries no op path, so a kernel cannot be traced back to the model from the trace alone.
The optimized HLO text (`jax.jit(f).lower(...).compile().as_text()`) can: each instruction has
a `stack_frame_id`, and the module's FileNames / FunctionNames / FileLocations / StackFrames
tables turn it into the Python call stack that built it.

`kernel_sources(hlo_text)` -> {kernel name: Source(op_name, frames)}, frames innermost first,
each a Frame(file, function, line). Kernels that are not HLO instructions (cuBLAS and cuDNN
kernels, Pallas kernels: their names are the library's or the kernel's own) are absent.
"""

from __future__ import annotations

import re
from typing import NamedTuple


class Frame(NamedTuple):
    file: str
    function: str
    line: int


class Source(NamedTuple):
    op_name: str              # e.g. "jit(step)/while/body/transpose(jvp())/mul"
    frames: tuple[Frame, ...]  # innermost first

    @property
    def backward(self) -> bool:
        """Whether autodiff's transpose made it (the backward pass)."""
        return "transpose(" in self.op_name


_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s")
_NUMBERED = re.compile(r"^(\d+)\s+(.*)$")


def _table(lines: list[str], title: str) -> dict[int, str]:
    """The numbered rows of one of the module's tables ("FileNames", ...), {id: rest of row}."""
    rows, inside = {}, False
    for line in lines:
        if line.strip() == title:
            inside = True
            continue
        if inside:
            m = _NUMBERED.match(line.strip())
            if not m:
                break
            rows[int(m.group(1))] = m.group(2)
    return rows


def _fields(row: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"(\w+)=(-?\d+)", row)}


def kernel_name(instruction: str) -> str:
    """The name a GPU trace gives the kernel of an HLO instruction."""
    return instruction.replace(".", "_").replace("-", "_")


def kernel_sources(hlo_text: str) -> dict[str, Source]:
    lines = hlo_text.splitlines()
    files = {i: r.strip('"') for i, r in _table(lines, "FileNames").items()}
    functions = {i: r.strip('"') for i, r in _table(lines, "FunctionNames").items()}
    locations = {}
    for i, row in _table(lines, "FileLocations").items():
        f = _fields(row)
        locations[i] = Frame(files.get(f.get("file_name_id"), "?"),
                             functions.get(f.get("function_name_id"), "?"), f.get("line", 0))
    frames = {i: _fields(row) for i, row in _table(lines, "StackFrames").items()}

    def stack(frame_id: int) -> tuple[Frame, ...]:
        out, seen = [], set()
        while frame_id in frames and frame_id not in seen:
            seen.add(frame_id)
            row = frames[frame_id]
            out.append(locations.get(row.get("file_location_id"), Frame("?", "?", 0)))
            # parent ids are written one higher than the frame they name; 0 is the root
            frame_id = row.get("parent_frame_id", 0) - 1
        return tuple(out)

    sources = {}
    for line in lines:
        m = _INSTR.match(line)
        if not m or "metadata={" not in line:
            continue
        meta = line[line.index("metadata={"):]
        op = re.search(r'op_name="([^"]*)"', meta)
        sid = re.search(r"stack_frame_id=(\d+)", meta)
        sources.setdefault(kernel_name(m.group(1)), Source(
            op.group(1) if op else "", stack(int(sid.group(1))) if sid else ()))
    return sources


def innermost(source: Source, root: str) -> Frame | None:
    """The innermost frame in a file under `root` (a path prefix: our code, not JAX's)."""
    return next((f for f in source.frames if f.file.startswith(root)), None)
