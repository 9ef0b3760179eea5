"""A sweep's result rows on a local path or gs://, one object per row.

    {root}/results.d/{run_id}-{tokens}.json    one row: JSON, keys sorted

Why not one results.jsonl: a GCS object cannot be appended to. An append is a rewrite of the
whole object (or a compose of it with a new one), and two drivers appending at once both read
the old object and the second write drops the first one's rows, unless every append is a
conditional rewrite retried on conflict, which makes each append cost the whole file and
serialises all writers on one object (GCS takes about one write per second per object). One
object per row instead: a row is created with create-if-absent, so its key (run_id, tokens) can
be written once only; a second append of the same row is a no-op, and concurrent appends of
different rows never touch the same object. The first row written for a key is kept, as
sweep.state.append_rows keeps the first line.

A row is never partly visible: one upload on GCS, a fsynced temporary file linked into place on
a filesystem (local.py). An append interrupted half-way leaves some of its rows written; running
it again writes the rest. `read_rows` lists the directory and reads every row (sorted by key);
`export_jsonl` writes them as one results.jsonl for `hybrid-jax fit`.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from etils import epath

from hybrid_jax.storage import objects
from hybrid_jax.storage.paths import as_path, write_text_atomic

ROWS_DIR = "results.d"
_RUN_ID = re.compile(r"[A-Za-z0-9_.=+-]+")
_NAME = re.compile(r"(?P<run_id>[A-Za-z0-9_.=+-]+)-(?P<tokens>[0-9]+)\.json")
_READERS = 16  # concurrent reads: a GCS read is tens of ms, mostly waiting


def row_key(row: dict) -> tuple[str, int]:
    try:
        run_id, tokens = row["run_id"], row["tokens"]
    except KeyError as e:
        raise ValueError(f"a result row needs run_id and tokens; this one has "
                         f"{sorted(row)}") from e
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"result row run_id {run_id!r}: only letters, digits and _.=+- allowed")
    whole = ((isinstance(tokens, int) and not isinstance(tokens, bool))
             or (isinstance(tokens, float) and tokens.is_integer()))
    if not whole or tokens < 0:
        raise ValueError(f"result row {run_id}: tokens must be a whole number >= 0, got "
                         f"{tokens!r}")
    return run_id, int(tokens)


def row_path(root: str | os.PathLike, row: dict) -> epath.Path:
    run_id, tokens = row_key(row)
    return as_path(root) / ROWS_DIR / f"{run_id}-{tokens}.json"


def encode_row(row: dict) -> bytes:
    return (json.dumps(row, sort_keys=True) + "\n").encode()


def append_rows(root: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write the rows whose key has no row yet; returns how many were written."""
    rows = list(rows)
    paths = [row_path(root, row) for row in rows]  # every row checked before any is written
    return sum(objects.create(path, encode_row(row)) is not None
               for path, row in zip(paths, rows))


def read_rows(root: str | os.PathLike) -> list[dict]:
    """Every row under `root`, sorted by (run_id, tokens); [] if there are none. An object in
    results.d that is not a row of its own name's key raises ValueError naming it."""
    directory = as_path(root) / ROWS_DIR
    names = objects.list_names(directory)
    bad = [n for n in names if not _NAME.fullmatch(n)]
    if bad:
        raise ValueError(f"{directory} holds objects that are not result rows: {bad[:5]}")
    with ThreadPoolExecutor(min(_READERS, max(1, len(names)))) as pool:
        datas = list(pool.map(lambda n: objects.read_bytes(directory / n), names))
    rows = []
    for name, data in zip(names, datas):
        if data is None:
            raise ValueError(f"{directory / name} was listed but is gone: result rows are "
                             f"never deleted by the suite")
        rows.append(_check(directory / name, data))
    return sorted(rows, key=row_key)


def _check(path: epath.Path, data: bytes) -> dict:
    try:
        row = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a JSON result row: {e}") from e
    if not isinstance(row, dict):
        raise ValueError(f"{path} is not a JSON object")
    match = _NAME.fullmatch(path.name)
    if row_key(row) != (match["run_id"], int(match["tokens"])):
        raise ValueError(f"{path} holds the row of {row_key(row)}, not of its own name")
    return row


def export_jsonl(root: str | os.PathLike, path: str | os.PathLike) -> int:
    """Write every row as one JSON line each (sorted by key) to `path`, atomically, in
    sweep.state's results.jsonl format; returns how many."""
    rows = read_rows(root)
    write_text_atomic(path, "".join(encode_row(r).decode() for r in rows))
    return len(rows)
