"""Build a token store from a source: tokenize, order, split, shard, checksum, rename.

Layout of a store directory (all token files little-endian uint16, or uint32 for vocab > 65536):

    manifest.json                    written last; lists every other file with size and sha256
    tokenizer.model                  copy of the SentencePiece model (absent for the byte vocab),
    or tokenizer.json                or of a Hugging Face tokenizer (its eos/pad in the manifest)
    train/tokens-00000.bin ...       the training stream, in shards of `shard_tokens` tokens
    train/doc_offsets.npy            int64 [n_docs + 1]: doc i is stream[off[i]:off[i+1]], EOS last
    train/doc_bytes.npy              int64 [n_docs]: UTF-8 bytes of each document's text
    val/<name>/...                   the same for each validation set

Every stream is `EOS doc_0 EOS doc_1 EOS ... doc_n EOS`: each document is preceded by an EOS
(its "BOS") and followed by one, so every document token, and every document's end, is a target.

Order and split depend only on the *set* of documents, never on the order a source yields them:
documents are sorted by sha256 of their UTF-8 text, exact duplicates (same hash) and empty
documents are dropped, and a document is held out for validation when the first 8 bytes of its
hash, as an integer, are below val_fraction * 2**64. The held-out document goes to the
validation set named by its group (the pycode family, or "val").

Atomicity: everything is written into `DIR.tmp-<pid>`; manifest.json is written last, then the
directory is renamed to DIR (an existing store is first renamed to `DIR.old-<pid>`, then
deleted). An interrupted build leaves only a `.tmp-<pid>` directory, which never opens as a
store; the next build deletes such directories of dead processes and restarts from scratch.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from hybrid_jax.data.vocab import Tokenizer

FORMAT = "hybrid-jax-token-store"
FORMAT_VERSION = 1
DEFAULT_SHARD_TOKENS = 1 << 26  # 128 MiB per uint16 shard
_BATCH_BYTES = 4 << 20  # text tokenized per encode call
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

ProgressFn = Callable[[str, int], None]


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def split_threshold(val_fraction: float) -> int:
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    return int(val_fraction * 2**64)


def is_validation(doc_sha256: bytes, threshold: int) -> bool:
    return int.from_bytes(doc_sha256[:8], "big") < threshold


class _ShardWriter:
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


def _staging_dirs(out: Path, tag: str) -> list[tuple[Path, int]]:
    found = []
    for p in out.parent.glob(f"{out.name}.{tag}-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit():
            found.append((p, int(pid)))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale(out: Path) -> None:
    for tag in ("tmp", "old"):
        for path, pid in _staging_dirs(out, tag):
            if pid != os.getpid() and _alive(pid):
                raise RuntimeError(f"another build (pid {pid}) is writing {path}")
            shutil.rmtree(path)


def _versions() -> dict:
    import hybrid_jax

    versions = {"python": platform.python_version(), "numpy": np.__version__,
                "hybrid_jax": hybrid_jax.__version__, "platform": platform.platform()}
    for mod in ("sentencepiece", "tokenizers", "tensorflow", "tensorflow_datasets", "seqio"):
        if mod in sys.modules:
            versions[mod] = getattr(sys.modules[mod], "__version__", "unknown")
    return versions


def _write_set(directory: Path, raw: np.ndarray, table: list[tuple[int, int, int]], eos: int,
               dtype: np.dtype, shard_tokens: int) -> dict:
    """Write `EOS doc EOS doc ... EOS` for docs given as (raw offset, n tokens, n bytes)."""
    writer = _ShardWriter(directory, dtype, shard_tokens)
    eos_1 = np.array([eos], dtype)
    writer.write(eos_1)
    offsets, nbytes = np.empty(len(table) + 1, np.int64), np.empty(len(table), np.int64)
    offsets[0] = pos = 1
    for i, (start, length, n_bytes) in enumerate(table):
        writer.write(raw[start:start + length])
        writer.write(eos_1)
        pos += length + 1
        offsets[i + 1], nbytes[i] = pos, n_bytes
    shards = writer.close()
    np.save(directory / "doc_offsets.npy", offsets)
    np.save(directory / "doc_bytes.npy", nbytes)
    return {"tokens": int(pos), "documents": len(table), "bytes": int(nbytes.sum()),
            "shards": shards}


def _file_entries(root: Path) -> dict:
    entries = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "manifest.json"):
        entries[path.relative_to(root).as_posix()] = {
            "bytes": path.stat().st_size, "sha256": _sha256_file(path)}
    return entries


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def build_store(source, tokenizer: Tokenizer, out: str | Path, *, val_fraction: float = 0.01,
                shard_tokens: int = DEFAULT_SHARD_TOKENS, num_threads: int = 2,
                on_progress: ProgressFn | None = None) -> dict:
    """Tokenize `source` into a store at `out`; returns the manifest. See the module docstring."""
    out = Path(out).absolute()
    if shard_tokens < 1:
        raise ValueError(f"shard_tokens must be positive, got {shard_tokens}")
    if out.exists() and not (out / "manifest.json").is_file() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not a token store; refusing to replace it")
    threshold = split_threshold(val_fraction)
    for group in source.groups:
        if not _NAME.match(group):
            raise ValueError(f"validation set name {group!r} is not a safe file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(out)
    stage = out.parent / f"{out.name}.tmp-{os.getpid()}"
    stage.mkdir()
    try:
        manifest = _build(source, tokenizer, stage, threshold, val_fraction, shard_tokens,
                          num_threads, on_progress or (lambda stage_name, n: None))
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = out.parent / f"{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    stage.rename(out)
    if old.exists():
        shutil.rmtree(old)
    return manifest


def _build(source, tokenizer: Tokenizer, stage: Path, threshold: int, val_fraction: float,
           shard_tokens: int, num_threads: int, progress: ProgressFn) -> dict:
    t0 = time.perf_counter()
    dtype = token_dtype(tokenizer.vocab_size)

    # Phase 1: tokenize in source order into raw.bin; keep (sha256, group, offset, len, bytes).
    docs: list[tuple[bytes, str, int, int, int]] = []
    n_empty, raw_len = 0, 0
    pending: list = []
    with open(stage / "raw.bin", "wb") as raw_file:
        def flush():
            nonlocal raw_len
            need = [d for d in pending if d.tokens is None]
            encoded = iter(tokenizer.encode_batch([d.text for d in need], num_threads))
            for doc in pending:
                ids = np.asarray(doc.tokens if doc.tokens is not None else next(encoded), dtype)
                data = doc.text.encode("utf-8")
                if ids.size and int(ids.max()) >= tokenizer.vocab_size:
                    raise ValueError(f"token id {int(ids.max())} >= vocab_size {tokenizer.vocab_size}")
                raw_file.write(ids.tobytes())
                docs.append((hashlib.sha256(data).digest(), doc.group, raw_len, ids.size, len(data)))
                raw_len += ids.size
            pending.clear()
            progress("tokenized", len(docs))

        pending_bytes = 0
        for doc in source.documents():
            if not doc.text:
                n_empty += 1
                continue
            if doc.group not in source.groups:
                raise ValueError(f"document group {doc.group!r} not among {source.groups}")
            pending.append(doc)
            pending_bytes += len(doc.text)
            if pending_bytes >= _BATCH_BYTES:
                flush()
                pending_bytes = 0
        flush()
    raw = (np.memmap(stage / "raw.bin", dtype, "r") if raw_len else np.zeros(0, dtype))

    # Phase 2: order by hash, drop duplicates, split, write the sets.
    docs.sort(key=lambda d: (d[0], d[1]))
    unique, n_dup = [], 0
    for d in docs:
        if unique and unique[-1][0] == d[0]:
            n_dup += 1
            continue
        unique.append(d)
    train = [d[2:] for d in unique if not is_validation(d[0], threshold)]
    val = {g: [d[2:] for d in unique if d[1] == g and is_validation(d[0], threshold)]
           for g in source.groups}
    if not train:
        raise ValueError(f"no training documents ({len(unique)} documents, val_fraction "
                         f"{val_fraction})")
    empty_val = [g for g, table in val.items() if not table]
    if empty_val:
        warnings.warn(f"no held-out documents for validation set(s) {empty_val} at val_fraction "
                      f"{val_fraction}; they are left out of the store", stacklevel=3)
    token_nbytes = tokenizer.token_nbytes
    # Whether per-token byte counts add up to each document's bytes (validation_bytes needs it
    # to count a partly covered document; true for our tokenizers, maybe not for a seqio one).
    exact = all(int(token_nbytes[raw[s:s + n]].sum()) == b for _, _, s, n, b in unique)
    manifest_sets = {"train": _write_set(stage / "train", raw, train, tokenizer.eos_id, dtype,
                                         shard_tokens)}
    progress("train written", len(train))
    validation = {g: _write_set(stage / "val" / g, raw, table, tokenizer.eos_id, dtype,
                                shard_tokens) for g, table in val.items() if table}
    del raw
    os.remove(stage / "raw.bin")
    if tokenizer.store_file is not None:
        (stage / tokenizer.store_file).write_bytes(tokenizer.model_bytes)
    progress("validation written", len(validation))
    tokenizer_record = {"kind": tokenizer.kind, "hash": tokenizer.hash,
                        "vocab_size": tokenizer.vocab_size, "eos_id": tokenizer.eos_id,
                        "pad_id": tokenizer.pad_id, "file": tokenizer.store_file,
                        "token_bytes_exact": exact}
    if tokenizer.kind == "hf":  # what export names in tokenizer_config.json
        tokenizer_record.update(eos_token=tokenizer.eos_token, pad_token=tokenizer.pad_token)

    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "source": source.describe(),
        "tokenizer": tokenizer_record,
        "dtype": dtype.str,
        "shard_tokens": shard_tokens,
        "split": {"val_fraction": val_fraction, "rule": "validation iff int(sha256(utf8)[:8]) "
                  "< val_fraction * 2**64; documents ordered by sha256",
                  "empty_validation_sets": empty_val},
        "documents": {"kept": len(unique), "duplicates_dropped": n_dup, "empty_dropped": n_empty},
        "train": manifest_sets["train"],
        "validation": validation,
        "files": _file_entries(stage),
        "created": {"time": datetime.now(UTC).isoformat(timespec="seconds"), **_versions()},
        "build_seconds": round(time.perf_counter() - t0, 3),
    }
    tmp = stage / "manifest.json.partial"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.rename(stage / "manifest.json")
    progress("manifest written", 1)
    return manifest
