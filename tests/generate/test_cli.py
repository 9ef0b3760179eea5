"""`hybrid-jax generate` end to end on a tiny model directory."""

import json

import pytest

from hybrid_jax.cli import main
from hybrid_jax.data import load_tokenizer
from tests.generate.tiny import save_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("gen") / "model")


def test_generate_cli_prints_completions(model_dir, capsys):
    path = model_dir[1]
    rc = main(["generate", str(path), "--prompt", "def f(", "--prompt", "", "--tokenizer",
               "byte", "--max-new-tokens", "6", "--json"])
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 0 and [o["prompt"] for o in out] == ["def f(", ""]
    byte = load_tokenizer("byte")
    for o in out:
        assert o["completion"] == byte.decode(o["tokens"])
        assert (o["stop"], len(o["tokens"])) == ("length", 6) or o["stop"] == "eos"


@pytest.mark.parametrize("args, match", [
    (["/no/such/run", "--prompt", "x"], "no such checkpoint"),
    (["MODEL", "--prompt", "x", "--top-k", "3"], "greedy"),
    (["MODEL", "--prompt", "x", "--max-new-tokens", "0"], "max-new-tokens"),
    (["MODEL", "--prompt", "x"], "no tokenizer found"),
])
def test_generate_cli_refuses_bad_input_in_one_line(model_dir, capsys, args, match):
    args = [str(model_dir[1]) if a == "MODEL" else a for a in args]
    assert main(["generate", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1, err


def test_a_run_reads_its_token_stores_tokenizer(tmp_path):
    from hybrid_jax.generate.loading import LoadError, checkpoint_tokenizer
    from tests.helpers.training import build_tiny_store

    store = build_tiny_store(tmp_path / "store")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": {"data": {"store": str(store)}}}))
    tok = checkpoint_tokenizer({"run_dir": str(run), "step": 3}, None)
    assert tok.hash == load_tokenizer("byte").hash
    # a mixture's components share one tokenizer: the first component's store gives it
    mix = {"mix": {"a": 0.5, "b": 0.5}, "stores": {"b": "/no/store", "a": str(store)},
           "store": ""}
    (run / "config.json").write_text(json.dumps({"config": {"data": mix}}))
    assert checkpoint_tokenizer({"run_dir": str(run), "step": 3}, None).hash == tok.hash
    (run / "config.json").write_text(json.dumps({"config": {"data": {"store": "/no/store"}}}))
    with pytest.raises(LoadError, match="pass --tokenizer"):
        checkpoint_tokenizer({"run_dir": str(run), "step": 3}, None)
