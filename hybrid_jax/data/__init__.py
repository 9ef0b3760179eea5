"""Data: real text in, deterministic batches out.

Every source (the built-in `pycode` corpus, text files, a TFDS dataset, a seqio Task) is
tokenized once into a token store (build.py documents the layout, order, split and atomicity).
The training loop consumes only this interface:

    store = open_store(path, *, verify=True) -> TokenStore
        .vocab_size, .eos_id, .pad_id, .n_train_tokens, .validation_set_names, .manifest,
        .tokenizer_hash; verify=True checks every file's sha256 (StoreError names a bad file).
        `open_store("olmo:GLOB?tokenizer=...&val=...")` reads OLMo-core token files in place,
        local or gs://, with the same interface (olmo.py; docs/data.md).

    get_batch(store, *, seed, step, global_batch, seq_len, dp_rank=0, dp_size=1) -> dict
        "inputs" int32 [global_batch/dp_size, seq_len], "targets" int32 (next tokens),
        "loss_mask" float32 (all ones). A pure function of (seed, step, dp_rank, dp_size): rank r
        holds rows [r*B/dp, (r+1)*B/dp) of the dp_size=1 batch. Sampling: batches.py.

    validation_batches(store, name, *, batch_size, seq_len, max_tokens=None) -> Iterator[dict]
        The set once, in order, same dict format; the last batch is padded with loss_mask 0.
    validation_bytes(store, name, max_tokens=None) -> int
        bits-per-byte = sum(nll_nats * loss_mask) / ln(2) / validation_bytes(...).

    check_epochs(store, tokens_needed, max_epochs=4) -> float
        Epochs a run consumes; EpochLimitError (a ValueError) says how many tokens are missing.

    load_tokenizer("byte" | "hf:PATH" | SentencePiece model path) -> .encode(str), .decode(ids),
        .vocab_size, .eos_id, .hash; hf:PATH is a Hugging Face tokenizer.json or its directory.

Mixtures of stores by weight: mixture.py. Builds stream, resume and may use worker processes
(build.py). This package never imports TensorFlow; tfds_source.py and seqio_source.py do, when used.
"""

from hybrid_jax.data.batches import (EpochLimitError, check_epochs, get_batch, validation_batches,
                                     validation_bytes)
from hybrid_jax.data.build import build_store
from hybrid_jax.data.store import StoreError, TokenStore, open_store
from hybrid_jax.data.vocab import load_tokenizer

__all__ = [
    "EpochLimitError", "StoreError", "TokenStore", "build_store", "check_epochs", "get_batch",
    "load_tokenizer", "open_store", "validation_batches", "validation_bytes",
]
