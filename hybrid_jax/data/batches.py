"""Batches: a pure function of (seed, step, dp_rank, dp_size); validation and bits-per-byte.

Training sampling. The training stream (`EOS doc EOS doc ... EOS`, no padding) is cut into
n_seq = (n_train_tokens - 1) // seq_len fixed windows; window i is stream[i*L : i*L + L + 1]
(inputs are the first L tokens, targets the last L). Global sample g = step * global_batch + row
belongs to epoch e = g // n_seq and is window perm_e(g % n_seq), where perm_e is a seeded
permutation of range(n_seq) for each (seed, epoch). So each epoch visits each window exactly
once, a batch may straddle two epochs, and no iterator state exists: resuming at step s is
calling get_batch(step=s).

perm_e is a 6-round Feistel network on the smallest even number of bits covering n_seq, with
cycle walking to stay below n_seq; its round function is splitmix64 over (seed, epoch, round).
It is plain uint64 arithmetic, so batches are bitwise identical across numpy versions and
machines (numpy's Generator makes no cross-version stream promise), and it costs O(batch), with
no per-epoch table.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from hybrid_jax.data.store import TokenStore

_M64 = (1 << 64) - 1
_ROUNDS = 6


class EpochLimitError(ValueError):
    pass


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 arrays (wraps mod 2**64)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def permute(index: np.ndarray, n: int, seed: int, epoch: np.ndarray) -> np.ndarray:
    """perm_epoch(index) for a bijection perm_epoch of range(n); index and epoch broadcast."""
    index = np.asarray(index, np.uint64)
    shape, index = index.shape, index.reshape(-1)
    if n <= 1:
        return np.zeros(shape, np.uint64)
    half = max(1, math.ceil(math.log2(n) / 2))
    mask = np.uint64((1 << half) - 1)
    # 1-d arrays throughout: numpy wraps uint64 arrays silently but warns on scalar overflow
    epoch = np.broadcast_to(np.asarray(epoch, np.uint64), shape).reshape(-1)
    base = _mix64(epoch * np.uint64(0x9E3779B97F4A7C15)
                  + _mix64(np.array([seed & _M64], np.uint64)))
    keys = [_mix64(base + np.uint64((r + 1) * 0xD1B54A32D192ED03 & _M64)) for r in range(_ROUNDS)]

    def feistel(x, sel):
        left, right = x >> np.uint64(half), x & mask
        for key in keys:
            left, right = right, left ^ (_mix64(right ^ key[sel]) & mask)
        return (left << np.uint64(half)) | right

    out = feistel(index, np.ones(index.shape, bool))
    todo = out >= np.uint64(n)
    while todo.any():  # cycle walking: at most a few rounds, the domain is < 4n
        out[todo] = feistel(out[todo], todo)
        todo = out >= np.uint64(n)
    return out.reshape(shape)


def n_sequences(store: TokenStore, seq_len: int) -> int:
    return (store.n_train_tokens - 1) // seq_len


def get_batch(store: TokenStore, *, seed: int, step: int, global_batch: int, seq_len: int,
              dp_rank: int = 0, dp_size: int = 1) -> dict[str, np.ndarray]:
    """Rows [r*B/dp, (r+1)*B/dp) of global batch `step`: inputs/targets int32, loss_mask float32."""
    n_seq = n_sequences(store, seq_len)
    if n_seq < 1:
        raise ValueError(f"{store.n_train_tokens} training tokens hold no sequence of {seq_len + 1}")
    window_B = batch_windows(n_seq, seed=seed, step=step, global_batch=global_batch,
                             dp_rank=dp_rank, dp_size=dp_size)
    tokens_BT = store.train.gather(window_B * seq_len, seq_len + 1)
    return {"inputs": tokens_BT[:, :-1].astype(np.int32),
            "targets": tokens_BT[:, 1:].astype(np.int32),
            "loss_mask": np.ones((len(window_B), seq_len), np.float32)}


def batch_windows(n_seq: int, *, seed: int, step: int, global_batch: int, dp_rank: int = 0,
                  dp_size: int = 1) -> np.ndarray:
    """int64 window indices of this rank's rows of global batch `step` (see module docstring)."""
    if global_batch % dp_size:
        raise ValueError(f"global_batch {global_batch} is not divisible by dp_size {dp_size}")
    if not 0 <= dp_rank < dp_size:
        raise ValueError(f"dp_rank {dp_rank} outside [0, {dp_size})")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    rows = global_batch // dp_size
    g_B = np.arange(rows, dtype=np.uint64) + np.uint64(step * global_batch + dp_rank * rows)
    return permute(g_B % np.uint64(n_seq), n_seq, seed, g_B // np.uint64(n_seq)).astype(np.int64)


def _n_targets(store: TokenStore, name: str, max_tokens: int | None) -> int:
    total = len(store.validation(name)) - 1  # the leading EOS is never a target
    return total if max_tokens is None else max(0, min(total, max_tokens))


def validation_batches(store: TokenStore, name: str, *, batch_size: int, seq_len: int,
                       max_tokens: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """The validation set `name` once, in order: row j predicts stream[j*L+1 : j*L+L+1].

    Targets are the first min(max_tokens, all) tokens after the leading EOS. The last row and
    batch are padded (pad_id, loss_mask 0) to full [batch_size, seq_len] shapes.
    """
    array = store.validation(name)
    n_targets = _n_targets(store, name, max_tokens)
    n_rows = math.ceil(n_targets / seq_len)
    for row0 in range(0, n_rows, batch_size):
        span = min(n_targets - row0 * seq_len, batch_size * seq_len)
        buf = np.full(batch_size * seq_len + 1, store.pad_id, np.int32)
        buf[: span + 1] = array.read(row0 * seq_len, span + 1)
        mask = np.zeros(batch_size * seq_len, np.float32)
        mask[:span] = 1.0
        yield {"inputs": buf[:-1].reshape(batch_size, seq_len),
               "targets": buf[1:].reshape(batch_size, seq_len).copy(),
               "loss_mask": mask.reshape(batch_size, seq_len)}


def validation_bytes(store: TokenStore, name: str, max_tokens: int | None = None) -> int:
    """UTF-8 bytes of original text whose tokens validation_batches scores (same max_tokens).

    bits-per-byte = sum(nll in nats over masked targets) / ln(2) / validation_bytes.
    A partly covered last document counts the bytes of its covered tokens.
    """
    array = store.validation(name)
    end = _n_targets(store, name, max_tokens) + 1  # covered stream positions: [1, end)
    offsets = array.doc_offsets
    full = int(np.searchsorted(offsets, end, "right")) - 1  # documents 0..full-1 are covered
    total = int(array.doc_bytes[:full].sum())
    if full < array.n_documents and offsets[full] < end:
        if not store.manifest["tokenizer"]["token_bytes_exact"]:
            raise ValueError(f"max_tokens={max_tokens} cuts a document, and this store's "
                             "tokenizer has no exact per-token byte counts; use whole documents")
        total += int(store.token_nbytes[array.read(int(offsets[full]), end - int(offsets[full]))].sum())
    return total


def check_epochs(store: TokenStore, tokens_needed: int, max_epochs: float = 4) -> float:
    """Epochs of the training stream that `tokens_needed` consumes; raises past max_epochs."""
    epochs = tokens_needed / store.n_train_tokens
    if epochs > max_epochs:
        need = math.ceil(tokens_needed / max_epochs)
        raise EpochLimitError(
            f"{tokens_needed:,} tokens are {epochs:.2f} epochs of the {store.n_train_tokens:,} "
            f"training tokens in {store.path}, over the limit of {max_epochs} epochs: "
            f"{need - store.n_train_tokens:,} training tokens missing (the store needs {need:,}; "
            f"{max_epochs} epochs cover {math.floor(max_epochs * store.n_train_tokens):,} of the "
            f"run's tokens)")
    return epochs
