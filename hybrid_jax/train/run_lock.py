"""One training process per run directory: `with RunLock(run_dir): ...` around the training.

Why: two trainings in one run directory interleave metrics.jsonl and write orbax checkpoints
over each other; one ends with wrong metrics, the other crashes. The second must be refused
before it writes anything.

What: `{run_dir}/train.lock` holds JSON {host, pid, pid_start, pid_ns, started, started_iso,
argv}. It is not `{run_dir}/lock`: that is a sweep runner's claim on the same directory, and the
runner's own worker trains there. If the lock exists, its holder is judged:
  - same host and pid namespace: held while the process lives (pid plus its start time, so a
    reused pid does not count; a zombie is dead), stale at once when it does not;
  - elsewhere: held while its heartbeat (the file's mtime) is younger than `stale_after`;
  - unreadable (being written, or cut short by a crash): held until `stale_after` old.
A held lock raises RunLockedError at once, naming the holder. A stale one is replaced by
compare-and-swap (only if unchanged since it was judged), so of two processes reclaiming the
same stale lock exactly one wins; the other then sees a live holder. The reclaim is reported as
one line on stderr and kept in `RunLock.reclaimed`. While held, a daemon thread refreshes the
heartbeat every `heartbeat_every` seconds (the loop may sit in compilation for minutes), and
`heartbeat()` lets the loop refresh it too. Release removes the lock only if it is still ours.

Multi-process runs (jax.distributed, one run directory on a shared filesystem): only process 0
takes the lock; the others pass enabled=False. Refusing process 0 alone leaves its peers waiting
in their first collective, so the caller must bring them down too (or lock before initialising).

The seam: RunLock's logic talks only to a LockStore (create-if-absent, read with a version,
compare-and-swap replace, heartbeat and delete if the content is still ours). LocalStore does
that with O_CREAT|O_EXCL and, for replace/touch/delete, an flock on `train.lock.reclaim` with
the version being (device, inode, mtime, content). An object store (gs://) needs none of the
flock: create = write with if_generation_match=0, version = the object's generation, replace =
write with if_generation_match=version, delete = delete with if_generation_match=our
generation, and the heartbeat = a metadata patch with if_generation_match=our generation, its
age read from the object's `updated` time against the store's clock (not ours). Such a store is
not implemented; a URL run_dir raises NotImplementedError.

Limits: a foreign holder's age is our clock minus the file's mtime, so clock skew between hosts
(or with an NFS server) eats into `stale_after`. A Python heartbeat thread runs only while the
main thread releases the GIL, which jax's compilation and device waits do. A holder stopped
(SIGSTOP) on this host keeps its lock; one on another host loses it after `stale_after`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from hybrid_jax.procs import HOST, PID_NAMESPACE, alive, parse_record, process_start

LOCK_NAME = "train.lock"
DEFAULT_STALE_AFTER = 600.0
DEFAULT_HEARTBEAT_EVERY = 30.0


class RunLockedError(RuntimeError):
    """The run directory is held by another live training process."""

    def __init__(self, message: str, holder: dict | None = None):
        super().__init__(message)
        self.holder = holder


@dataclass(frozen=True)
class Seen:
    """A lock as read: its bytes, seconds since its last heartbeat, and a version for CAS."""
    data: bytes
    age: float
    version: Any


class LockStore(Protocol):
    """Where the lock lives. Every write is conditional, so RunLock needs no other locking."""

    where: str

    def create(self, data: bytes) -> bool: ...  # False if a lock exists
    def read(self) -> Seen | None: ...  # None if no lock exists
    def replace(self, version: Any, data: bytes) -> bool: ...  # False if changed since read
    def touch(self, data: bytes) -> bool: ...  # refresh the heartbeat iff it still holds data
    def delete(self, data: bytes) -> bool: ...  # remove iff it still holds data


class LocalStore:
    """A lock file on a local or shared POSIX filesystem."""

    def __init__(self, run_dir: Path):
        if run_dir.exists() and not run_dir.is_dir():
            raise NotADirectoryError(f"run_dir {run_dir} exists and is not a directory")
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / LOCK_NAME
        self.guard = run_dir / (LOCK_NAME + ".reclaim")
        self.where = str(self.path)

    def create(self, data: bytes) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            if os.write(fd, data) != len(data):
                raise OSError(f"short write to {self.path}")
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            self.path.unlink(missing_ok=True)  # an empty lock would block others for stale_after
            raise
        os.close(fd)
        return True

    def read(self) -> Seen | None:
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except FileNotFoundError:
            return None
        version = (st.st_dev, st.st_ino, st.st_mtime_ns, data)
        return Seen(data, time.time() - st.st_mtime, version)

    def replace(self, version: Any, data: bytes) -> bool:
        with self._guarded():
            seen = self.read()
            if seen is None or seen.version != version:
                return False
            self.path.unlink()
            return self.create(data)  # False if a fresh acquirer slipped in after the unlink

    def touch(self, data: bytes) -> bool:
        with self._guarded():
            seen = self.read()
            if seen is None or seen.data != data:
                return False
            os.utime(self.path)
            return True

    def delete(self, data: bytes) -> bool:
        with self._guarded():
            seen = self.read()
            if seen is None or seen.data != data:
                return False
            self.path.unlink()
            return True

    @contextlib.contextmanager
    def _guarded(self):
        fd = os.open(self.guard, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock


def store_for(run_dir: str | os.PathLike) -> LockStore:
    if "://" in str(run_dir):
        raise NotImplementedError(f"run lock for {run_dir}: object-store run directories are "
                                  f"not supported yet (no LockStore for them)")
    return LocalStore(Path(run_dir))


class RunLock:
    """`with RunLock(run_dir):` holds `{run_dir}/train.lock` for this process.

    Raises RunLockedError (a RuntimeError) if a live process holds it, NotADirectoryError if
    run_dir is a file, NotImplementedError for a URL run_dir. A missing run_dir is created.
    enabled=False (processes other than 0 of a multi-process run) makes it do nothing.
    """

    def __init__(self, run_dir: str | os.PathLike, *, enabled: bool = True,
                 stale_after: float = DEFAULT_STALE_AFTER,
                 heartbeat_every: float | None = DEFAULT_HEARTBEAT_EVERY,
                 argv: list[str] | None = None, store: LockStore | None = None):
        if heartbeat_every is not None and not 0 < heartbeat_every < stale_after:
            raise ValueError(f"heartbeat_every={heartbeat_every} must be in (0, stale_after="
                             f"{stale_after})")
        self.run_dir = str(run_dir)
        self.enabled = enabled
        self.stale_after = stale_after
        self.heartbeat_every = heartbeat_every
        self.argv = list(sys.argv if argv is None else argv)
        self.store = store
        self.reclaimed: dict | None = None  # the stale holder replaced on acquire, if any
        self._data: bytes | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        if not self.enabled:
            return
        if self._data is not None:
            raise RuntimeError(f"run lock on {self.run_dir} is already held by this RunLock")
        if self.store is None:
            self.store = store_for(self.run_dir)
        started = time.time()
        data = json.dumps({
            "host": HOST, "pid": os.getpid(), "pid_start": process_start(os.getpid()),
            "pid_ns": PID_NAMESPACE, "started": started,
            "started_iso": datetime.fromtimestamp(started).astimezone().isoformat("T", "seconds"),
            "argv": self.argv}).encode()
        # Every failed step means another process changed the lock meanwhile: judge it again.
        while not self.store.create(data):
            seen = self.store.read()
            if seen is None:
                continue  # released between our create and our read
            info = parse_record(seen.data)
            if not self._stale(info, seen.age):
                raise RunLockedError(self._held_message(info, seen.age), info)
            if self.store.replace(seen.version, data):
                self.reclaimed = info if info is not None else {"unreadable": True}
                why = ("its process is gone" if info is not None and _local(info) else
                       f"no heartbeat for {seen.age:.0f} s")
                print(f"hybrid-jax train: reclaimed the stale lock {self.store.where} of "
                      f"{self._describe(info, seen.age)}: {why}", file=sys.stderr, flush=True)
                break
        self._data = data
        if self.heartbeat_every is not None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name="run-lock-heartbeat",
                                            daemon=True)
            self._thread.start()

    def heartbeat(self) -> bool:
        """Refresh the lock's heartbeat; False if it is no longer ours (or not held)."""
        if not self.enabled:
            return True
        return self._data is not None and self.store.touch(self._data)

    def release(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self._data is not None:
            self.store.delete(self._data)
            self._data = None

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_every):
            if not self.heartbeat():
                print(f"hybrid-jax train: lost the run lock {self.store.where}: another "
                      f"process replaced it", file=sys.stderr, flush=True)
                return

    def _stale(self, info: dict | None, age: float) -> bool:
        if info is not None and _local(info):
            return not alive(info.get("pid"), info.get("pid_start"))
        return age > self.stale_after

    def _held_message(self, info: dict | None, age: float) -> str:
        where = self.store.where
        if info is None:
            return (f"{self.run_dir} is in use by another training process: its lock {where} is "
                    f"being written or was cut short ({age:.0f} s old, stale after "
                    f"{self.stale_after:.0f} s); wait, or remove it if no training runs there")
        beat = "" if _local(info) else (f", heartbeat {age:.0f} s ago, stale after "
                                        f"{self.stale_after:.0f} s")
        return (f"{self.run_dir} is in use by another training process: "
                f"{self._describe(info, age)} (lock {where}{beat}); wait for it or stop it")

    @staticmethod
    def _describe(info: dict | None, age: float) -> str:
        if info is None:
            return f"unreadable, {age:.0f} s old"
        started = info.get("started")
        when = (time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started))
                if isinstance(started, (int, float)) else "?")
        return f"host {info.get('host', '?')}, pid {info.get('pid', '?')}, started {when}"


def _local(info: dict) -> bool:
    """Whether the holder's pid can be checked here: same host and same pid namespace."""
    return info.get("host") == HOST and info.get("pid_ns") == PID_NAMESPACE
