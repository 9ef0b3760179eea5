"""OLMo-core token files read in place (`olmo:` specs): same batches as a built store, gs://
ranged reads, one-line errors for bad files and specs."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from hybrid_jax.data import (StoreError, build_store, get_batch, open_store, validation_batches,
                             validation_bytes)
from hybrid_jax.data.build import is_validation, split_threshold
from hybrid_jax.data.hf_tokenizer import train_hf_bpe
from hybrid_jax.data.sources import TextSource
from hybrid_jax.data.vocab import load_tokenizer
from hybrid_jax.train.source import StoreSource

from tests.helpers.data import write_text_corpus
from tests.helpers.gcs import gcs_bucket, gcs_emulator, gs_prefix  # noqa: F401 (fixtures)

VAL_FRACTION = 0.3
SEQ = 37


def _write_olmo_files(docs_ids: list[np.ndarray], eos: int, out: Path, stem: str, n_files: int):
    """OLMo-core's layout: raw uint32, each document followed by EOS, cut at document ends."""
    out.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(len(docs_ids)), n_files)):
        stream = [np.append(docs_ids[j], eos) for j in part]
        np.concatenate(stream).astype("<u4").tofile(out / f"{stem}-{i:03d}.npy")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A built store and OLMo files of the same documents, tokenized independently."""
    root = tmp_path_factory.mktemp("olmo")
    text = write_text_corpus(root / "corpus")
    train_hf_bpe([p.read_text() for p in sorted(text.glob("*.txt"))], root / "bpe" /
                 "tokenizer.json", vocab_size=300)
    tok_spec = f"hf:{root / 'bpe'}"
    tok = load_tokenizer(tok_spec)
    source = TextSource([str(text / "*.txt")], doc_separator="blank-lines")
    build_store(source, tok, root / "store", val_fraction=VAL_FRACTION, shard_tokens=4099)
    # the store's order and split: sha256 of the text, duplicates and empty documents dropped
    by_hash = {hashlib.sha256(d.text.encode()).digest(): d.text
               for d in source.documents() if d.text}
    threshold = split_threshold(VAL_FRACTION)
    train = [by_hash[h] for h in sorted(by_hash) if not is_validation(h, threshold)]
    val = [by_hash[h] for h in sorted(by_hash) if is_validation(h, threshold)]
    files = root / "olmo"
    _write_olmo_files([tok.encode(t) for t in train], tok.eos_id, files, "train", 3)
    _write_olmo_files([tok.encode(t) for t in val], tok.eos_id, files, "val", 2)
    spec = f"olmo:{files}/train-*.npy?tokenizer={tok_spec}&val={files}/val-*.npy"
    return root, spec, open_store(root / "store")


def test_olmo_files_give_the_built_stores_batches(corpus):
    root, spec, built = corpus
    olmo = open_store(spec)
    assert (olmo.n_train_tokens, olmo.vocab_size, olmo.tokenizer_hash) == (
        built.n_train_tokens, built.vocab_size, built.tokenizer_hash)
    assert len(olmo.train.files) == 3 and olmo.validation_set_names == ["val"]
    for step in range(6):
        for rank in range(2):
            a = get_batch(built, seed=3, step=step, global_batch=8, seq_len=SEQ, dp_rank=rank,
                          dp_size=2)
            b = get_batch(olmo, seed=3, step=step, global_batch=8, seq_len=SEQ, dp_rank=rank,
                          dp_size=2)
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_array_equal(olmo.train.doc_offsets, built.train.doc_offsets)
    np.testing.assert_array_equal(olmo.validation("val").doc_bytes,
                                  built.validation("val").doc_bytes)
    for a, b in zip(validation_batches(built, "val", batch_size=4, seq_len=SEQ),
                    validation_batches(olmo, "val", batch_size=4, seq_len=SEQ), strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    for max_tokens in (None, 500):
        assert validation_bytes(olmo, "val", max_tokens) == validation_bytes(built, "val",
                                                                             max_tokens)
    source = StoreSource(spec, seed=3, global_batch=4, seq_len=SEQ)
    np.testing.assert_array_equal(source.batch(2, 0, 1)["inputs"],
                                  get_batch(built, seed=3, step=2, global_batch=4,
                                            seq_len=SEQ)["inputs"])


def test_gs_files_are_read_with_ranged_requests(corpus, gcs_bucket, monkeypatch):
    from google.cloud import storage

    root, spec, built = corpus
    prefix = gs_prefix(gcs_bucket, "olmo")
    bucket = storage.Client().bucket(gcs_bucket)
    for path in sorted((root / "olmo").glob("*.npy")):
        bucket.blob(f"{prefix.split('/', 3)[3]}/{path.name}").upload_from_filename(str(path))
    gs_spec = spec.replace(str(root / "olmo"), prefix)
    olmo = open_store(gs_spec)
    assert olmo.train.files[0].name.startswith("gs://")
    ranges = []
    download = storage.Blob.download_as_bytes

    def recording(blob, *args, start=None, end=None, **kwargs):
        ranges.append((start, end))
        return download(blob, *args, start=start, end=end, **kwargs)

    monkeypatch.setattr(storage.Blob, "download_as_bytes", recording)
    for step in range(2):
        a = get_batch(built, seed=5, step=step, global_batch=4, seq_len=SEQ)
        b = get_batch(olmo, seed=5, step=step, global_batch=4, seq_len=SEQ)
        np.testing.assert_array_equal(a["targets"], b["targets"])
    assert ranges and all(s is not None and 0 < e - s + 1 <= 4 * (SEQ + 1) for s, e in ranges)


def _bad_files(tmp: Path) -> dict[str, Path]:
    tmp.mkdir(exist_ok=True)
    np.save(tmp / "header.npy", np.array([5, 6, 1], np.uint32))
    np.array([5, 6, 7, 1], np.uint16).tofile(tmp / "uint16.npy")
    np.array([5, 6, 7], np.uint32).tofile(tmp / "no_eos.npy")
    np.array([5, 1], np.uint32).tofile(tmp / "good.npy")
    return {p.stem: p for p in tmp.iterdir()}


@pytest.mark.parametrize("spec, message", [
    ("olmo:{header}?tokenizer=byte&val=none", "a .npy file with a header"),
    ("olmo:{uint16}?tokenizer=byte&val=none", "last token 65543 is not the EOS id 1; wrong eos, dtype"),
    ("olmo:{uint16}?tokenizer=byte&val=none&dtype=uint16&eos=7", "last token 1 is not the EOS id 7"),
    ("olmo:{no_eos}?tokenizer=byte&val=none", "last token 7 is not the EOS id 1"),
    ("olmo:{good}?tokenizer=byte&val={good}x", "matches no file"),
    ("olmo:{good}?tokenizer=byte", "say which files validate"),
    ("olmo:{good}?val=none", "tokenizer=... is required"),
    ("olmo:{good}?tokenizer=byte&val=none&eos=x", "eos='x' is not a token id"),
    ("olmo:{good}?tokenizer=byte&val=none&shuffle=1", "unknown option 'shuffle'"),
    ("olmo:{good}?tokenizer=byte&val=none&dtype=int64", "dtype='int64'"),
    ("olmo:{good}?tokenizer=byte&val.c4={good}", "is both a train file and a file of validation set 'c4'"),
])
def test_bad_files_and_specs_are_one_line_store_errors(tmp_path, spec, message):
    spec = spec.format(**{k: str(v) for k, v in _bad_files(tmp_path).items()})
    with pytest.raises(StoreError, match=message.replace("(", r"\(")) as e:
        open_store(spec)
    assert "\n" not in str(e.value)


def test_a_token_past_the_vocabulary_is_refused_in_a_batch(tmp_path):
    np.array([1, 300, 5, 1] * 20, np.uint32).tofile(tmp_path / "t.npy")
    store = open_store(f"olmo:{tmp_path}/t.npy?tokenizer=byte&val=none")
    with pytest.raises(StoreError, match="token id 300 >= vocab_size 259"):
        get_batch(store, seed=0, step=0, global_batch=4, seq_len=8)


def test_data_info_on_olmo_files(corpus, capsys):
    from hybrid_jax.data.cli import main

    root, spec, built = corpus
    assert main(["info", spec, "--count-documents", "--tokens", "1e4"]) == 0
    out = capsys.readouterr().out
    assert (f"train        {built.n_train_tokens:,} tokens in 3 files, "
            f"{built.n_train_documents:,} documents") in out
    val = built.validation("val")
    assert f"validation   val: {len(val) - 1:,} tokens, {val.n_documents:,} documents" in out
    assert main(["info", spec, "--tokens", "1e9"]) == 1
    assert "training tokens missing" in capsys.readouterr().err
