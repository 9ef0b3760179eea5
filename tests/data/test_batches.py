"""Batches: pure in (seed, step, rank), epoch coverage, dp union, validation, bpb bytes, epochs."""

import hashlib
import math
import subprocess
import sys

import numpy as np
import pytest

from hybrid_jax.data import (EpochLimitError, build_store, check_epochs, get_batch, open_store,
                             validation_batches, validation_bytes)
from hybrid_jax.data.batches import batch_windows, n_sequences, permute
from hybrid_jax.data.sources import TextSource
from hybrid_jax.data.vocab import load_tokenizer

from tests.helpers.data import write_text_corpus


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("batches")
    corpus = write_text_corpus(root / "corpus")
    # byte tokens and small shards: many windows cross shard boundaries
    build_store(TextSource([str(corpus / "*.txt")]), load_tokenizer("byte"), root / "store",
                val_fraction=0.3, shard_tokens=7919)
    return open_store(root / "store")


def _digest(batch: dict) -> str:
    h = hashlib.sha256()
    for key in ("inputs", "targets", "loss_mask"):
        h.update(key.encode() + batch[key].tobytes())
    return h.hexdigest()


def test_shapes_dtypes_and_shift(store):
    b = get_batch(store, seed=0, step=0, global_batch=8, seq_len=63)
    assert b["inputs"].shape == b["targets"].shape == b["loss_mask"].shape == (8, 63)
    assert (b["inputs"].dtype, b["targets"].dtype, b["loss_mask"].dtype) == (
        np.int32, np.int32, np.float32)
    assert (b["inputs"][:, 1:] == b["targets"][:, :-1]).all() and (b["loss_mask"] == 1).all()


def test_rows_are_the_sampled_windows_of_the_stream(store):
    L, B = 50, 16
    stream = store.train.read(0, len(store.train))
    b = get_batch(store, seed=3, step=5, global_batch=B, seq_len=L)
    windows = batch_windows(n_sequences(store, L), seed=3, step=5, global_batch=B)
    for w, row_in, row_tg in zip(windows, b["inputs"], b["targets"]):
        assert np.array_equal(stream[w * L:w * L + L], row_in)
        assert np.array_equal(stream[w * L + 1:w * L + L + 1], row_tg)


def test_each_epoch_visits_each_window_once():
    n, B = 1000, 24  # batches straddle epochs: 1000 is not a multiple of 24
    steps = math.ceil(3 * n / B)
    seen = np.concatenate([batch_windows(n, seed=11, step=s, global_batch=B) for s in range(steps)])
    for epoch in range(3):
        assert sorted(seen[epoch * n:(epoch + 1) * n].tolist()) == list(range(n))
    assert not np.array_equal(seen[:n], seen[n:2 * n])  # a fresh order each epoch
    assert not np.array_equal(seen[:n], np.arange(n))


def test_permutation_is_a_bijection_for_awkward_sizes():
    for n in (1, 2, 3, 5, 63, 64, 65, 1000, 4097):
        for epoch in (0, 1, 7):
            p = permute(np.arange(n), n, seed=123, epoch=np.full(n, epoch))
            assert sorted(p.tolist()) == list(range(n))
    a = permute(np.arange(100), 100, seed=1, epoch=np.zeros(100, np.uint64))
    b = permute(np.arange(100), 100, seed=2, epoch=np.zeros(100, np.uint64))
    assert not np.array_equal(a, b)


def test_data_parallel_ranks_union_to_the_global_batch(store):
    full = get_batch(store, seed=7, step=123, global_batch=24, seq_len=40)
    parts = [get_batch(store, seed=7, step=123, global_batch=24, seq_len=40, dp_rank=r, dp_size=4)
             for r in range(4)]
    for key in full:
        assert parts[0][key].shape[0] == 6
        assert np.array_equal(np.concatenate([p[key] for p in parts]), full[key])
    with pytest.raises(ValueError, match="not divisible"):
        get_batch(store, seed=0, step=0, global_batch=10, seq_len=8, dp_size=4)


_CHILD = """
import hashlib, sys
from hybrid_jax.data import get_batch, open_store
store = open_store(sys.argv[1])
for step in (0, 1, 999):
    b = get_batch(store, seed=42, step=step, global_batch=6, seq_len=33, dp_rank=1, dp_size=2)
    h = hashlib.sha256()
    for key in ("inputs", "targets", "loss_mask"):
        h.update(key.encode() + b[key].tobytes())
    print(h.hexdigest())
"""


def test_same_batch_in_another_process(store):
    out = subprocess.run([sys.executable, "-c", _CHILD, str(store.path)], capture_output=True,
                         text=True, check=True, timeout=120).stdout.split()
    here = [_digest(get_batch(store, seed=42, step=s, global_batch=6, seq_len=33, dp_rank=1,
                              dp_size=2)) for s in (0, 1, 999)]
    assert out == here
    assert here[0] != _digest(get_batch(store, seed=43, step=0, global_batch=6, seq_len=33,
                                        dp_rank=1, dp_size=2))


def test_validation_covers_the_set_once(store):
    val = store.validation("val")
    stream = val.read(0, len(val))
    targets = []
    batches = list(validation_batches(store, "val", batch_size=3, seq_len=64))
    for b in batches:
        assert b["inputs"].shape == (3, 64) and b["loss_mask"].dtype == np.float32
        m = b["loss_mask"].astype(bool)
        assert (b["inputs"][m] == stream[:-1][len(targets):len(targets) + m.sum()]).all()
        targets += b["targets"][m].tolist()
    assert targets == stream[1:].tolist()  # every token after the leading EOS, once, in order
    assert batches[-1]["loss_mask"][-1, -1] == 0  # padded
    assert validation_bytes(store, "val") == val.n_bytes == int(val.doc_bytes.sum())


def test_validation_bytes_with_max_tokens_counts_covered_text(store):
    val = store.validation("val")
    tok = store.tokenizer()
    offsets = val.doc_offsets
    for max_tokens in (0, 1, 10, int(offsets[1]) - 1, int(offsets[1]), int(offsets[2]) + 5, 10**9):
        n = sum(b["loss_mask"].sum() for b in validation_batches(
            store, "val", batch_size=2, seq_len=16, max_tokens=max_tokens))
        covered = val.read(1, int(n))
        expected = len(tok.decode(covered[covered != store.eos_id]).encode())
        assert n == min(max_tokens, len(val) - 1)
        assert validation_bytes(store, "val", max_tokens) == expected


def test_epoch_limit(store):
    n = store.n_train_tokens
    assert check_epochs(store, 2 * n) == pytest.approx(2.0)
    assert check_epochs(store, 4 * n) == pytest.approx(4.0)
    missing = math.ceil(5 * n / 4) - n
    with pytest.raises(EpochLimitError, match=f"{missing:,} training tokens missing"):
        check_epochs(store, 5 * n, max_epochs=4)
    with pytest.raises(ValueError, match="missing"):  # EpochLimitError is a ValueError
        check_epochs(store, 3 * n, max_epochs=2)
