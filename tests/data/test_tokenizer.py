"""Tokenizers: exact round trips (byte fallback), deterministic training, seqio id layout."""

import inspect
import json
import random
import textwrap

import numpy as np
import pytest

from hybrid_jax.data.tokenizer import (BYTE_TOKENIZER_HASH, ByteTokenizer, sample_documents,
                                       train_sentencepiece)
from hybrid_jax.data.vocab import load_tokenizer

from tests.helpers.data import AWKWARD, random_text


@pytest.fixture(scope="module")
def corpus():
    # real prose and code from the standard library: present wherever Python is
    return [inspect.getsource(m) for m in (json, textwrap, random, inspect)]


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("tok") / "sp512.model"
    train_sentencepiece(corpus, out, vocab_size=512, num_threads=2)
    return out


def test_byte_roundtrip_and_layout():
    tok = load_tokenizer("byte")
    assert isinstance(tok, ByteTokenizer)
    assert (tok.vocab_size, tok.pad_id, tok.eos_id, tok.hash) == (259, 0, 1, BYTE_TOKENIZER_HASH)
    assert tok.encode("A") == [ord("A") + 3]
    rng = random.Random(0)
    for text in AWKWARD + [random_text(rng, 50) for _ in range(200)]:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert np.array_equal(tok.encode_batch([text])[0], ids)
        assert tok.token_nbytes[ids].sum() == len(text.encode("utf-8"))


def test_sentencepiece_roundtrip_is_exact(sp_model):
    tok = load_tokenizer(sp_model)
    rng = random.Random(1)
    texts = AWKWARD + [random_text(rng, rng.randrange(0, 60)) for _ in range(500)]
    texts.append("".join(AWKWARD))
    batch = tok.encode_batch(texts, num_threads=2)
    for text, ids_batch in zip(texts, batch):
        ids = tok.encode(text)
        assert np.array_equal(ids_batch, ids), text
        assert tok.decode(ids) == text, text
        # per-token byte counts add up exactly (validation_bytes relies on it)
        assert tok.token_nbytes[ids].sum() == len(text.encode("utf-8")), text


def test_sentencepiece_settings_are_seqio_compatible(sp_model):
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    tok = load_tokenizer(sp_model)
    assert (tok.vocab_size, tok.pad_id, tok.eos_id) == (512, 0, 1)
    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    model = pb.ModelProto.FromString(sp_model.read_bytes())
    assert model.trainer_spec.byte_fallback and model.trainer_spec.model_type == pb.TrainerSpec.BPE
    assert model.normalizer_spec.name == "identity"
    assert not model.normalizer_spec.add_dummy_prefix
    assert not model.normalizer_spec.remove_extra_whitespaces
    info = json.loads(sp_model.with_name(sp_model.name + ".json").read_text())
    assert info["hash"] == tok.hash and info["settings"]["byte_fallback"] is True
    # code-friendly pieces: newline and indentation runs are learned, not byte-fallen
    assert sp.piece_to_id("\n") != sp.unk_id()


def test_training_is_deterministic_order_and_thread_independent(tmp_path, corpus, sp_model):
    again = tmp_path / "again.model"
    train_sentencepiece(list(reversed(corpus)), again, vocab_size=512, num_threads=1)
    assert again.read_bytes() == sp_model.read_bytes()
    assert load_tokenizer(again).hash == load_tokenizer(sp_model).hash


def test_sample_documents_is_the_hash_order_prefix_for_any_input_order():
    import hashlib

    docs = [f"document {i} " * (i % 7 + 1) for i in range(300)] + ["x" * 5000]
    budget = 2000
    expected, total = [], 0
    for doc in sorted(docs, key=lambda d: hashlib.sha256(d.encode()).digest()):
        total += len(doc.encode())
        if total > budget:
            break
        expected.append(doc)
    assert expected
    rng = random.Random(0)
    for _ in range(5):
        rng.shuffle(docs)
        assert sample_documents(docs, budget) == expected


def test_missing_model_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.model"):
        load_tokenizer(tmp_path / "nope.model")
