"""The same conditional operations as gcs.py, on a local or shared POSIX filesystem.

    create(path, data)             the bytes go to a temporary file, fsynced, then os.link'ed to
                                   `path`: link fails if `path` exists, and a reader sees the
                                   whole file or none (an O_EXCL create would show it empty
                                   until written, and a crash would leave it so)
    replace(path, data, version)   under an flock on `.{name}.flock` beside it: compare the
                                   version, then os.replace a fsynced temporary file
    delete(path, version)          under the same flock: compare the version, then unlink

A version is (device, inode, mtime in ns, bytes): any write makes a new file, so a new inode
and mtime; the bytes make an equal version mean equal content even if an inode number and a
coarse mtime were both reused. Ages are this host's clock minus the file's mtime (on a shared
filesystem, clock skew with its server counts).

Temporary files are `.{name}.{pid}.{random}.tmp` in the same directory (a rename or link does
not cross filesystems); one left by a crash is ignored by listings (names starting with '.').
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Seen:
    data: bytes
    age: float  # seconds since the last write
    version: Any


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _write_tmp(path: Path, data: bytes) -> tuple[Path, Any]:
    tmp = _tmp(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp, (st.st_dev, st.st_ino, st.st_mtime_ns, data)


def create(path: str | os.PathLike, data: bytes) -> Any | None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, version = _write_tmp(path, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return None
    except OSError as e:
        if e.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise OSError(e.errno, f"{path.parent}: this filesystem has no hard links, which "
                                   f"atomic create-if-absent relies on") from e
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return version


def read(path: str | os.PathLike) -> Seen | None:
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except FileNotFoundError:
        return None
    return Seen(data, max(0.0, time.time() - st.st_mtime),
                (st.st_dev, st.st_ino, st.st_mtime_ns, data))


def replace(path: str | os.PathLike, data: bytes, version: Any) -> Any | None:
    path = Path(path)
    if not path.parent.is_dir():
        return None
    with _guarded(path):
        seen = read(path)
        if seen is None or seen.version != version:
            return None
        tmp, new = _write_tmp(path, data)
        os.replace(tmp, path)
        return new


def delete(path: str | os.PathLike, version: Any | None = None) -> bool:
    path = Path(path)
    if not path.parent.is_dir():
        return False
    with _guarded(path):
        seen = read(path)
        if seen is None or (version is not None and seen.version != version):
            return False
        path.unlink()
        return True


def append(path: str | os.PathLike, data: bytes, *, sync: bool = True) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.write(fd, data) != len(data):
            raise OSError(f"short write to {path}")
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def list_names(directory: str | os.PathLike) -> list[str]:
    """File names in `directory` (not starting with '.'); [] if it does not exist."""
    try:
        return sorted(e.name for e in os.scandir(directory)
                      if not e.name.startswith(".") and e.is_file())
    except FileNotFoundError:
        return []


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """A reader sees the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, _ = _write_tmp(path, data)
    os.replace(tmp, path)


@contextlib.contextmanager
def _guarded(path: Path):
    """An flock beside `path`; replace and delete hold it, so their compare and their write are
    one step for every process using this module (create needs none: link is atomic)."""
    fd = os.open(path.with_name(f".{path.name}.flock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the flock
