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

Storage: the lock is one file or object written only through storage.objects' conditional
operations (create-if-absent; replace and delete if unchanged since read, by a version: a local
file's identity and content compared under an flock, or a GCS generation checked by the
server). A heartbeat rewrites the lock, so its age is the time since the last write: this
host's clock against the file's mtime, or on gs:// the server's clock against the object's
update time. So the same code holds a local and a gs:// run directory.

Limits: on a shared filesystem a foreign holder's age is our clock minus the file's mtime, so
clock skew between hosts (or with an NFS server) eats into `stale_after`. A Python heartbeat thread runs only while the
main thread releases the GIL, which jax's compilation and device waits do. A holder stopped
(SIGSTOP) on this host keeps its lock; one on another host loses it after `stale_after`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from datetime import datetime
from typing import Any

from hybrid_jax.procs import HOST, PID_NAMESPACE, alive, parse_record, process_start
from hybrid_jax.storage import objects
from hybrid_jax.storage.paths import as_path, is_object_store

LOCK_NAME = "train.lock"
DEFAULT_STALE_AFTER = 600.0
DEFAULT_HEARTBEAT_EVERY = 30.0


class RunLockedError(RuntimeError):
    """The run directory is held by another live training process."""

    def __init__(self, message: str, holder: dict | None = None):
        super().__init__(message)
        self.holder = holder


class LockFile:
    """`{run_dir}/train.lock` through storage.objects: every write is conditional (a local
    version is compared under an flock, a GCS generation by the server), so RunLock needs no
    other locking, on a filesystem or on gs:// alike."""

    def __init__(self, run_dir: str | os.PathLike):
        directory = as_path(run_dir)
        if not is_object_store(directory):
            if directory.exists() and not directory.is_dir():
                raise NotADirectoryError(f"run_dir {directory} exists and is not a directory")
            directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / LOCK_NAME
        self.where = str(self.path)

    def create(self, data: bytes) -> bool:  # False if a lock exists
        return objects.create(self.path, data) is not None

    def read(self) -> objects.Seen | None:  # None if no lock exists
        return objects.read(self.path)

    def replace(self, version: Any, data: bytes) -> bool:  # False if changed since read
        return objects.replace(self.path, data, version) is not None

    def touch(self, data: bytes) -> bool:
        """Refresh the heartbeat (a rewrite: the write time is the heartbeat) iff still ours."""
        seen = self.read()
        return (seen is not None and seen.data == data
                and objects.replace(self.path, data, seen.version) is not None)

    def delete(self, data: bytes) -> bool:  # remove iff it still holds data
        seen = self.read()
        return seen is not None and seen.data == data and objects.delete(self.path, seen.version)


class RunLock:
    """`with RunLock(run_dir):` holds `{run_dir}/train.lock` for this process.

    Raises RunLockedError (a RuntimeError) if a live process holds it, NotADirectoryError if
    a local run_dir is a file. A missing local run_dir is created.
    enabled=False (processes other than 0 of a multi-process run) makes it do nothing.
    """

    def __init__(self, run_dir: str | os.PathLike, *, enabled: bool = True,
                 stale_after: float = DEFAULT_STALE_AFTER,
                 heartbeat_every: float | None = DEFAULT_HEARTBEAT_EVERY,
                 argv: list[str] | None = None, store: LockFile | None = None):
        if heartbeat_every is not None and not 0 < heartbeat_every < stale_after:
            raise ValueError(f"heartbeat_every={heartbeat_every} must be in (0, stale_after="
                             f"{stale_after})")
        self.run_dir = str(run_dir)
        self.enabled = enabled
        self.stale_after = stale_after
        self.heartbeat_every = heartbeat_every
        self.argv = list(sys.argv if argv is None else argv)
        self.store = store  # None: LockFile(run_dir) at acquire; tests pass a slower one
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
            self.store = LockFile(self.run_dir)
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
