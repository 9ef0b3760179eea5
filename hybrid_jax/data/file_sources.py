"""Sources of many documents per file, read as a stream: JSON lines, Parquet, `datasets` on disk.

    jsonl     one JSON object per line, its text under `text_key`; `.gz` and `.zst` files are
              decompressed on the fly (`.zst` needs the zstandard package)
    parquet   the string column `text_key`, a row-group batch at a time (pyarrow)
    hf-disk   a Dataset saved with `datasets.save_to_disk` (load_from_disk; a DatasetDict needs
              a split), column `text_key`

All put every document in the one validation group "val". Each records its input files with
size and sha256 (hashed while read, so big files are read once) for the manifest, and reports
`input_progress()` (bytes or rows done, total) for the build's ETA. pyarrow, zstandard and
datasets are optional (the [data] extra) and imported only by the source that needs them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from collections.abc import Iterator

from hybrid_jax.data.document import DEFAULT_GROUP, Document, expand_inputs

_EXTRA = "pip install -e .[data]"


def _need(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{what} needs {module.split('.')[0]} (the [data] extra: {_EXTRA})"
                          ) from None


class _HashingReader(io.RawIOBase):
    """A binary file that hashes and counts what is read through it."""

    def __init__(self, path: str):
        self._f = open(path, "rb")
        self.sha256, self.done = hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._f.readinto(buffer)
        self.sha256.update(memoryview(buffer)[:n])
        self.done += n
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


class _FileSource:
    groups = [DEFAULT_GROUP]

    def __init__(self, inputs: list[str], text_key: str):
        if not inputs:
            raise ValueError(f"the {self.kind} source needs --input FILE_OR_GLOB ...")
        self.paths = expand_inputs(inputs)
        self.text_key = text_key
        self.total = sum(os.path.getsize(p) for p in self.paths)
        self.files: list[dict] = []
        self._done, self._reader = 0, None

    def input_progress(self) -> tuple[int, int]:
        return self._done + (self._reader.done if self._reader else 0), self.total

    def _text(self, value, where: str) -> str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: {self.text_key!r} is {type(value).__name__}, not a string")
        return value

    def describe(self) -> dict:
        return {"kind": self.kind, "text_key": self.text_key, "files": self.files}

    def documents(self) -> Iterator[Document]:
        self.files, self._done = [], 0
        for path in self.paths:
            self._reader = _HashingReader(path)
            try:
                yield from self._read(path, self._reader)
                while self._reader.read(1 << 20):  # hash any bytes the format left unread
                    pass
            finally:
                self._reader.close()
            self.files.append({"path": path, "sha256": self._reader.sha256.hexdigest(),
                               "bytes": self._reader.done})
            self._done += self._reader.done
            self._reader = None


class JsonlSource(_FileSource):
    kind = "jsonl"

    def _read(self, path: str, raw: _HashingReader) -> Iterator[Document]:
        if path.endswith(".gz"):
            stream = gzip.GzipFile(fileobj=raw)
        elif path.endswith(".zst"):
            stream = _need("zstandard", "a .zst input").ZstdDecompressor().stream_reader(
                raw, closefd=False)
        else:
            stream = raw
        text = io.TextIOWrapper(stream, encoding="utf-8")
        try:
            for n, line in enumerate(text, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not a JSON line ({e.msg})") from None
                if not isinstance(record, dict) or self.text_key not in record:
                    raise ValueError(f"{path}:{n}: no {self.text_key!r} field (set --text-key)")
                yield Document(self._text(record[self.text_key], f"{path}:{n}"))
        finally:
            text.detach()  # `raw` stays open: documents() hashes what is left, then closes it


class ParquetSource(_FileSource):
    kind = "parquet"

    def _read(self, path: str, raw: _HashingReader) -> Iterator[Document]:
        pq = _need("pyarrow.parquet", "the parquet source")
        file = pq.ParquetFile(path)  # needs seeking; `raw` then hashes the file after reading
        if self.text_key not in file.schema_arrow.names:
            raise ValueError(f"{path}: no column {self.text_key!r} (columns: "
                             f"{file.schema_arrow.names}; set --text-key)")
        for batch in file.iter_batches(columns=[self.text_key], batch_size=4096):
            for text in batch.column(0).to_pylist():
                yield Document(self._text(text, path))


class HfDiskSource:
    """A `datasets` Dataset saved with save_to_disk, read in batches of rows."""

    kind = "hf-disk"
    groups = [DEFAULT_GROUP]

    def __init__(self, path: str, text_key: str, split: str | None):
        datasets = _need("datasets", "the hf-disk source")
        ds = datasets.load_from_disk(os.path.expanduser(path))
        if isinstance(ds, datasets.DatasetDict):
            if split is None or split not in ds:
                raise ValueError(f"{path} holds splits {sorted(ds)}; pick one with --split")
            ds = ds[split]
        elif split is not None:
            raise ValueError(f"{path} is a single Dataset; --split does not apply")
        if text_key not in ds.column_names:
            raise ValueError(f"{path}: no column {text_key!r} (columns: {ds.column_names}; "
                             "set --text-key)")
        self.path, self.text_key, self.split, self.ds = path, text_key, split, ds
        self._done = 0

    def input_progress(self) -> tuple[int, int]:
        return self._done, len(self.ds)

    def documents(self) -> Iterator[Document]:
        self._done = 0
        for batch in self.ds.select_columns([self.text_key]).iter(batch_size=4096):
            for text in batch[self.text_key]:
                self._done += 1
                yield Document(text if isinstance(text, str) else _bad(self.path, text))

    def describe(self) -> dict:
        return {"kind": self.kind, "path": os.path.abspath(os.path.expanduser(self.path)),
                "split": self.split, "text_key": self.text_key, "rows": len(self.ds),
                "fingerprint": self.ds._fingerprint}


def _bad(path: str, value) -> str:
    raise ValueError(f"{path}: a row's text is {type(value).__name__}, not a string")
