"""Flat token files read in place, local or gs://: the stream of an OLMo-format corpus.

A token file is a raw little-endian array of token ids (uint32 or uint16) with no header, the
way OLMo-core and the Dolma toolkit write them (a `.npy` suffix, but `np.memmap`, not
`np.load`). Documents are separated by the EOS id: each document is followed by one EOS.

`TokenFiles` concatenates a list of such files behind one virtual EOS, so its stream is
`EOS doc_0 EOS doc_1 EOS ... doc_n EOS`, exactly the stream a built token store holds
(build.py), and it offers the same reading interface as store.TokenArray (`read`, `gather`,
`doc_offsets`, `doc_bytes`). Nothing is copied: local files are memory-mapped; gs:// objects
are read with one ranged request per window (the generation seen when the file list was made
is pinned, so a replaced object is an error, not a silent change of data).
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from hybrid_jax.data.errors import StoreError

NPY_MAGIC = b"\x93NUMPY"
_SCAN_TOKENS = 1 << 24  # tokens read per request when scanning for document boundaries
_GCS_THREADS = 16  # concurrent ranged reads for one batch


class TokenFileError(StoreError):
    """A token file is missing, has a header, a ragged size, or does not end in EOS."""


class LocalTokenFile:
    def __init__(self, path: str, dtype: np.dtype):
        self.name, self.dtype = path, dtype
        self._size = os.path.getsize(path)

    @property
    def nbytes(self) -> int:
        return self._size

    @functools.cached_property
    def _tokens(self) -> np.ndarray:
        return np.memmap(self.name, self.dtype, "r", shape=(self._size // self.dtype.itemsize,))

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.array(self._tokens[start:stop])

    def head(self, n_bytes: int) -> bytes:
        with open(self.name, "rb") as f:
            return f.read(n_bytes)


class GcsTokenFile:
    """One object, read with ranged requests of one generation (a replaced object is an error,
    not a silent change of data)."""

    def __init__(self, url: str, size: int, generation: int, dtype: np.dtype):
        self.name, self.dtype = url, dtype
        self._size, self._generation = size, generation

    @property
    def nbytes(self) -> int:
        return self._size

    def _range(self, first: int, last: int) -> bytes:
        from hybrid_jax.storage import gcs

        return gcs.read_range(self.name, first, last + 1, self._generation)

    def read(self, start: int, stop: int) -> np.ndarray:
        if stop <= start:
            return np.zeros(0, self.dtype)
        size = self.dtype.itemsize
        return np.frombuffer(self._range(start * size, stop * size - 1), self.dtype).copy()

    def head(self, n_bytes: int) -> bytes:
        return self._range(0, min(n_bytes, self._size) - 1) if self._size else b""


def open_token_file(path: str | os.PathLike, dtype: np.dtype) -> LocalTokenFile | GcsTokenFile:
    """A local file (memory-mapped) or a gs:// object (ranged reads of the generation seen
    now); TokenFileError if there is none."""
    text = os.fspath(path)
    if text.startswith("gs://"):
        from hybrid_jax.storage import gcs

        seen = gcs.stat(text)
        if seen is None:
            raise TokenFileError(f"{text}: no such object")
        return GcsTokenFile(text, seen.size, seen.generation, dtype)
    if not os.path.isfile(text):
        raise TokenFileError(f"{text}: no such file")
    return LocalTokenFile(text, dtype)


def list_token_files(patterns: list[str], dtype: np.dtype) -> list[LocalTokenFile | GcsTokenFile]:
    """Files matching each pattern (sorted within a pattern; patterns in the order given).

    Local patterns are globs (`**` recursive). gs:// patterns are fnmatch patterns on object
    names, listed under the prefix before the first wildcard (there `*` also matches '/').
    A pattern matching nothing, or a file listed twice, is an error.
    """
    files: list = []
    for pattern in patterns:
        found = _list_gcs(pattern, dtype) if pattern.startswith("gs://") else [
            LocalTokenFile(os.path.abspath(p), dtype)
            for p in sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
            if os.path.isfile(p)]
        if not found:
            raise TokenFileError(f"{pattern!r} matches no file")
        files += found
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise TokenFileError(f"token file listed twice: {twice[0]}")
    return files


def _list_gcs(pattern: str, dtype: np.dtype) -> list[GcsTokenFile]:
    from hybrid_jax.storage import gcs

    bucket, name = gcs.split(pattern)
    cut = min([name.index(c) for c in "*[" if c in name], default=len(name))
    blobs = gcs.client().list_blobs(bucket, prefix=name[:cut])
    return [GcsTokenFile(f"gs://{bucket}/{b.name}", int(b.size), int(b.generation), dtype)
            for b in sorted(blobs, key=lambda b: b.name)
            if not b.name.endswith("/") and fnmatch.fnmatchcase(b.name, name)]


def read_span(files: list, file_starts: np.ndarray, start: int, end: int) -> list[np.ndarray]:
    """The pieces of stream positions [start, end) of `files`, file i starting at stream
    position file_starts[i] (file_starts[-1]: the end of the last file)."""
    parts, pos = [], start
    while pos < end:
        i = int(np.searchsorted(file_starts, pos, "right")) - 1
        local = pos - int(file_starts[i])
        take = min(end - pos, int(file_starts[i + 1]) - pos)
        parts.append(files[i].read(local, local + take))
        pos += take
    return parts


def gather_windows(read: Callable[[int, int], np.ndarray], starts_B, length: int,
                   dtype: np.dtype, remote: bool) -> np.ndarray:
    """[B, length] windows `read(start, length)`: one read per row; rows of gs:// files are
    read 16 at a time (each a ranged request, mostly waiting)."""
    starts_B = np.asarray(starts_B, np.int64).tolist()
    if remote and len(starts_B) > 1:
        rows = list(_reader_pool().map(lambda s: read(s, length), starts_B))
    else:
        rows = [read(s, length) for s in starts_B]
    return np.stack(rows) if rows else np.zeros((0, length), dtype)


@functools.cache
def _reader_pool() -> ThreadPoolExecutor:
    """Long-lived threads: each keeps its own GCS client (storage/gcs.py) across batches."""
    return ThreadPoolExecutor(_GCS_THREADS, thread_name_prefix="token-reads")


class TokenFiles:
    """`EOS` + the concatenation of `files`: one stream with store.TokenArray's interface."""

    def __init__(self, files: list, dtype: np.dtype, eos_id: int, vocab_size: int,
                 token_nbytes: Callable[[], np.ndarray]):
        if not files:
            raise TokenFileError("no token files")
        self.files, self.dtype = files, dtype
        self.eos_id, self.vocab_size = eos_id, vocab_size
        self._token_nbytes = token_nbytes
        for f in files:
            if f.nbytes % dtype.itemsize:
                raise TokenFileError(f"{f.name}: {f.nbytes} bytes is not a whole number of "
                                     f"{dtype.name} tokens; wrong dtype?")
        sizes = np.array([f.nbytes // dtype.itemsize for f in files], np.int64)
        # stream position of each file's first token; position 0 is the virtual EOS
        self.file_starts = np.concatenate([[1], 1 + np.cumsum(sizes)])
        self.n_tokens = int(self.file_starts[-1])

    def __len__(self) -> int:
        return self.n_tokens

    def check(self) -> None:
        """Each file is headerless, non-empty and ends with EOS (one small read per file)."""
        for i, f in enumerate(self.files):
            if f.nbytes == 0:
                raise TokenFileError(f"{f.name}: empty token file")
            if f.head(len(NPY_MAGIC)) == NPY_MAGIC:
                raise TokenFileError(f"{f.name}: a .npy file with a header; OLMo token files "
                                     "are raw arrays (np.memmap), write them without np.save")
            last = int(self.file_starts[i + 1]) - int(self.file_starts[i]) - 1
            tail = int(f.read(last, last + 1)[0])
            if tail != self.eos_id:
                raise TokenFileError(f"{f.name}: last token {tail} is not the EOS id "
                                     f"{self.eos_id}; wrong eos, dtype or file?")

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length), across file boundaries."""
        end = start + length
        if start < 0 or end > self.n_tokens:
            raise IndexError(f"[{start}, {end}) outside [0, {self.n_tokens})")
        parts, pos = [], start
        if pos == 0 and end > 0:
            parts.append(np.array([self.eos_id], self.dtype))
            pos = 1
        parts += read_span(self.files, self.file_starts, pos, end)
        if not parts:
            return np.zeros(0, self.dtype)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def gather(self, starts_B: np.ndarray, length: int) -> np.ndarray:
        """[B, length] windows starting at starts_B; ids must be below vocab_size."""
        out_BT = gather_windows(self.read, starts_B, length, self.dtype,
                                isinstance(self.files[0], GcsTokenFile))
        if out_BT.size and int(out_BT.max()) >= self.vocab_size:
            raise TokenFileError(f"token id {int(out_BT.max())} >= vocab_size {self.vocab_size}"
                                 " in a training window; wrong tokenizer or dtype?")
        return out_BT

    def _scan(self) -> tuple[np.ndarray, np.ndarray]:
        """(doc_offsets, doc_bytes) from one sequential pass over every file."""
        nbytes_V = self._token_nbytes()
        ends, doc_bytes, carry = [np.array([1], np.int64)], [], 0
        for i, f in enumerate(self.files):
            first, size = int(self.file_starts[i]), int(self.file_starts[i + 1] - self.file_starts[i])
            for a in range(0, size, _SCAN_TOKENS):
                chunk = f.read(a, min(size, a + _SCAN_TOKENS))
                if chunk.size and int(chunk.max()) >= self.vocab_size:
                    raise TokenFileError(f"{f.name}: token id {int(chunk.max())} >= vocab_size "
                                         f"{self.vocab_size}; wrong tokenizer or dtype?")
                eos = np.flatnonzero(chunk == self.eos_id)
                csum = np.concatenate([[0], np.cumsum(nbytes_V[chunk])])
                cut = np.concatenate([[0], eos + 1])
                per_doc = np.diff(csum[cut])
                if per_doc.size:
                    per_doc[0] += carry
                    doc_bytes.append(per_doc)
                    carry = 0
                carry += int(csum[-1] - csum[cut[-1]])
                ends.append(first + a + eos + 1)
        if carry:
            raise TokenFileError(f"{self.files[-1].name}: the last document has no EOS")
        return np.concatenate(ends), (np.concatenate(doc_bytes) if doc_bytes
                                      else np.zeros(0, np.int64))

    @functools.cached_property
    def _table(self) -> tuple[np.ndarray, np.ndarray]:
        return self._scan()

    @property
    def doc_offsets(self) -> np.ndarray:
        """int64 [n_docs + 1]: document i (with its trailing EOS) is [off[i], off[i+1])."""
        return self._table[0]

    @property
    def doc_bytes(self) -> np.ndarray:
        """UTF-8 bytes of each document by the tokenizer's per-token byte counts."""
        return self._table[1]

    @property
    def n_documents(self) -> int:
        return len(self.doc_offsets) - 1

    @property
    def n_bytes(self) -> int:
        return int(self.doc_bytes.sum())
