"""A sweep's state on disk: markers and the results file (run claims: storage/claims.py).

    {root}/results.jsonl          one row per scaling point, unique by (run_id, tokens)
    {root}/runs/{run_id}/         the training run directory (hybrid_jax.train) plus:
        spec.json                 the run's ladder entry and resolved config
        lock                      the claim (storage/claims.py): host, pids, heartbeat time
        attempts.jsonl            events: an attempt's start and exit (runner, worker, exit code,
                                  error), its training summary, and resets of its failures
        done.json                 the run completed and its rows are in results.jsonl
        failed.json               retries exhausted or refused; the last traceback
        last_error.json           written by a worker that raised (the runner collects it)
        worker.log                the workers' stdout and stderr

Results. Rows are appended under an flock on {root}/results.lock: the keys already in the file
are read, only new rows are written, as whole lines in one os.write on an O_APPEND descriptor,
then fsync. A row cut by a kill (no trailing newline) is repaired before the next append.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any, Iterable

from hybrid_jax.procs import HOST  # noqa: F401 (re-exported)



# ---- small file helpers -------------------------------------------------------------------
def write_json(path: Path, data: Any) -> None:
    """Atomic: a reader sees the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(data, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def append_line(path: Path, record: dict) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


def read_lines(path: Path) -> list[dict]:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    return out


@contextlib.contextmanager
def flocked(path: Path):
    """An exclusive flock on `path` (created if missing); released on exit or process death."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# ---- results ------------------------------------------------------------------------------
def row_key(row: dict) -> tuple[str, int]:
    return (row["run_id"], int(row["tokens"]))


def read_rows(path: Path) -> list[dict]:
    return [r for r in read_lines(path) if "run_id" in r and "tokens" in r]


def append_rows(path: Path, rows: Iterable[dict]) -> int:
    """Append the rows whose (run_id, tokens) is not in the file yet; returns how many."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    with flocked(path.with_name(path.stem + ".lock")):
        _repair_tail(path)
        seen = {row_key(r) for r in read_rows(path)}
        new = []
        for row in rows:
            if row_key(row) not in seen:
                seen.add(row_key(row))
                new.append(row)
        if not new:
            return 0
        data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in new).encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
            os.fsync(fd)
        finally:
            os.close(fd)
        return len(new)


def _repair_tail(path: Path) -> None:
    """Drop a last line without its newline (a write cut by a kill or a full disk)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if not size:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)
        f.flush()
        os.fsync(f.fileno())
