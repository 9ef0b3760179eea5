"""Mixtures: each global batch draws its rows from several stores by weight (`data.mix`).

Allocation is stratified, not sampled row by row: of the first G global rows (G a multiple of
global_batch), component c owns Q_c(G) = floor(q_c * G / 2**32), where q_c is its weight in
units of 2**-32, except the heaviest component, which owns the rest. So each component's share
after any number of steps is within (components - 1) / G of its weight (binomial sampling
would be off by about sqrt(w (1 - w) / G)), and the count is O(1) to compute for any step.

Within a component, its k-th row is window perm_e(k mod n_seq) of epoch e = k // n_seq of that
store, with perm_e batches.py's Feistel permutation under a seed derived from (seed, component
name), so every component visits each of its windows once per epoch, and its epochs are its own:
Q_c(rows) / n_seq_c. Rows are then put in a seeded order within the batch (a permutation of
global_batch per step), so data-parallel ranks see a mix, not one component each.

Everything is integer arithmetic on (seed, step, rank): a batch is the same in any process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np

from hybrid_jax.data.batches import EpochLimitError, n_sequences, permute

_ONE = 1 << 32


class MixtureError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Allocation:
    """Weights as integer quotas; `rows_before(G)` is every component's Q_c(G)."""

    names: tuple[str, ...]
    quotas: tuple[int, ...]  # weight * 2**32, rounded; the heaviest takes the rest

    @classmethod
    def from_weights(cls, weights: dict[str, float], global_batch: int) -> "Allocation":
        if not weights:
            raise MixtureError("a mixture needs at least one component")
        names = tuple(sorted(weights))
        for name in names:
            if not (weights[name] > 0 and math.isfinite(weights[name])):
                raise MixtureError(f"mixture weight of {name!r} must be positive, got "
                                   f"{weights[name]}")
        if abs(sum(weights.values()) - 1.0) > 1e-6:
            raise MixtureError(f"mixture weights sum to {sum(weights.values()):.6g}, not 1: "
                               f"{dict(sorted(weights.items()))}")
        heaviest = max(names, key=lambda n: (weights[n], n))
        # Per step the heaviest gets B - sum(others' counts) >= w B - (k - 1) rows: never < 0.
        if weights[heaviest] * global_batch < len(names) - 1:
            raise MixtureError(f"global_batch {global_batch} is too small for {len(names)} "
                               f"components (the heaviest needs weight * batch >= "
                               f"{len(names) - 1})")
        return cls(names, tuple(-1 if n == heaviest else round(weights[n] * _ONE) for n in names))

    def rows_before(self, g: int) -> list[int]:
        counts = [q * g // _ONE if q >= 0 else 0 for q in self.quotas]
        rest = self.quotas.index(-1)
        counts[rest] = g - sum(counts)
        return counts


def component_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "little")


def mixture_rows(alloc: Allocation, n_seq: list[int], *, seed: int, step: int,
                 global_batch: int, dp_rank: int = 0, dp_size: int = 1
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(component index, window index) of this rank's rows of global batch `step`."""
    if global_batch % dp_size or not 0 <= dp_rank < dp_size or step < 0:
        raise ValueError(f"bad batch slice: global_batch {global_batch}, dp_rank {dp_rank}, "
                         f"dp_size {dp_size}, step {step}")
    lo, hi = alloc.rows_before(step * global_batch), alloc.rows_before((step + 1) * global_batch)
    comp, window = [], []
    for c, name in enumerate(alloc.names):
        k = np.arange(lo[c], hi[c], dtype=np.uint64)
        n = np.uint64(n_seq[c])
        comp.append(np.full(k.size, c, np.int64))
        window.append(permute(k % n, n_seq[c], component_seed(seed, name), k // n).astype(np.int64))
    comp_B, window_B = np.concatenate(comp), np.concatenate(window)
    order = permute(np.arange(global_batch), global_batch, component_seed(seed, "rows"),
                    np.uint64(step)).astype(np.int64)
    rows = global_batch // dp_size
    take = order[dp_rank * rows:(dp_rank + 1) * rows]
    return comp_B[take], window_B[take]


class Mixture:
    """Stores (TokenStore or OlmoStore) with weights; one tokenizer for all."""

    def __init__(self, stores: dict[str, object], weights: dict[str, float], global_batch: int):
        if set(stores) != set(weights):
            raise MixtureError(f"data.mix names {sorted(weights)} but data.stores names "
                               f"{sorted(stores)}")
        self.alloc = Allocation.from_weights(weights, global_batch)
        self.stores = [stores[n] for n in self.alloc.names]
        self.weights = {n: weights[n] for n in self.alloc.names}
        hashes = {n: s.tokenizer_hash for n, s in zip(self.alloc.names, self.stores)}
        if len(set(hashes.values())) > 1:
            raise MixtureError(f"mixture components use different tokenizers: {hashes}")
        self.global_batch = global_batch

    def get_batch(self, *, seed: int, step: int, seq_len: int, dp_rank: int = 0,
                  dp_size: int = 1) -> dict[str, np.ndarray]:
        n_seq = [n_sequences(s, seq_len) for s in self.stores]
        comp_B, window_B = mixture_rows(self.alloc, n_seq, seed=seed, step=step,
                                        global_batch=self.global_batch, dp_rank=dp_rank,
                                        dp_size=dp_size)
        tokens_BT = np.empty((comp_B.size, seq_len + 1), np.int32)
        for c, store in enumerate(self.stores):
            rows = np.flatnonzero(comp_B == c)
            if rows.size:
                tokens_BT[rows] = store.train.gather(window_B[rows] * seq_len, seq_len + 1)
        return {"inputs": tokens_BT[:, :-1], "targets": tokens_BT[:, 1:].copy(),
                "loss_mask": np.ones((comp_B.size, seq_len), np.float32)}

    def epochs(self, tokens_needed: int, seq_len: int) -> dict[str, float]:
        """Each component's epochs of its training stream after `tokens_needed` tokens."""
        rows = self.alloc.rows_before(tokens_needed // seq_len)
        return {n: r * seq_len / s.n_train_tokens
                for n, r, s in zip(self.alloc.names, rows, self.stores)}

    def check_epochs(self, tokens_needed: int, seq_len: int, max_epochs: float = 4
                     ) -> dict[str, float]:
        epochs = self.epochs(tokens_needed, seq_len)
        over = {n: e for n, e in epochs.items() if e > max_epochs}
        if over:
            name = max(over, key=over.get)
            store = self.stores[self.alloc.names.index(name)]
            raise EpochLimitError(
                f"mixture component {name!r} (weight {self.weights[name]}) is read for "
                f"{over[name]:.2f} epochs of its {store.n_train_tokens:,} training tokens in "
                f"{store.path}, over the limit of {max_epochs} epochs; per component: "
                + ", ".join(f"{n} {e:.2f}" for n, e in epochs.items()))
        return epochs
