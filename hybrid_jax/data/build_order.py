"""A build's second phase: order by hash, drop duplicates, split, write the sets.

Works from the first phase's files (build_tokenize.py: raw.bin, records.bin) with numpy arrays
of a few fields per document, never a Python object per document: while sorting, the sha256 as
four uint64 words, the group, the order and one sorted word (about 55 bytes a document, the
peak: 59 bytes a document measured at 10M documents); while writing, where each kept document's
tokens are, its bytes, and the set's doc_offsets and doc_bytes. Token data is read with pread,
a chunk at a time.

The order is the one the module docstring of build.py defines: by sha256 of the text, then by
group name, stable in source order (np.lexsort is stable), the first of equal hashes kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hybrid_jax.data.build_tokenize import RECORD

_READ_RECORDS = 1 << 20  # records read per chunk
_WRITE_TOKENS = 1 << 22  # tokens assembled per chunk when writing a set


def _read_field(path: Path, n: int, fields: list[str]) -> list[np.ndarray]:
    """Fields of every record, read in chunks (never the whole file at once)."""
    out = [np.empty(n, RECORD[f]) for f in fields]
    with open(path, "rb") as f:
        for start in range(0, n, _READ_RECORDS):
            chunk = np.fromfile(f, RECORD, min(_READ_RECORDS, n - start))
            for arr, field in zip(out, fields):
                arr[start:start + len(chunk)] = chunk[field]
    return out


def _hash_words(path: Path, n: int) -> list[np.ndarray]:
    """The sha256 of each record as four big-endian uint64 words (most significant first)."""
    words = [np.empty(n, np.uint64) for _ in range(4)]
    with open(path, "rb") as f:
        for start in range(0, n, _READ_RECORDS):
            chunk = np.fromfile(f, RECORD, min(_READ_RECORDS, n - start))
            sha = np.ascontiguousarray(chunk["sha"]).view(">u8").reshape(-1, 4)
            for k in range(4):
                words[k][start:start + len(chunk)] = sha[:, k]
    return words


def split_order(records: Path, n: int, groups: list[str], threshold: int
                ) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    """(train record indices, {group: validation record indices}, duplicates dropped)."""
    words = _hash_words(records, n)
    (group_G,) = _read_field(records, n, ["group"])
    name_rank = np.argsort(np.argsort(np.array(groups, dtype=object)))  # index -> name order
    order = np.lexsort((name_rank[group_G].astype(np.uint16), words[3], words[2], words[1],
                        words[0]))
    keep = np.ones(n, bool)
    for k in range(4):
        sorted_k = words[k][order]
        if k == 0:
            differs = sorted_k[1:] != sorted_k[:-1]
            validation = sorted_k < np.uint64(threshold)  # threshold < 2**64: val_fraction < 1
        else:
            differs |= sorted_k[1:] != sorted_k[:-1]
        del sorted_k
    if n:
        keep[1:] = differs
    del words
    group_sorted = group_G[order]
    train = order[keep & ~validation]
    val = {g: order[keep & validation & (group_sorted == i)] for i, g in enumerate(groups)}
    return train, val, int(n - keep.sum())


class ShardWriter:
    """Appends tokens to `dir/tokens-NNNNN.bin` files of at most shard_tokens each."""

    def __init__(self, directory: Path, dtype: np.dtype, shard_tokens: int):
        self.dir, self.dtype, self.shard_tokens = directory, dtype, shard_tokens
        self.shards: list[dict] = []
        self._file, self._count = None, 0
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, tokens: np.ndarray) -> None:
        tokens = np.asarray(tokens, self.dtype)
        while tokens.size:
            if self._file is None:
                name = f"tokens-{len(self.shards):05d}.bin"
                self._file, self._count = open(self.dir / name, "wb"), 0
                self.shards.append({"file": name})
            take = tokens[: self.shard_tokens - self._count]
            self._file.write(take.tobytes())
            self._count += take.size
            tokens = tokens[take.size:]
            if self._count == self.shard_tokens:
                self._finish()

    def _finish(self) -> None:
        self._file.close()
        self.shards[-1]["tokens"] = self._count
        self._file = None

    def close(self) -> list[dict]:
        if self._file is not None:
            self._finish()
        return self.shards


class SetWriter:
    """Writes `EOS doc EOS doc ... EOS` for record indices, reading tokens from raw.bin."""

    def __init__(self, stage: Path, n_records: int, dtype: np.dtype, eos: int):
        self.stage, self.dtype, self.eos = stage, dtype, eos
        self.offset, self.tokens, self.nbytes, self.exact = _read_field(
            stage / "records.bin", n_records, ["offset", "tokens", "bytes", "exact"])

    def all_exact(self, indices: list[np.ndarray]) -> bool:
        return all(bool(self.exact[i].all()) for i in indices)

    def write(self, directory: Path, index: np.ndarray, shard_tokens: int) -> dict:
        writer = ShardWriter(directory, self.dtype, shard_tokens)
        writer.write(np.array([self.eos], self.dtype))
        lens = self.tokens[index]
        offsets = np.empty(len(index) + 1, np.int64)
        offsets[0] = 1
        np.cumsum(lens + 1, out=offsets[1:])
        offsets[1:] += 1
        size = self.dtype.itemsize
        fd = os.open(self.stage / "raw.bin", os.O_RDONLY)
        try:
            a = 0
            while a < len(index):
                # documents [a, b): at least one, about _WRITE_TOKENS tokens
                b = max(a + 1, int(np.searchsorted(offsets, offsets[a] + _WRITE_TOKENS, "right")) - 1)
                b = min(b, len(index))
                buf = np.full(int(offsets[b] - offsets[a]), self.eos, self.dtype)
                pos = 0
                for start, n in zip(self.offset[index[a:b]].tolist(), lens[a:b].tolist()):
                    if n:
                        buf[pos:pos + n] = np.frombuffer(os.pread(fd, n * size, start * size),
                                                         self.dtype)
                    pos += n + 1
                writer.write(buf)
                a = b
        finally:
            os.close(fd)
        shards = writer.close()
        doc_bytes = self.nbytes[index]
        np.save(directory / "doc_offsets.npy", offsets)
        np.save(directory / "doc_bytes.npy", doc_bytes)
        return {"tokens": int(offsets[-1]), "documents": len(index), "bytes": int(doc_bytes.sum()),
                "shards": shards}
