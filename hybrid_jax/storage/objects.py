"""Conditional object operations on either kind of path: gs:// (gcs.py) or local (local.py).

Every state change the sweep makes to shared state is one of these; none is a read followed by
an unconditional write, so no state change is lost to a concurrent one:

    create(path, data) -> version | None       None: an object exists
    read(path) -> Seen | None                  bytes, age since the last write, version
    replace(path, data, version) -> version | None   None: it changed since `version`
    delete(path, version) -> bool              False: it changed since `version`, or is gone
    append(path, data)                         data added at the end, never lost to a
                                               concurrent append

A version is opaque: a GCS generation, or local.py's (device, inode, mtime, bytes).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from hybrid_jax.storage import gcs, local
from hybrid_jax.storage.local import Seen

is_object_store = gcs.is_gcs_path

__all__ = ["Seen", "append", "create", "delete", "list_names", "read", "read_bytes", "replace",
           "sha256", "write_atomic"]


def create(path: str | os.PathLike, data: bytes) -> Any | None:
    return (gcs if is_object_store(path) else local).create(path, data)


def read(path: str | os.PathLike) -> Seen | None:
    if not is_object_store(path):
        return local.read(path)
    seen = gcs.read(path)
    return None if seen is None else Seen(seen[0], seen[1].age, seen[1].generation)


def replace(path: str | os.PathLike, data: bytes, version: Any) -> Any | None:
    return (gcs if is_object_store(path) else local).replace(path, data, version)


def delete(path: str | os.PathLike, version: Any | None = None) -> bool:
    return (gcs if is_object_store(path) else local).delete(path, version)


def read_bytes(path: str | os.PathLike) -> bytes | None:
    if is_object_store(path):
        return gcs.read_bytes(path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """A reader sees the old content or the whole new one (one upload on GCS)."""
    if is_object_store(path):
        gcs.write(path, data)
    else:
        local.write_atomic(path, data)


def append(path: str | os.PathLike, data: bytes, *, sync: bool = True) -> None:
    """Add `data` at the end of the file or object (created if missing).

    Local: one write on an O_APPEND descriptor, then fsync unless sync=False (a log written
    every step, whose loss a resume repairs); concurrent appenders' writes do not interleave
    within one write. gs://: an object cannot be appended to, so this rewrites it on
    the condition that it is unchanged since read, and reads again on conflict. Each append
    costs the whole object, so it suits small or rarely flushed logs (an attempt log, metrics
    flushed every few tens of seconds), not a per-step stream.
    """
    if not is_object_store(path):
        local.append(path, data, sync=sync)
        return
    while True:
        seen = read(path)
        old = b"" if seen is None else seen.data
        written = (create(path, data) if seen is None
                   else replace(path, old + data, seen.version))
        if written is not None:
            return
        # Refused: another writer came first, or our write landed and only its response was
        # lost (the client's retry then fails its own condition). Appending again would then
        # add the data twice.
        now = read(path)
        if now is not None and now.data == old + data:
            return


def sha256(path: str | os.PathLike) -> tuple[str, int] | None:
    """(sha256 hex digest, size in bytes) of the file or object, read in chunks (a gs:// object
    by ranged reads of one generation, never whole in memory); None if there is none."""
    if is_object_store(path):
        return gcs.sha256(path)
    try:
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256")
            return digest.hexdigest(), f.tell()
    except FileNotFoundError:
        return None


def list_names(directory: str | os.PathLike) -> list[str]:
    """Names of the objects (files) directly in `directory`, sorted, without names starting
    with '.' (a local crash's temporary files); [] if there are none."""
    if not is_object_store(directory):
        return local.list_names(directory)
    bucket, prefix = gcs.split(directory)
    prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
    names, _ = gcs.list_names(bucket, prefix, delimiter="/")
    return sorted(n[len(prefix):] for n in names
                  if n != prefix and not n[len(prefix):].startswith("."))
