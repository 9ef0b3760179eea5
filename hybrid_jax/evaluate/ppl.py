"""Loss and bits-per-byte of a checkpoint on a token store's validation sets or on a text file.

Both run training's own evaluation (`train.evaluate.Evaluator` with `train.step.make_eval_step`)
over `data.batches.validation_batches`' windows: row j predicts stream[j*L+1 : j*L+L+1], no
overlap, the last row padded and masked. A text file is one document, tokenized with the
checkpoint's tokenizer as the stream [eos] + tokens, as a store holds a document; its bytes are
the file's UTF-8 bytes (or, with max_tokens, those of the scored tokens).

A store must be tokenized as the checkpoint was trained: where the checkpoint's tokenizer is
known its hash must equal the store's (bits-per-byte compares across tokenizers, but a model
reads only its own ids).
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np
from flax import nnx

from hybrid_jax.data import batches
from hybrid_jax.models.lm import LM
from hybrid_jax.storage.paths import as_path


class TextStream:
    """One tokenized document as the part of a store that `validation_batches` reads."""

    validation_set_names = ("text",)

    def __init__(self, ids: np.ndarray, pad_id: int, n_bytes: int, tokenizer):
        self.ids, self.pad_id, self.n_bytes, self.tokenizer = ids, pad_id, n_bytes, tokenizer

    def validation(self, name: str) -> "TextStream":
        if name != "text":
            raise KeyError(f"no validation set {name!r}; a text file is the one set 'text'")
        return self

    def __len__(self) -> int:
        return len(self.ids)

    def read(self, start: int, length: int) -> np.ndarray:
        return self.ids[start:start + length]


class _Source:
    """The `BatchSource` methods the Evaluator calls, over a store or a TextStream."""

    def __init__(self, data, seq_len: int):
        self.data, self.seq_len = data, seq_len

    def validation_batches(self, name, *, batch_size, max_tokens):
        return batches.validation_batches(self.data, name, batch_size=batch_size,
                                          seq_len=self.seq_len, max_tokens=max_tokens)

    def validation_bytes(self, name, max_tokens):
        if isinstance(self.data, TextStream):
            if max_tokens is None or max_tokens >= len(self.data) - 1:
                return self.data.n_bytes
            scored = self.data.ids[1:1 + max_tokens]
            return len(self.data.tokenizer.decode(scored.tolist()).encode("utf-8"))
        return batches.validation_bytes(self.data, name, max_tokens)


def text_stream(path: os.PathLike, tokenizer) -> TextStream:
    text = as_path(path).read_text(encoding="utf-8")
    ids = np.asarray([tokenizer.eos_id] + list(tokenizer.encode(text)), np.int32)
    if len(ids) < 2:
        raise ValueError(f"{path}: no text to score")
    return TextStream(ids, tokenizer.pad_id, len(text.encode("utf-8")), tokenizer)


def open_data(data: str | os.PathLike, tokenizer, checkpoint_tokenizer_hash: str | None):
    """A token store (a directory with manifest.json, local or gs://; or an olmo: spec) or a
    text file, ready to score."""
    from hybrid_jax.data import open_store

    path = as_path(data) if not str(data).startswith("olmo:") else None
    if path is None or path.is_dir():
        store = open_store(data)
        if checkpoint_tokenizer_hash is not None and store.tokenizer_hash != \
                checkpoint_tokenizer_hash:
            raise ValueError(f"{path}: tokenized with {store.tokenizer_hash}, the checkpoint "
                             f"with {checkpoint_tokenizer_hash}; build the store with the "
                             f"checkpoint's tokenizer")
        return store
    if path.is_file():
        return text_stream(path, tokenizer)
    raise ValueError(f"{path}: no such token store (directory) or text file")


def perplexity(model: LM, data, *, seq_len: int, batch_size: int,
               sets: tuple[str, ...] | None = None, max_tokens: int | None = None,
               mesh=None) -> dict[str, dict[str, float]]:
    """{set: {"loss" (nats/token), "bpb", "ppl", "tokens", "bytes"}} over `data` (a TokenStore
    or TextStream), each set's windows scored once."""
    from hybrid_jax.sharding import make_mesh
    from hybrid_jax.train.evaluate import Evaluator
    from hybrid_jax.train.step import make_eval_step
    from hybrid_jax.train.weights import abstract_params

    if seq_len < 1 or batch_size < 1:
        raise ValueError(f"seq_len and batch_size must be >= 1, got {seq_len}, {batch_size}")
    names = tuple(data.validation_set_names) if sets is None else tuple(sets)
    for name in names:
        try:
            data.validation(name)
        except KeyError as e:
            raise ValueError(e.args[0]) from None
    mesh = make_mesh((1, 1, 1), jax.devices()[:1]) if mesh is None else mesh
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    shardings = jax.tree.map(lambda a: a.sharding, abstract_params(model.cfg, mesh))
    params = jax.device_put(params, shardings)
    evaluator = Evaluator(make_eval_step(graphdef), _Source(data, seq_len), names, mesh=mesh,
                          param_shardings=shardings, batch_size=batch_size, seq_len=seq_len,
                          max_tokens=max_tokens)
    results = evaluator(params)
    for r in results.values():
        r["ppl"] = math.exp(r["loss"]) if r["loss"] < 700 else math.inf
    return results
