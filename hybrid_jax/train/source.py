"""Where the loop gets tokens: the `BatchSource` protocol and its token-store implementation.

A batch is a pure function of the step, so the loop keeps no iterator state and a resumed run
sees exactly the batches an uninterrupted one would. Tests may pass any object with this
interface to `train(cfg, source=...)`; the command line reads a token store (or OLMo token
files) through `StoreSource`, or a weighted mixture of them through `MixtureSource`.
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

    def epochs(self, tokens_needed: int) -> dict[str, float]:
        """Epochs of the training stream `tokens_needed` tokens read (no limit applied)."""
        return {"train": tokens_needed / self.n_train_tokens}

    def describe(self) -> dict:
        return {"kind": "token_store", "path": str(self.store.path),
                "tokenizer_hash": self.store.tokenizer_hash, "vocab_size": self.vocab_size,
                "n_train_tokens": self.n_train_tokens,
                "validation_sets": list(self.validation_set_names)}


class MixtureSource:
    """Stores mixed by weight per global batch (hybrid_jax/data/mixture.py). Validation sets
    are every component's, named COMPONENT/SET; epochs are counted and limited per component."""

    def __init__(self, stores: dict[str, str], weights: dict[str, float], *, seed: int,
                 global_batch: int, seq_len: int, verify: bool = True):
        from hybrid_jax.data import open_store
        from hybrid_jax.data.mixture import Mixture, MixtureError

        try:
            self.mixture = Mixture({n: open_store(p, verify=verify) for n, p in stores.items()},
                                   weights, global_batch)
        except MixtureError as e:
            raise ConfigError(f"data.mix: {e}") from None
        self.seed, self.global_batch, self.seq_len = seed, global_batch, seq_len
        self.components = dict(zip(self.mixture.alloc.names, self.mixture.stores))
        self.vocab_size = self.mixture.stores[0].vocab_size
        self.n_train_tokens = sum(s.n_train_tokens for s in self.mixture.stores)
        self.validation_set_names = tuple(f"{c}/{v}" for c, s in self.components.items()
                                          for v in s.validation_set_names)
        self.checked_epochs: dict[str, float] = {}  # per component, from check_epochs

    def _split(self, name: str):
        component, _, set_name = name.partition("/")
        return self.components[component], set_name

    def batch(self, step: int, dp_rank: int, dp_size: int) -> dict[str, np.ndarray]:
        return self.mixture.get_batch(seed=self.seed, step=step, seq_len=self.seq_len,
                                      dp_rank=dp_rank, dp_size=dp_size)

    def validation_batches(self, name: str, *, batch_size: int, max_tokens: int | None):
        from hybrid_jax.data import validation_batches

        store, set_name = self._split(name)
        return validation_batches(store, set_name, batch_size=batch_size, seq_len=self.seq_len,
                                  max_tokens=max_tokens)

    def validation_bytes(self, name: str, max_tokens: int | None) -> int:
        from hybrid_jax.data import validation_bytes

        store, set_name = self._split(name)
        return validation_bytes(store, set_name, max_tokens)

    def check_epochs(self, tokens_needed: int, max_epochs: float) -> float:
        """The most epochs of any component; raises where one passes max_epochs."""
        self.checked_epochs = self.mixture.check_epochs(tokens_needed, self.seq_len, max_epochs)
        return max(self.checked_epochs.values())

    def epochs(self, tokens_needed: int) -> dict[str, float]:
        """Each component's epochs after `tokens_needed` tokens (no limit applied)."""
        return self.mixture.epochs(tokens_needed, self.seq_len)

    def describe(self) -> dict:
        return {"kind": "mixture", "weights": self.mixture.weights,
                "components": {n: {"path": str(s.path), "n_train_tokens": s.n_train_tokens}
                               for n, s in self.components.items()},
                "epochs": self.checked_epochs, "tokenizer_hash": self.mixture.stores[0].tokenizer_hash,
                "vocab_size": self.vocab_size,
                "validation_sets": list(self.validation_set_names)}


def make_source(data, *, global_batch: int, seq_len: int) -> StoreSource | MixtureSource:
    """The batch source that a DataConfig names: data.store, or data.mix with data.stores."""
    if data.mix:
        return MixtureSource(data.stores, data.mix, seed=data.seed, global_batch=global_batch,
                             seq_len=seq_len, verify=data.verify)
    return StoreSource(data.store, seed=data.seed, global_batch=global_batch, seq_len=seq_len,
                       verify=data.verify)
