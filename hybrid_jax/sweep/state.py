"""A sweep's state on disk: run claims (lock files), markers, and the results file.

    {root}/results.jsonl          one row per scaling point, unique by (run_id, tokens)
    {root}/runs/{run_id}/         the training run directory (hybrid_jax.train) plus:
        spec.json                 the run's ladder entry and resolved config
        lock                      the claim: JSON {host, runner_pid, worker_pid, *_start, time}
        attempts.jsonl            events: an attempt's start and exit (runner, worker, exit code,
                                  error), its training summary, and resets of its failures
        done.json                 the run completed and its rows are in results.jsonl
        failed.json               retries exhausted or refused; the last traceback
        last_error.json           written by a worker that raised (the runner collects it)
        worker.log                the workers' stdout and stderr

Claims. A lock file is created with os.open(O_CREAT | O_EXCL), so of two runners racing for a
run exactly one gets it. It names the runner and (once started) the worker process. A lock is
stale when, on this host, neither process is alive (pid plus its start time, so a reused pid
does not count), or, from another host, when its owner has not touched it (a heartbeat every
poll) for `stale_after` seconds. A stale lock is removed and re-created while holding an
flock on {root}/claims.lock, so two runners never both reclaim it.

Results. Rows are appended under an flock on {root}/results.lock: the keys already in the file
are read, only new rows are written, as whole lines in one os.write on an O_APPEND descriptor,
then fsync. A row cut by a kill (no trailing newline) is repaired before the next append.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable

from hybrid_jax.procs import HOST, alive, process_start  # noqa: F401 (re-exported)

DEFAULT_STALE_AFTER = 600.0


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


# ---- processes ------------------------------------------------------------------------------
def me() -> dict:
    return {"host": HOST, "runner_pid": os.getpid(), "runner_start": process_start(os.getpid())}


# ---- claims ---------------------------------------------------------------------------------
class Lock:
    """The claim on one run directory."""

    def __init__(self, run_dir: Path, claims_lock: Path, stale_after: float = DEFAULT_STALE_AFTER):
        self.path = Path(run_dir) / "lock"
        self.claims_lock = claims_lock
        self.stale_after = stale_after

    def read(self) -> dict | None:
        return read_json(self.path)

    def holder(self) -> dict | None:
        """The live holder's record, or None if the run is free (no lock, or a stale one)."""
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        info = self.read()
        age = time.time() - mtime
        if info is None:  # being written right now, or cut by a crash
            return None if age > self.stale_after else {"host": "?", "partial": True}
        if info.get("host") == HOST:
            live = (alive(info.get("runner_pid"), info.get("runner_start"))
                    or alive(info.get("worker_pid"), info.get("worker_start")))
            return info if live else None
        return info if age <= self.stale_after else None

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._create():
            return True
        with flocked(self.claims_lock):  # reclaim a stale lock, one runner at a time
            if self.path.exists() and self.holder() is None:
                self.path.unlink(missing_ok=True)
                return self._create()
        return False

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, json.dumps({**me(), "time": time.time()}).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def set_worker(self, pid: int) -> None:
        write_json(self.path, {**me(), "worker_pid": pid, "worker_start": process_start(pid),
                               "time": time.time()})

    def heartbeat(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.path)

    def release(self) -> None:
        info = self.read()
        if info is None or (info.get("host"), info.get("runner_pid")) == (HOST, os.getpid()):
            self.path.unlink(missing_ok=True)


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
