"""Token stores: build (pycode, text), verify, corruption, interrupted builds, split, licenses."""

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from hybrid_jax.data import StoreError, build_store, open_store
from hybrid_jax.data.build import split_threshold, token_dtype
from hybrid_jax.data.document import split_documents
from hybrid_jax.data.pycode import (DEFAULT_DISTRIBUTIONS, LicenseError, PycodeSource,
                                    VersionDriftWarning, license_of, warn_version_drift)
from hybrid_jax.data.sources import TextSource
from hybrid_jax.data.tokenizer import train_sentencepiece
from hybrid_jax.data.vocab import load_tokenizer

from tests.helpers.data import FakeDist, write_text_corpus

# one or two distributions per family, a few hundred kB of source in all
SMALL_DISTS = ["pyyaml", "iniconfig", "cycler", "opt-einsum"]


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    return write_text_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory, text_dir):
    docs = [p.read_text(encoding="utf-8") for p in sorted(text_dir.glob("*.txt"))]
    out = tmp_path_factory.mktemp("tok") / "sp512.model"
    train_sentencepiece(docs, out, vocab_size=512)
    return out


@pytest.fixture(scope="module")
def text_store(tmp_path_factory, text_dir, sp_model):
    out = tmp_path_factory.mktemp("stores") / "text"
    build_store(TextSource([str(text_dir / "*.txt")]), load_tokenizer(sp_model), out,
                val_fraction=0.3, shard_tokens=5000)
    return out


def _documents(array, tok) -> list[str]:
    offsets = array.doc_offsets
    return [tok.decode(array.read(int(a), int(b - a) - 1)) for a, b in zip(offsets[:-1], offsets[1:])]


def test_text_store_holds_every_document_once_in_hash_order(text_dir, text_store, sp_model):
    store = open_store(text_store)
    tok = load_tokenizer(sp_model)
    assert store.tokenizer_hash == tok.hash and store.validation_set_names == ["val"]
    assert store.dtype == np.uint16 and len(store.train.shards) > 3
    train, val = _documents(store.train, tok), _documents(store.validation("val"), tok)
    sources = {p.read_text(encoding="utf-8") for p in text_dir.glob("*.txt")} - {""}
    assert sorted(train + val) == sorted(sources)  # the duplicate and the empty file dropped
    m = store.manifest
    assert m["documents"] == {"kept": len(sources), "duplicates_dropped": 1, "empty_dropped": 1}
    threshold = split_threshold(0.3)
    digest = [hashlib.sha256(d.encode()).digest() for d in train]
    assert digest == sorted(digest)
    assert all(int.from_bytes(d[:8], "big") >= threshold for d in digest)
    assert all(int.from_bytes(hashlib.sha256(d.encode()).digest()[:8], "big") < threshold
               for d in val) and val
    # streams are EOS doc EOS doc ... EOS, and byte counts are the original text's
    tokens = store.train.read(0, len(store.train))
    assert (tokens[store.train.doc_offsets - 1] == store.eos_id).all()
    assert store.train.doc_bytes.tolist() == [len(d.encode()) for d in train]
    files = {Path(f["path"]).name: f for f in m["source"]["files"]}
    raw = (text_dir / "json.txt").read_bytes()
    assert files["json.txt"]["sha256"] == hashlib.sha256(raw).hexdigest()
    assert m["tokenizer"]["token_bytes_exact"] is True


def test_pycode_store_records_distributions_and_families(tmp_path, sp_model):
    source = PycodeSource(SMALL_DISTS)
    out = tmp_path / "pycode"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = build_store(source, load_tokenizer(sp_model), out, val_fraction=0.3,
                        shard_tokens=20000)
    store = open_store(out)
    # a family whose every document landed in train is left out, with a warning naming it
    empty = m["split"]["empty_validation_sets"]
    assert set(store.validation_set_names) | set(empty) == {"ml", "plotting", "tools"}
    assert all(any(repr(g) in str(w.message) for w in caught) for g in empty)
    dists = {d["name"]: d for d in m["source"]["distributions"]}
    assert set(dists) == {"pyyaml", "iniconfig", "cycler", "opt-einsum"}
    assert dists["cycler"]["family"] == "plotting" and dists["pyyaml"]["family"] == "tools"
    for name, d in dists.items():
        import importlib.metadata as md

        assert d["version"] == md.version(name) and d["license"] and d["files"]
        f = d["files"][0]
        on_disk = md.distribution(name).locate_file(f["path"])
        assert hashlib.sha256(Path(on_disk).read_bytes()).hexdigest() == f["sha256"]
    assert "tools" in store.validation_set_names  # pyyaml + iniconfig: ~20 files, 30% held out
    assert store.n_train_tokens > 10_000


def test_default_distributions_are_permissive_where_installed():
    import importlib.metadata as md

    for name in DEFAULT_DISTRIBUTIONS:
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        license_, ok = license_of(dist)
        assert ok, f"{name}: {license_}"


@pytest.mark.parametrize("fields, ok", [
    (dict(License_Expression="MIT OR Apache-2.0"), True),
    (dict(License_Expression="BSD-3-Clause AND GPL-3.0-only"), False),
    (dict(Classifier=["License :: OSI Approved :: BSD License"]), True),
    (dict(Classifier=["License :: OSI Approved :: GNU General Public License v3 (GPLv3)"]), False),
    (dict(License="Mozilla Public License 2.0"), False),
    (dict(), False),
])
def test_license_classification(fields, ok):
    assert license_of(FakeDist(**fields))[1] is ok


def test_non_permissive_or_missing_distribution_is_refused(monkeypatch):
    import hybrid_jax.data.pycode as pycode

    monkeypatch.setattr(pycode, "license_of", lambda dist: ("GPL-3.0-only", False))
    with pytest.raises(LicenseError, match="pyyaml \\(GPL-3.0-only\\)"):
        PycodeSource(["pyyaml"])
    with pytest.raises(ValueError, match="not installed: no-such-dist"):
        PycodeSource(["no-such-dist"])


def test_version_drift_warns():
    now = {"distributions": [{"name": "numpy", "version": "2.5.5"}, {"name": "scipy", "version": "1"}]}
    ref = {"distributions": [{"name": "numpy", "version": "2.0.0"}, {"name": "scipy", "version": "1"}]}
    with pytest.warns(VersionDriftWarning, match="numpy: 2.0.0 in ref, 2.5.5 installed"):
        assert len(warn_version_drift(now, ref, "ref")) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_version_drift(now, now, "same") == []


def test_doc_separators():
    text = "a\nb\n\n\n  c\n \t\nd"
    assert split_documents(text, "file") == [text]
    assert split_documents(text, "blank-lines") == ["a\nb", "  c", "d"]
    assert split_documents(text, "\n") == ["a", "b", "", "", "  c", " \t", "d"]
    assert split_documents("x<doc>y", "<doc>") == ["x", "y"]


def test_token_dtype():
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def _copy(store: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(store, dst)
    return dst


def test_corrupt_shard_is_named(text_store, tmp_path):
    store = _copy(text_store, tmp_path)
    shard = store / "train" / "tokens-00001.bin"
    data = bytearray(shard.read_bytes())
    data[100] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="tokens-00001.bin: sha256 .* does not match"):
        open_store(store)
    open_store(store, verify=False)  # explicit opt-out still opens


def test_missing_shard_and_manifest_are_named(text_store, tmp_path):
    store = _copy(text_store, tmp_path)
    (store / "val" / "val" / "tokens-00000.bin").unlink()
    with pytest.raises(StoreError, match="val/val/tokens-00000.bin: missing"):
        open_store(store)
    (store / "manifest.json").unlink()
    with pytest.raises(StoreError, match="not a complete token store"):
        open_store(store)


def test_malformed_manifest_is_a_store_error_naming_it(text_store, tmp_path):
    store = _copy(text_store, tmp_path)
    manifest_path = store / "manifest.json"
    text = manifest_path.read_text()
    manifest_path.write_text(text[:len(text) // 2])  # a write cut short
    with pytest.raises(StoreError, match=r"manifest.json: not valid JSON \(truncated, "):
        open_store(store)
    manifest = json.loads(text)
    del manifest["tokenizer"]["vocab_size"]
    manifest_path.write_text(json.dumps(manifest))
    for verify in (True, False):
        with pytest.raises(StoreError, match="manifest.json: malformed manifest, missing key "
                                             "'vocab_size'"):
            open_store(store, verify=verify)
    manifest = json.loads(text)
    manifest["files"] = []
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="manifest.json: malformed manifest"):
        open_store(store)


def test_replaced_tokenizer_is_detected(text_store, tmp_path):
    store = _copy(text_store, tmp_path)
    (store / "tokenizer.model").write_bytes(b"not a model")
    with pytest.raises(StoreError, match="tokenizer.model"):
        open_store(store)


_KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from hybrid_jax.data.build import build_store
    from hybrid_jax.data.sources import TextSource
    from hybrid_jax.data.vocab import load_tokenizer

    def progress(stage, n):
        if stage == sys.argv[3]:
            os.kill(os.getpid(), signal.SIGKILL)

    build_store(TextSource([sys.argv[1]]), load_tokenizer("byte"), sys.argv[2],
                val_fraction=0.3, shard_tokens=50_000, on_progress=progress)
""")


def _build_killed_at(stage: str, pattern: str, out: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, pattern, str(out), stage],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr


@pytest.mark.parametrize("stage", ["tokenized", "train written", "manifest written"])
def test_killed_build_never_looks_complete_and_rebuild_equals_clean(text_dir, tmp_path, stage):
    pattern = str(text_dir / "*.txt")
    clean = build_store(TextSource([pattern]), load_tokenizer("byte"), tmp_path / "clean",
                        val_fraction=0.3, shard_tokens=50_000)
    out = tmp_path / "store"
    _build_killed_at(stage, pattern, out)
    assert (tmp_path / "store.build").is_dir(), "the killed build left its staging directory"
    with pytest.raises(StoreError, match="not a complete token store.*unfinished build"):
        open_store(out)
    rebuilt = build_store(TextSource([pattern]), load_tokenizer("byte"), out,
                          val_fraction=0.3, shard_tokens=50_000)
    assert not (tmp_path / "store.build").exists()
    assert rebuilt["files"] == clean["files"]
    open_store(out)


def test_killed_rebuild_keeps_the_previous_store(text_dir, tmp_path):
    pattern = str(text_dir / "*.txt")
    out = tmp_path / "store"
    first = build_store(TextSource([pattern]), load_tokenizer("byte"), out, val_fraction=0.3,
                        shard_tokens=50_000)
    _build_killed_at("train written", pattern, out)
    assert open_store(out).manifest["files"] == first["files"]


def test_refuses_to_replace_a_non_store(tmp_path, text_dir):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("...")
    with pytest.raises(FileExistsError, match="not a token store"):
        build_store(TextSource([str(text_dir / "*.txt")]), load_tokenizer("byte"),
                    tmp_path / "precious")
