"""A build's first phase: tokenize a source in its order, streaming, resumable, parallel.

Documents are read one at a time and tokenized in batches of about `batch_bytes` of text, in
this process or in a pool of `processes` worker processes (results are written in submission
order, so the output does not depend on the number of processes). Each batch appends its
tokens to `raw.bin` and one fixed-size record per document to `records.bin` (RECORD: the text's
sha256, group, where its tokens are, its UTF-8 bytes); nothing per document stays in memory.

Resume: after each batch both files are fsynced and `checkpoint.json` is replaced atomically
with the number of source documents consumed, the lengths of both files, and the sha256 of the
consumed documents' (sha256, group) records in order. A rerun truncates the files to those lengths and reads the
source again from the start, skipping (and hashing) the consumed documents; a chain that
differs means the source changed, and the build starts over, saying so on stderr.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

RECORD = np.dtype([("sha", "V32"), ("group", "<u2"), ("offset", "<i8"), ("tokens", "<i8"),
                   ("bytes", "<i8"), ("exact", "u1")])
CHECKPOINT = "checkpoint.json"
PROGRESS_SECONDS = 2.0


@dataclasses.dataclass(frozen=True)
class Tokenized:
    n_records: int
    n_raw_tokens: int
    n_empty: int
    resumed_at: int  # source documents skipped because an earlier run had done them


@dataclasses.dataclass(frozen=True)
class _Batch:
    tokens: np.ndarray  # every document's ids, concatenated
    records: np.ndarray  # RECORD, offset relative to the batch


# ---- the tokenizing step, in this process or in a worker --------------------------------------
_worker: dict = {}


def _tokenizer_spec(tokenizer) -> tuple:
    """What rebuilds `tokenizer` in a worker process (store.py rebuilds them the same way)."""
    if tokenizer.kind == "byte":
        return ("byte",)
    if tokenizer.kind == "sentencepiece":
        return ("sentencepiece", tokenizer.model_bytes)
    if tokenizer.kind == "hf":
        return ("hf", tokenizer.model_bytes, tokenizer.eos_id, tokenizer.pad_id)
    raise ValueError(f"a {tokenizer.kind} tokenizer cannot be sent to worker processes; "
                     "build with processes=1")


def _rebuild(spec: tuple):
    from hybrid_jax.data.hf_tokenizer import HFTokenizer
    from hybrid_jax.data.tokenizer import ByteTokenizer, SentencePieceTokenizer

    if spec[0] == "byte":
        return ByteTokenizer()
    if spec[0] == "sentencepiece":
        return SentencePieceTokenizer(spec[1])
    return HFTokenizer(spec[1], eos_id=spec[2], pad_id=spec[3], origin="build worker")


def _init_worker(spec: tuple) -> None:
    _worker["tokenizer"] = _rebuild(spec)


def _encode_in_worker(texts, given, groups, num_threads) -> _Batch:
    return encode_batch(_worker["tokenizer"], texts, given, groups, num_threads)


def encode_batch(tokenizer, texts: list[str], given: list, groups: list[int],
                 num_threads: int) -> _Batch:
    """Tokens and records of a batch of non-empty documents (`given`: pre-tokenized or None)."""
    dtype = np.dtype("<u2") if tokenizer.vocab_size <= 1 << 16 else np.dtype("<u4")
    encoded = iter(tokenizer.encode_batch([t for t, g in zip(texts, given) if g is None],
                                          num_threads))
    ids = [np.asarray(pre if pre is not None else next(encoded)) for pre in given]
    records = np.zeros(len(texts), RECORD)
    if not texts:
        return _Batch(np.zeros(0, dtype), records)
    tokens = np.concatenate(ids)
    if tokens.size and int(tokens.max()) >= tokenizer.vocab_size:
        raise ValueError(f"token id {int(tokens.max())} >= vocab_size {tokenizer.vocab_size}")
    data = [t.encode("utf-8") for t in texts]
    ends = np.cumsum([a.size for a in ids])
    starts = ends - np.array([a.size for a in ids])
    csum = np.concatenate([[0], np.cumsum(tokenizer.token_nbytes[tokens])])
    records["sha"] = np.frombuffer(b"".join(hashlib.sha256(d).digest() for d in data), "V32")
    records["group"] = groups
    records["offset"], records["tokens"] = starts, ends - starts
    records["bytes"] = [len(d) for d in data]
    records["exact"] = (csum[ends] - csum[starts]) == records["bytes"]
    return _Batch(tokens.astype(dtype), records)


# ---- the driver ---------------------------------------------------------------------------------
class ProgressLine:
    """`tokenize: N docs, X MB, R MB/s[, P%, ETA T]` on stderr every PROGRESS_SECONDS."""

    def __init__(self, source, enabled: bool, resumed_bytes: int):
        self.source, self.enabled = source, enabled
        self.resumed_bytes = resumed_bytes  # done by an earlier run: not in this run's rate
        self.t0 = self.last = time.monotonic()

    def update(self, docs: int, text_bytes: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < PROGRESS_SECONDS and not final):
            return
        self.last = now
        rate = (text_bytes - self.resumed_bytes) / 1e6 / max(now - self.t0, 1e-9)
        line = f"tokenize: {docs:,} docs, {text_bytes / 1e6:,.0f} MB, {rate:.1f} MB/s"
        done_total = getattr(self.source, "input_progress", lambda: None)()
        if done_total and done_total[1] and done_total[0]:
            done, total = done_total
            eta = (now - self.t0) * (total - done) / done
            line += f", {100 * done / total:.0f}% of input, ETA " + (
                f"{eta:.0f} s" if eta < 120 else f"{eta / 60:.0f} min")
        print(line, file=sys.stderr, flush=True)


_CHAINED = np.dtype([("sha", "V32"), ("group", "<u2")])  # what the chain hashes per document


def tokenize(source, tokenizer, stage: Path, *, key: dict, batch_bytes: int, processes: int,
             num_threads: int, progress: Callable[[str, int], None],
             progress_line: bool) -> Tokenized:
    """Phase 1 into `stage` (raw.bin, records.bin), resuming from its checkpoint.json."""
    dtype = np.dtype("<u2") if tokenizer.vocab_size <= 1 << 16 else np.dtype("<u4")
    ckpt = _read_checkpoint(stage, key)
    group_index = {g: i for i, g in enumerate(source.groups)}
    raw_path, rec_path = stage / "raw.bin", stage / "records.bin"
    for path, length in ((raw_path, ckpt["raw_tokens"] * dtype.itemsize),
                         (rec_path, ckpt["records"] * RECORD.itemsize)):
        with open(path, "ab") as f:
            f.truncate(length)  # drop what a killed run wrote after its last checkpoint
    state = dict(ckpt)
    line = ProgressLine(source, progress_line, ckpt["text_bytes"])
    pool = None
    if processes > 1:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(
            processes, _init_worker, (_tokenizer_spec(tokenizer),))
    pending: collections.deque = collections.deque()
    try:
        with open(raw_path, "ab") as raw_file, open(rec_path, "ab") as rec_file:
            def write(batch: _Batch, seen_after: int, n_empty: int) -> None:
                records = batch.records.copy()
                records["offset"] += state["raw_tokens"]
                raw_file.write(batch.tokens.astype(dtype, copy=False).tobytes())
                rec_file.write(records.tobytes())
                chained = np.zeros(len(records), _CHAINED)
                chained["sha"], chained["group"] = records["sha"], records["group"]
                chain.update(chained.tobytes())
                for f in (raw_file, rec_file):
                    f.flush()
                    os.fsync(f.fileno())
                state.update(seen=seen_after, records=state["records"] + len(records),
                             raw_tokens=state["raw_tokens"] + batch.tokens.size,
                             text_bytes=state["text_bytes"] + int(records["bytes"].sum()),
                             empty=n_empty, chain=chain.copy().hexdigest())
                _write_checkpoint(stage, state)
                progress("tokenized", state["records"])
                line.update(state["records"], state["text_bytes"])

            def submit(texts, given, groups, seen_after, n_empty):
                if pool is None:
                    write(encode_batch(tokenizer, texts, given, groups, num_threads),
                          seen_after, n_empty)
                    return
                pending.append((pool.apply_async(_encode_in_worker,
                                                 (texts, given, groups, num_threads)),
                                seen_after, n_empty))
                while len(pending) > 2 * processes:  # bounded: the corpus never sits in memory
                    result, s, e = pending.popleft()
                    write(result.get(), s, e)

            seen, n_empty, chain = 0, 0, hashlib.sha256()
            texts, given, groups, size = [], [], [], 0
            for doc in source.documents():
                seen += 1
                if doc.group not in group_index:
                    raise ValueError(f"document group {doc.group!r} not among {source.groups}")
                if seen <= ckpt["seen"]:  # done by an earlier run: check it is the same document
                    if doc.text:
                        chain.update(hashlib.sha256(doc.text.encode("utf-8")).digest()
                                     + group_index[doc.group].to_bytes(2, "little"))
                    else:
                        n_empty += 1
                    if seen == ckpt["seen"] and chain.copy().hexdigest() != ckpt["chain"]:
                        raise SourceChanged()
                    continue
                if not doc.text:
                    n_empty += 1
                    continue
                texts.append(doc.text)
                given.append(doc.tokens)
                groups.append(group_index[doc.group])
                size += len(doc.text)
                if size >= batch_bytes:
                    submit(texts, given, groups, seen, n_empty)
                    texts, given, groups, size = [], [], [], 0
            if seen < ckpt["seen"]:
                raise SourceChanged()
            if texts or seen > state["seen"]:
                submit(texts, given, groups, seen, n_empty)
            while pending:
                result, s, e = pending.popleft()
                write(result.get(), s, e)
    finally:
        if pool is not None:
            pool.terminate()
    line.update(state["records"], state["text_bytes"], final=True)
    return Tokenized(state["records"], state["raw_tokens"], state["empty"], ckpt["seen"])


class SourceChanged(Exception):
    """The source no longer yields the documents an interrupted build consumed."""


def _fresh(key: dict) -> dict:
    return {"key": key, "seen": 0, "records": 0, "raw_tokens": 0, "text_bytes": 0, "empty": 0,
            "chain": hashlib.sha256().hexdigest()}


def _read_checkpoint(stage: Path, key: dict) -> dict:
    path = stage / CHECKPOINT
    if not path.is_file():
        return _fresh(key)
    ckpt = json.loads(path.read_text())
    if ckpt.get("key") != key:
        print(f"build: {stage} was started with another tokenizer or source; starting over",
              file=sys.stderr)
        return _fresh(key)
    return ckpt


def _write_checkpoint(stage: Path, state: dict) -> None:
    tmp = stage / (CHECKPOINT + ".partial")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, stage / CHECKPOINT)
