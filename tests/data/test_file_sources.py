"""jsonl (.gz, .zst), parquet and hf-disk sources: the same documents give the same store as
the text source; bad records are one-line errors; the build prints throughput and an ETA."""

import gzip
import sys
import json

import pytest

from hybrid_jax.data import build_store
from hybrid_jax.data.cli import main
from hybrid_jax.data.sources import TextSource, make_source
from hybrid_jax.data.vocab import load_tokenizer

DOCS = [f"document {i}: " + "caf\u00e9 \U0001f600 " * (i % 7) + "x" * (3 * i) for i in range(60)]
DOCS += ["", DOCS[3]]  # an empty document and a duplicate, both dropped


def _store_files(source, out) -> dict:
    return build_store(source, load_tokenizer("byte"), out, val_fraction=0.2,
                       shard_tokens=1000, batch_bytes=500)["files"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    for i, doc in enumerate(DOCS):
        (root / f"{i:03d}.txt").write_text(doc, encoding="utf-8")
    return _store_files(TextSource([str(root / "*.txt")]), root / "store")


NEEDS = "needs the [data] extra (pyarrow, zstandard, datasets)"


def test_jsonl_variants_give_the_text_sources_store(tmp_path, reference):
    zstandard = pytest.importorskip("zstandard", reason=NEEDS)

    lines = "".join(json.dumps({"id": i, "text": d}) + "\n" for i, d in enumerate(DOCS))
    half = len(DOCS) // 2
    (tmp_path / "a.jsonl").write_text("".join(lines.splitlines(True)[:half]))
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress("".join(
        lines.splitlines(True)[half:half + 10]).encode()))
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress("".join(
        lines.splitlines(True)[half + 10:]).encode()))
    source = make_source("jsonl", inputs=[str(tmp_path / "*.jsonl*")])
    assert _store_files(source, tmp_path / "store") == reference
    assert [f["bytes"] for f in source.describe()["files"]] == [
        (tmp_path / n).stat().st_size for n in ("a.jsonl", "b.jsonl.gz", "c.jsonl.zst")]


def test_parquet_and_hf_disk_give_the_text_sources_store(tmp_path, reference):
    datasets = pytest.importorskip("datasets", reason=NEEDS)
    pa = pytest.importorskip("pyarrow", reason=NEEDS)
    pq = pytest.importorskip("pyarrow.parquet", reason=NEEDS)

    table = pa.table({"body": DOCS, "n": list(range(len(DOCS)))})
    pq.write_table(table.slice(0, 20), tmp_path / "0.parquet", row_group_size=7)
    pq.write_table(table.slice(20), tmp_path / "1.parquet")
    parquet = make_source("parquet", inputs=[str(tmp_path / "*.parquet")], text_key="body")
    assert _store_files(parquet, tmp_path / "p") == reference
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"body": DOCS})}).save_to_disk(
        str(tmp_path / "saved"))
    hf = make_source(f"hf-disk:{tmp_path / 'saved'}", text_key="body", split="train")
    assert _store_files(hf, tmp_path / "h") == reference
    with pytest.raises(ValueError, match=r"holds splits \['train'\]; pick one with --split"):
        make_source(f"hf-disk:{tmp_path / 'saved'}", text_key="body")
    with pytest.raises(ValueError, match=r"no column 'text' \(columns: \['body', 'n'\]"):
        list(make_source("parquet", inputs=[str(tmp_path / "*.parquet")]).documents())


@pytest.mark.parametrize("line, message", [
    ('{"text": "ok"}\n{"txt": "no"}\n', r"x.jsonl:2: no 'text' field \(set --text-key\)"),
    ('{"text": "ok"}\nnot json\n', r"x.jsonl:2: not a JSON line"),
    ('{"text": 5}\n', r"x.jsonl:1: 'text' is int, not a string"),
])
def test_bad_json_lines_are_one_line_errors(tmp_path, line, message):
    (tmp_path / "x.jsonl").write_text(line)
    with pytest.raises(ValueError, match=message):
        list(make_source("jsonl", inputs=[str(tmp_path / "x.jsonl")]).documents())


def test_cli_build_prints_throughput_and_eta(tmp_path, capsys):
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    assert main(["build", "--source", "jsonl", "--input", str(tmp_path / "d.jsonl"),
                 "--tokenizer", "byte", "--val-fraction", "0.2", "--out",
                 str(tmp_path / "s")]) == 0
    err = capsys.readouterr().err
    assert "tokenize: 61 docs" in err and "MB/s, 100% of input, ETA 0 s" in err


def test_a_missing_optional_package_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "x.jsonl.zst").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import zstandard raises ImportError
    with pytest.raises(ImportError, match=r"^a .zst input needs zstandard \(the \[data\] extra: "
                       r"pip install -e .\[data\]\)$"):
        list(make_source("jsonl", inputs=[str(tmp_path / "x.jsonl.zst")]).documents())
