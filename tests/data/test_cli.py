"""`hybrid-jax data {tokenizer,build,info}` end to end, in-process and as `python -m`."""

import json
import subprocess
import sys
import warnings

import pytest

from hybrid_jax.data import open_store
from hybrid_jax.data.cli import main
from hybrid_jax.data.pycode import VersionDriftWarning

from tests.helpers.data import write_text_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_text_corpus(tmp_path_factory.mktemp("cli") / "corpus")


def test_tokenizer_build_info(tmp_path, corpus, capsys):
    model = tmp_path / "tok.model"
    glob = str(corpus / "*.txt")
    assert main(["tokenizer", "--source", "text", "--input", glob, "--vocab-size", "512",
                 "--out", str(model)]) == 0
    assert "vocab 512" in capsys.readouterr().out
    out = tmp_path / "store"
    assert main(["build", "--source", "text", "--input", glob, "--doc-separator", "blank-lines",
                 "--tokenizer", str(model), "--out", str(out), "--val-fraction", "0.1"]) == 0
    store = open_store(out)
    assert store.manifest["source"]["doc_separator"] == "blank-lines"
    assert store.vocab_size == 512 and store.n_train_documents > 100
    capsys.readouterr()
    assert main(["info", str(out), "--tokens", str(2 * store.n_train_tokens)]) == 0
    info = capsys.readouterr().out
    assert "bytes/token" in info and "2.00 epochs" in info and "val " in info
    assert main(["info", str(out), "--tokens", str(5 * store.n_train_tokens)]) == 1
    assert "training tokens missing" in capsys.readouterr().err


def test_python_dash_m_works(tmp_path, corpus):
    out = tmp_path / "store"
    cmd = [sys.executable, "-m", "hybrid_jax.data.cli"]
    subprocess.run(cmd + ["build", "--source", "text", "--input", str(corpus / "*.txt"),
                          "--tokenizer", "byte", "--out", str(out)], check=True, timeout=120,
                   capture_output=True)
    info = subprocess.run(cmd + ["info", str(out)], check=True, capture_output=True, text=True,
                          timeout=120).stdout
    assert "byte vocab 259" in info


def test_pycode_rebuild_warns_on_version_drift(tmp_path):
    out = tmp_path / "pycode"
    args = ["build", "--source", "pycode", "--distributions", "pyyaml,iniconfig", "--tokenizer",
            "byte", "--out", str(out), "--val-fraction", "0.2"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the first build compares against nothing
        assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    for dist in manifest["source"]["distributions"]:
        if dist["name"] == "pyyaml":
            dist["version"] = "0.0.1"
    (tmp_path / "reference.json").write_text(json.dumps(manifest))
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(VersionDriftWarning) as record:
        assert main(args + ["--reference-manifest", str(tmp_path / "reference.json")]) == 0
    messages = [str(w.message) for w in record]
    assert any("pyyaml: 0.0.1 in" in m and "reference.json" in m for m in messages)
    assert any("pyyaml: 0.0.1 in the existing store" in m for m in messages)


@pytest.mark.parametrize("args, message", [
    (["build", "--source", "nope", "--out", "x", "--tokenizer", "byte"], "unknown source"),
    (["build", "--source", "pycode", "--doc-separator", "file", "--out", "x", "--tokenizer",
      "byte"], "--doc-separator applies to the text source only"),
    (["build", "--source", "pycode", "--split", "test", "--out", "x", "--tokenizer", "byte"],
     "--split does not apply to the pycode source"),
    (["build", "--source", "text", "--input", "/nonexistent/*.txt", "--out", "x",
      "--tokenizer", "byte"], "matches no file"),
    (["build", "--source", "pycode", "--distributions", "no-such-dist", "--out", "x",
      "--tokenizer", "byte"], "not installed: no-such-dist"),
])
def test_errors_are_one_line_messages(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("manifest, message", [
    (None, "not a complete token store"),
    ('{"format": "hybrid-jax-tokens", "files": {', "manifest.json: not valid JSON (truncated, "),
    ('{"format": nope}', "manifest.json: not valid JSON (Expecting value at line 1, column 12)"),
    ("[1, 2]", "manifest.json: not a store manifest (a JSON object), got list"),
])
def test_bad_store_is_one_line_naming_the_file_exit_2(tmp_path, capsys, manifest, message):
    store = tmp_path / "store"
    store.mkdir()
    if manifest is not None:
        (store / "manifest.json").write_text(manifest)
    assert main(["info", str(store)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
