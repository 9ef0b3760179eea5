"""A claim on a run directory, local or gs://: at most one sweep driver holds a run at a time.

`{run_dir}/lock` holds JSON {host, runner_pid, runner_start, pid_ns, token, time} and, once set,
{worker_pid, worker_start}. Every change to it is one conditional write (objects.py), so no
extra lock is needed, on GCS or on a filesystem:

    try_acquire()  create-if-absent. If a lock exists and is stale, overwrite it on the condition
                   that it is still the version judged stale: of two drivers reclaiming it, the
                   second one's condition fails, it judges again and sees a live holder.
    heartbeat()    rewrite on the condition that it is still our version. False means the claim
                   was lost (judged stale and reclaimed): stop working on the run.
    release()      delete on the condition that it is still our version (a lost claim is left
                   to its new holder).
    holder()       the live holder's record, or None.

Stale: a holder on this host (same hostname and pid namespace) is live while its runner or
worker process is (pid plus start time, so a reused pid does not count), and stale at once when
neither is. Elsewhere it is live until `stale_after` seconds without a heartbeat, the age being
measured by the store's clock: on GCS the server's time of the last write against the server's
time now (gcs.py), so clock skew between hosts does not enter. A lock that is not a JSON object
(written by something else) is judged by its age alone.

Why a stale lock is overwritten, not deleted and re-created: one request instead of two, no
moment without a lock, and the same guarantee wherever a conditional write is enforced
(fake-gcs-server, the test emulator, ignores the condition on deletes but not on writes).

The token (random) makes every record's bytes unique: after a write reported refused, the lock
holding exactly our bytes means the write did happen (google-cloud-storage retried it after a
lost response, and the retry failed its own condition), so the claim is ours.

Heartbeats on GCS: one object sustains about one write per second, so heartbeat every few
seconds at most; `stale_after` should be many heartbeats long.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from typing import Any

from hybrid_jax.procs import HOST, PID_NAMESPACE, alive, parse_record, process_start
from hybrid_jax.storage import objects
from hybrid_jax.storage.paths import as_path

LOCK_NAME = "lock"
DEFAULT_STALE_AFTER = 600.0
_IDENTITY = {"host", "runner_pid", "runner_start", "pid_ns", "token", "time"}


def _encode(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True).encode()


class Claim:
    """The claim on one run directory, as held (or not) by this object."""

    def __init__(self, run_dir: str | os.PathLike, *, stale_after: float = DEFAULT_STALE_AFTER):
        if not stale_after > 0:
            raise ValueError(f"stale_after must be > 0 seconds, got {stale_after!r}")
        self.path = as_path(run_dir) / LOCK_NAME
        self.stale_after = float(stale_after)
        self.reclaimed: dict | None = None  # the stale record replaced by try_acquire, if any
        self._record: dict | None = None
        self._version: Any = None

    @property
    def held(self) -> bool:
        return self._version is not None

    def try_acquire(self) -> bool:
        if self.held:
            raise RuntimeError(f"claim {self.path} is already held by this Claim")
        record = {"host": HOST, "runner_pid": os.getpid(),
                  "runner_start": process_start(os.getpid()), "pid_ns": PID_NAMESPACE,
                  "token": secrets.token_hex(8), "time": time.time()}
        data = _encode(record)
        reclaimed = None
        while True:  # each failed step means another driver changed the lock meanwhile
            version = objects.create(self.path, data)
            if version is not None:
                break
            seen = objects.read(self.path)
            if seen is None:
                continue  # released between our create and our read
            if seen.data == data:  # our create (or reclaim) did happen: see _ours
                version = seen.version
                break
            if self._live(parse_record(seen.data), seen.age):
                return False
            version = objects.replace(self.path, data, seen.version) or self._ours(data)
            if version is not None:
                reclaimed = parse_record(seen.data) or {"unreadable": True}
                break
        self._record, self._version, self.reclaimed = record, version, reclaimed
        return True

    def heartbeat(self, **fields: Any) -> bool:
        """Rewrite the lock (with `fields` added to the record); False if the claim is not
        held, or was lost: then it is no longer held."""
        reserved = sorted(set(fields) & _IDENTITY)
        if reserved:
            raise ValueError(f"heartbeat fields {reserved} would overwrite the claim's own")
        if not self.held:
            return False
        record = {**self._record, **fields, "time": time.time()}
        data = _encode(record)
        version = objects.replace(self.path, data, self._version) or self._ours(data)
        if version is None:
            self._record = self._version = None
            return False
        self._record, self._version = record, version
        return True

    def set_worker(self, pid: int) -> bool:
        """Name the worker process in the record (on this host it keeps the claim live)."""
        return self.heartbeat(worker_pid=pid, worker_start=process_start(pid))

    def release(self) -> bool:
        """Delete the lock if it is still ours; whether it was."""
        if not self.held:
            return False
        version, self._record, self._version = self._version, None, None
        return objects.delete(self.path, version)

    def holder(self) -> dict | None:
        """The live holder's record; None if the run is free (no lock, or a stale one)."""
        seen = objects.read(self.path)
        if seen is None:
            return None
        info = parse_record(seen.data)
        if not self._live(info, seen.age):
            return None
        return info if info is not None else {"host": "?", "unreadable": True}

    def _ours(self, data: bytes):
        """The lock's version if it holds exactly `data`: a write reported refused that did
        happen (a request retried after its response was lost fails its own condition)."""
        seen = objects.read(self.path)
        return seen.version if seen is not None and seen.data == data else None

    def _live(self, info: dict | None, age: float) -> bool:
        # A record without pid_ns (a sweep runner's lock before claims recorded it) is taken
        # as this namespace, as that runner judged it.
        if (info is not None and info.get("host") == HOST
                and info.get("pid_ns", PID_NAMESPACE) == PID_NAMESPACE):
            return (alive(info.get("runner_pid"), info.get("runner_start"))
                    or alive(info.get("worker_pid"), info.get("worker_start")))
        return age <= self.stale_after
