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

Streaming: the source is tokenized in batches into two flat files (build_tokenize.py), then
ordered, split and written from numpy arrays of a few fields per document (build_order.py), so
memory grows by tens of bytes per document, not by a Python object per document.

Atomicity and resume: everything is written into `DIR.build/`, held by an flock on its `lock`
file (released by the kernel when the build dies); manifest.json is written last, then the
directory is renamed to DIR (an existing store is first renamed to `DIR.old-<pid>`, then
deleted). An interrupted build leaves only `DIR.build/`, which never opens as a store; the next
build with the same tokenizer resumes its tokenizing from the last checkpoint and redoes the
(fast) ordering and writing. A build stopped by an exception keeps `DIR.build/` too.
"""

from __future__ import annotations

import fcntl
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

from hybrid_jax.data.build_order import SetWriter, split_order
from hybrid_jax.data.build_tokenize import CHECKPOINT, SourceChanged, Tokenized, tokenize
from hybrid_jax.data.vocab import Tokenizer

FORMAT = "hybrid-jax-token-store"
FORMAT_VERSION = 1
DEFAULT_SHARD_TOKENS = 1 << 26  # 128 MiB per uint16 shard
_BATCH_BYTES = 4 << 20  # text tokenized per encode call
_LOCK = "lock"
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
    for path, pid in _staging_dirs(out, "old"):
        if pid != os.getpid() and _alive(pid):
            raise RuntimeError(f"another build (pid {pid}) is replacing {out}")
        shutil.rmtree(path)


def _versions() -> dict:
    import hybrid_jax

    versions = {"python": platform.python_version(), "numpy": np.__version__,
                "hybrid_jax": hybrid_jax.__version__, "platform": platform.platform()}
    for mod in ("sentencepiece", "tokenizers", "tensorflow", "tensorflow_datasets", "seqio"):
        if mod in sys.modules:
            versions[mod] = getattr(sys.modules[mod], "__version__", "unknown")
    return versions


def _file_entries(root: Path) -> dict:
    entries = {}
    for path in sorted(p for p in root.rglob("*")
                       if p.is_file() and p.name not in ("manifest.json", _LOCK)):
        entries[path.relative_to(root).as_posix()] = {
            "bytes": path.stat().st_size, "sha256": _sha256_file(path)}
    return entries


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def build_store(source, tokenizer: Tokenizer, out: str | Path, *, val_fraction: float = 0.01,
                shard_tokens: int = DEFAULT_SHARD_TOKENS, num_threads: int = 2, processes: int = 1,
                batch_bytes: int = _BATCH_BYTES, on_progress: ProgressFn | None = None,
                progress_line: bool = False) -> dict:
    """Tokenize `source` into a store at `out`; returns the manifest. See the module docstring.

    processes > 1 tokenizes in that many worker processes (same output); progress_line prints
    throughput and, where the source knows its size, an ETA to stderr."""
    out = Path(out).absolute()
    if shard_tokens < 1:
        raise ValueError(f"shard_tokens must be positive, got {shard_tokens}")
    if processes < 1 or batch_bytes < 1:
        raise ValueError(f"processes and batch_bytes must be positive, got {processes}, "
                         f"{batch_bytes}")
    if out.exists() and not (out / "manifest.json").is_file() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not a token store; refusing to replace it")
    threshold = split_threshold(val_fraction)
    for group in source.groups:
        if not _NAME.match(group):
            raise ValueError(f"validation set name {group!r} is not a safe file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(out)
    stage = out.parent / f"{out.name}.build"
    stage.mkdir(exist_ok=True)
    with open(stage / _LOCK, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another build is writing {stage}") from None
        manifest = _build(source, tokenizer, stage, threshold, val_fraction, shard_tokens,
                          num_threads, processes, batch_bytes,
                          on_progress or (lambda stage_name, n: None), progress_line)
        (stage / _LOCK).unlink()
        old = out.parent / f"{out.name}.old-{os.getpid()}"
        if out.exists():
            out.rename(old)
        stage.rename(out)
    if old.exists():
        shutil.rmtree(old)
    return manifest


def _tokenize(source, tokenizer: Tokenizer, stage: Path, key: dict, **kwargs) -> Tokenized:
    try:
        return tokenize(source, tokenizer, stage, key=key, **kwargs)
    except SourceChanged:
        print(f"build: the source no longer yields the documents the interrupted build in "
              f"{stage} read; starting over", file=sys.stderr)
        (stage / CHECKPOINT).unlink()
        return tokenize(source, tokenizer, stage, key=key, **kwargs)


def _build(source, tokenizer: Tokenizer, stage: Path, threshold: int, val_fraction: float,
           shard_tokens: int, num_threads: int, processes: int, batch_bytes: int,
           progress: ProgressFn, progress_line: bool) -> dict:
    t0 = time.perf_counter()
    dtype = token_dtype(tokenizer.vocab_size)
    key = {"tokenizer": tokenizer.hash, "dtype": dtype.str, "groups": list(source.groups),
           "source": getattr(source, "kind", type(source).__name__),
           "format_version": FORMAT_VERSION}
    done = _tokenize(source, tokenizer, stage, key, batch_bytes=batch_bytes,
                     processes=processes, num_threads=num_threads, progress=progress,
                     progress_line=progress_line)
    if done.resumed_at:
        progress("resumed", done.resumed_at)

    for written in (stage / "train", stage / "val"):  # from a run killed while writing
        shutil.rmtree(written, ignore_errors=True)
    train, val, n_dup = split_order(stage / "records.bin", done.n_records, list(source.groups),
                                    threshold)
    n_kept = len(train) + sum(len(v) for v in val.values())
    if not len(train):
        raise ValueError(f"no training documents ({n_kept} documents, val_fraction "
                         f"{val_fraction})")
    empty_val = [g for g, index in val.items() if not len(index)]
    if empty_val:
        warnings.warn(f"no held-out documents for validation set(s) {empty_val} at val_fraction "
                      f"{val_fraction}; they are left out of the store", stacklevel=3)
    sets = SetWriter(stage, done.n_records, dtype, tokenizer.eos_id)
    # Whether per-token byte counts add up to each document's bytes (validation_bytes needs it
    # to count a partly covered document; true for our tokenizers, maybe not for a seqio one).
    exact = sets.all_exact([train, *val.values()])
    manifest_sets = {"train": sets.write(stage / "train", train, shard_tokens)}
    progress("train written", len(train))
    validation = {g: sets.write(stage / "val" / g, index, shard_tokens)
                  for g, index in val.items() if len(index)}
    del sets
    for scratch in (CHECKPOINT, "raw.bin", "records.bin"):  # checkpoint first: a resume must not trust removed files
        os.remove(stage / scratch)
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
        "documents": {"kept": n_kept, "duplicates_dropped": n_dup, "empty_dropped": done.n_empty},
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
