"""Safetensors files written and read one tensor at a time.

The format (huggingface/safetensors): an 8-byte little-endian header length, a JSON header
mapping each name to {dtype, shape, data_offsets: [begin, end]} (offsets into the data that
follows), then the raw little-endian bytes. Every shape and dtype is known before any data is
written, so a writer lays the header out first and then streams each tensor in: a 7B export
holds one tensor's host copy at a time, never a second copy of the weights. Reading maps the
file and hands out views, so an import holds what it has converted so far, no more. bfloat16
goes through ml_dtypes (a dependency of jax), which numpy itself lacks.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path
from typing import Callable

import ml_dtypes
import numpy as np

DTYPES = {"F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
          "BF16": np.dtype(ml_dtypes.bfloat16), "F64": np.dtype(np.float64),
          "I64": np.dtype(np.int64), "I32": np.dtype(np.int32)}
NAMES = {v: k for k, v in DTYPES.items()}
if sys.byteorder != "little":  # arrays are written and mapped as they are in memory
    raise ImportError("hybrid_jax.hf reads and writes safetensors on little-endian hosts only")


class SafetensorsError(ValueError):
    """A file is not a safetensors file this reader takes; the message names the file."""


def write_file(path: Path, specs: list[tuple[str, tuple[int, ...], np.dtype]],
               produce: Callable[[str], np.ndarray], metadata: dict[str, str] | None = None
               ) -> None:
    """Write tensors `specs` = [(name, shape, dtype)] to `path`, asking `produce(name)` for each
    array in turn (it must match its spec). The file appears complete or not at all."""
    header: dict = {"__metadata__": dict(metadata or {})}
    offset = 0
    for name, shape, dtype in specs:
        n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        header[name] = {"dtype": NAMES[np.dtype(dtype)], "shape": list(shape),
                        "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # align the data to 8 bytes, as the reference writer does
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for name, shape, dtype in specs:
            a = np.ascontiguousarray(produce(name))
            if a.shape != tuple(shape) or a.dtype != np.dtype(dtype):
                raise ValueError(f"{name}: produced {a.dtype}{list(a.shape)}, "
                                 f"expected {np.dtype(dtype)}{list(shape)}")
            f.write(a.reshape(-1).view(np.uint8).data)  # little-endian: checked at import
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_header(path: Path) -> tuple[dict, int]:
    """(header without __metadata__, byte offset of the data) of safetensors file `path`."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise SafetensorsError(f"{path}: too short to be a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        if n > 100_000_000:
            raise SafetensorsError(f"{path}: header length {n} is implausible; not safetensors")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise SafetensorsError(f"{path}: header is not JSON ({e})") from None
    header.pop("__metadata__", None)
    for name, entry in header.items():
        if entry.get("dtype") not in DTYPES:
            raise SafetensorsError(f"{path}: tensor {name!r} has dtype {entry.get('dtype')!r}; "
                                   f"this reader takes {sorted(DTYPES)}")
    return header, 8 + n


class SafetensorsFile:
    """A safetensors file mapped read-only: `names`, `shape(name)`, and `get(name)`, an array
    view into the mapping (copy it to keep it past the file)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.header, self._start = read_header(self.path)
        self._data = np.memmap(self.path, dtype=np.uint8, mode="r")

    @property
    def names(self) -> list[str]:
        return list(self.header)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.header[name]["shape"])

    def get(self, name: str) -> np.ndarray:
        entry = self.header[name]
        begin, end = entry["data_offsets"]
        raw = self._data[self._start + begin:self._start + end]
        return raw.view(DTYPES[entry["dtype"]]).reshape(entry["shape"])
