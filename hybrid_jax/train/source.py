"""Where the loop gets tokens: the `BatchSource` protocol and its token-store implementation.

A batch is a pure function of the step, so the loop keeps no iterator state and a resumed run
sees exactly the batches an uninterrupted one would. Tests may pass any object with this
interface to `train(cfg, source=...)`; the command line always reads a token store.
"""

from __future__ import annotations

from typing import Iterator, Protocol

import numpy as np

from hybrid_jax.config import ConfigError


class BatchSource(Protocol):
    vocab_size: int
    n_train_tokens: int
    validation_set_names: tuple[str, ...]

    def batch(self, step: int, dp_rank: int, dp_size: int) -> dict[str, np.ndarray]:
        """Rows [r*B/dp, (r+1)*B/dp) of global batch `step`: inputs, targets, loss_mask."""

    def validation_batches(self, name: str, *, batch_size: int, max_tokens: int | None
                           ) -> Iterator[dict[str, np.ndarray]]: ...

    def validation_bytes(self, name: str, max_tokens: int | None) -> int: ...

    def check_epochs(self, tokens_needed: int, max_epochs: float) -> float: ...

    def describe(self) -> dict: ...


class StoreSource:
    """A token store (hybrid_jax.data) read with this run's seed, batch and sequence length."""

    def __init__(self, path: str, *, seed: int, global_batch: int, seq_len: int,
                 verify: bool = True):
        from hybrid_jax.data import open_store

        if not path:
            raise ConfigError("data.store: no token store given; build one with "
                             "`hybrid-jax data build` and pass data.store=PATH")
        self.store = open_store(path, verify=verify)
        self.seed, self.global_batch, self.seq_len = seed, global_batch, seq_len
        self.vocab_size = self.store.vocab_size
        self.n_train_tokens = self.store.n_train_tokens
        self.validation_set_names = tuple(self.store.validation_set_names)

    def batch(self, step: int, dp_rank: int, dp_size: int) -> dict[str, np.ndarray]:
        from hybrid_jax.data import get_batch

        return get_batch(self.store, seed=self.seed, step=step, global_batch=self.global_batch,
                         seq_len=self.seq_len, dp_rank=dp_rank, dp_size=dp_size)

    def validation_batches(self, name: str, *, batch_size: int, max_tokens: int | None):
        from hybrid_jax.data import validation_batches

        return validation_batches(self.store, name, batch_size=batch_size, seq_len=self.seq_len,
                                  max_tokens=max_tokens)

    def validation_bytes(self, name: str, max_tokens: int | None) -> int:
        from hybrid_jax.data import validation_bytes

        return validation_bytes(self.store, name, max_tokens)

    def check_epochs(self, tokens_needed: int, max_epochs: float) -> float:
        from hybrid_jax.data import check_epochs

        return check_epochs(self.store, tokens_needed, max_epochs)

    def describe(self) -> dict:
        return {"kind": "token_store", "path": str(self.store.path),
                "tokenizer_hash": self.store.tokenizer_hash, "vocab_size": self.vocab_size,
                "n_train_tokens": self.n_train_tokens,
                "validation_sets": list(self.validation_set_names)}
