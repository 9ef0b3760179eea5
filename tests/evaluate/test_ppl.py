"""`hybrid-jax eval ppl`: loss and bits-per-byte on a text file equal a direct computation."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybrid_jax.cli import main
from hybrid_jax.data import load_tokenizer
from tests.generate.tiny import save_tiny_model

TEXT = "def add(a, b):\n    return a + b\n\n# héllo wörld\nprint(add(2, 3))\n"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("ppl") / "model", family="gdn")


def test_ppl_on_a_text_file_equals_a_direct_computation(model_dir, tmp_path, capsys):
    model, path = model_dir
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    rc = main(["eval", "ppl", str(path), "--data", str(tmp_path / "t.txt"), "--tokenizer", "byte",
               "--seq-len", "16", "--batch-size", "2", "--out", str(tmp_path / "r.json")])
    assert rc == 0, capsys.readouterr().err
    got = json.loads((tmp_path / "r.json").read_text())["sets"]["text"]

    tok = load_tokenizer("byte")
    ids = np.array([tok.eos_id] + tok.encode(TEXT))
    L, n = 16, len(ids) - 1
    rows = -(-n // L)  # windows of 16 tokens, each with its own context
    x = np.zeros(rows * L + 1, np.int64)
    x[:n + 1] = ids
    inputs, targets = x[:-1].reshape(rows, L), x[1:].reshape(rows, L)
    logits = model(jnp.asarray(inputs))
    nll_BT = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(
        logits, jnp.asarray(targets)[..., None], -1)[..., 0]
    nll = float(jnp.sum(nll_BT.reshape(-1)[:n]))
    assert got["tokens"] == n and got["bytes"] == len(TEXT.encode("utf-8"))
    np.testing.assert_allclose(got["loss"], nll / n, rtol=1e-5)
    np.testing.assert_allclose(got["bpb"], nll / math.log(2) / got["bytes"], rtol=1e-5)


def test_ppl_refuses_missing_data_and_sets(model_dir, tmp_path, capsys):
    path = str(model_dir[1])
    assert main(["eval", "ppl", path, "--data", str(tmp_path / "nope"), "--tokenizer",
                 "byte"]) == 2
    assert "no such token store" in capsys.readouterr().err
    (tmp_path / "t.txt").write_text(TEXT)
    assert main(["eval", "ppl", path, "--data", str(tmp_path / "t.txt"), "--tokenizer", "byte",
                 "--sets", "val"]) == 2
    assert "no validation set 'val'" in capsys.readouterr().err


def test_ppl_on_a_token_store_equals_a_direct_computation(model_dir, tmp_path, capsys):
    from hybrid_jax.data import open_store, validation_bytes
    from tests.helpers.training import build_tiny_store

    model, path = model_dir
    store = build_tiny_store(tmp_path / "store")
    rc = main(["eval", "ppl", str(path), "--data", str(store), "--tokenizer", "byte",
               "--seq-len", "32", "--batch-size", "4", "--max-tokens", "256",
               "--out", str(tmp_path / "r.json")])
    assert rc == 0, capsys.readouterr().err
    got = json.loads((tmp_path / "r.json").read_text())["sets"]["val"]
    opened = open_store(store)
    stream = opened.validation("val").read(0, 257)
    logits = model(jnp.asarray(stream[:-1].reshape(8, 32)))
    nll = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(
        logits, jnp.asarray(stream[1:].reshape(8, 32))[..., None], -1)[..., 0]
    assert got["tokens"] == 256 and got["bytes"] == validation_bytes(opened, "val", 256)
    np.testing.assert_allclose(got["loss"], float(jnp.mean(nll)), rtol=1e-5)
