"""`hybrid-jax export` of a run trained on a store with a Hugging Face tokenizer: tokenizer.json
and tokenizer_config.json come out of the store beside the weights, and load as they were."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from hybrid_jax.data import load_tokenizer, open_store
from hybrid_jax.data.hf_tokenizer import train_hf_bpe
from hybrid_jax.hf.cli import export_main
from hybrid_jax.hf.export import ExportError, export_tokenizer

from tests.helpers.training import build_tiny_store, tiny_config, tiny_store_inputs


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from hybrid_jax.train.loop import train

    root = tmp_path_factory.mktemp("hf_tok_run")
    docs = [Path(p).read_text(encoding="utf-8") for p in tiny_store_inputs()]
    train_hf_bpe(docs, root / "bpe" / "tokenizer.json", vocab_size=264)  # the tiny model's vocab
    store = build_tiny_store(root / "store", load_tokenizer(f"hf:{root / 'bpe'}"))
    cfg = tiny_config(store, root / "run", "transformer", **{"train.tokens": 8 * 32 * 2})
    train(cfg, verbose=False)
    return root


def test_export_copies_the_stores_tokenizer(run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the store's files are found from any directory
    assert export_main([str(run / "run"), "--out", str(tmp_path / "hf")]) == 0
    out = capsys.readouterr().out
    assert "tokenizer: " in out and "(eos '<|endoftext|>', pad '<|pad|>')" in out
    store = open_store(run / "store")
    assert (tmp_path / "hf/tokenizer.json").read_bytes() == \
        (run / "store/tokenizer.json").read_bytes()
    config = json.loads((tmp_path / "hf/tokenizer_config.json").read_text())
    assert (config["eos_token"], config["pad_token"]) == ("<|endoftext|>", "<|pad|>")
    hf_config = json.loads((tmp_path / "hf/config.json").read_text())
    assert (hf_config["eos_token_id"], hf_config["pad_token_id"]) == (1, 0)
    # the exported files load, with the library alone and as our hf: tokenizer, to the same ids
    text = "def f(x):\n    return x  # caf\u00e9 \U0001f600\n"
    ours = store.tokenizer().encode(text)
    assert Tokenizer.from_file(str(tmp_path / "hf/tokenizer.json")).encode(
        text, add_special_tokens=False).ids == ours
    exported = load_tokenizer(f"hf:{tmp_path / 'hf'}")
    assert exported.hash == store.tokenizer_hash and exported.encode(text) == ours


def test_a_damaged_store_tokenizer_fails_the_export(run, tmp_path, capsys):
    record = open_store(run / "store").manifest["tokenizer"]
    (tmp_path / "out").mkdir()
    assert export_tokenizer({"kind": "byte"}, run / "store", tmp_path / "out") == []
    (tmp_path / "store").mkdir()
    with pytest.raises(ExportError, match="store/tokenizer.json: the store's tokenizer cannot "
                       "be read"):
        export_tokenizer(record, tmp_path / "store", tmp_path / "out")
    (tmp_path / "store/tokenizer.json").write_text("{}")
    with pytest.raises(ExportError, match="not the tokenizer the store was built with"):
        export_tokenizer(record, tmp_path / "store", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
