"""Document sources: what a token store is built from.

A source yields `Document`s (document.py: text, group, and tokens where the text arrives
already tokenized) and describes itself for the manifest (`describe()`, complete once
`documents()` is exhausted). `group` names the validation set a held-out document goes to.

`make_source("pycode" | "text" | "jsonl" | "parquet" | "hf-disk:PATH" | "tfds:NAME[/CONFIG]" |
"seqio:TASK", ...)` picks one (file_sources.py: jsonl, parquet, hf-disk). The
source modules import document.py, never this module; the tfds and seqio sources import
TensorFlow only when such a source is made.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from hybrid_jax.data.document import DEFAULT_GROUP, Document, expand_inputs, split_documents
from hybrid_jax.data.file_sources import HfDiskSource, JsonlSource, ParquetSource
from hybrid_jax.data.pycode import DEFAULT_DISTRIBUTIONS, PycodeSource
from hybrid_jax.data.seqio_source import SeqioSource
from hybrid_jax.data.tfds_source import TfdsSource


class TextSource:
    """Plain UTF-8 text files; one group ("val")."""

    kind = "text"

    def __init__(self, inputs: list[str], doc_separator: str = "file"):
        if not inputs:
            raise ValueError("the text source needs --input FILE_OR_GLOB ...")
        self.paths = expand_inputs(inputs)
        self.doc_separator = doc_separator
        self.groups = [DEFAULT_GROUP]
        self.files: list[dict] = []

    def documents(self) -> Iterator[Document]:
        self.files = []
        for path in self.paths:
            raw = Path(path).read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path} is not UTF-8 text: {e}") from None
            self.files.append({"path": path, "sha256": hashlib.sha256(raw).hexdigest(),
                               "bytes": len(raw)})
            for doc in split_documents(text, self.doc_separator):
                yield Document(doc)

    def describe(self) -> dict:
        return {"kind": self.kind, "doc_separator": self.doc_separator, "files": self.files}


def make_source(spec: str, *, inputs: list[str] | None = None, doc_separator: str = "file",
                distributions: list[str] | None = None, text_key: str | None = None,
                split: str | None = None, data_dir: str | None = None,
                tokenizer_path: str | None = None, imports: list[str] | None = None):
    """The source named by `spec`; options that the source does not use must be left unset."""
    kind, _, name = spec.partition(":")
    if kind == "pycode":
        _reject_unused(kind, inputs=inputs, text_key=text_key, data_dir=data_dir, split=split,
                       imports=imports)
        return PycodeSource(tuple(distributions) if distributions else DEFAULT_DISTRIBUTIONS)
    if kind == "text":
        _reject_unused(kind, distributions=distributions, text_key=text_key, data_dir=data_dir,
                       split=split, imports=imports)
        return TextSource(inputs or [], doc_separator)
    if kind in ("jsonl", "parquet") and not name:
        _reject_unused(kind, distributions=distributions, data_dir=data_dir, split=split,
                       imports=imports)
        cls = JsonlSource if kind == "jsonl" else ParquetSource
        return cls(inputs or [], text_key or "text")
    if kind == "hf-disk" and name:
        _reject_unused(kind, inputs=inputs, distributions=distributions, data_dir=data_dir,
                       imports=imports)
        return HfDiskSource(name, text_key or "text", split)
    if kind == "tfds" and name:
        _reject_unused(kind, inputs=inputs, distributions=distributions)
        return TfdsSource(name, split=split or "train", text_key=text_key or "text", data_dir=data_dir,
                          imports=imports or [])
    if kind == "seqio" and name:
        _reject_unused(kind, distributions=distributions, data_dir=data_dir)
        return SeqioSource(name, split=split or "train", feature=text_key or "targets",
                           inputs=inputs, tokenizer_path=tokenizer_path, imports=imports or [])
    raise ValueError(f"unknown source {spec!r}: use pycode, text, jsonl, parquet, hf-disk:PATH, "
                     "tfds:NAME[/CONFIG] or seqio:TASK")


def _reject_unused(kind: str, **options) -> None:
    for option, value in options.items():
        if value:
            flag = option.replace("_", "-").replace("imports", "import")
            raise ValueError(f"--{flag} does not apply to the {kind} source")
