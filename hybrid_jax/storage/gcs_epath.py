"""epath's backend for gs:// on google-cloud-storage (why not gcsfs or tf.io.gfile: paths.py).

GCS has objects, not directories. As in tf.io.gfile, a directory is a name prefix ending in
'/', and mkdir writes an empty placeholder object `dir/`, so that a new empty directory exists
at once. A path is a directory when any
object starts with `path/`; it exists when it is an object or a directory. The bucket is the
root: it exists if the bucket does, and is never created or removed here.

What is atomic: writing one object (an upload is visible whole or not at all), and nothing that
touches several: rmtree deletes objects one by one (one request each), rename of a directory copies each object
and then deletes the originals (orbax does not rename on GCS: it commits a checkpoint by writing
a commit_success.txt file into it). Files opened for writing are buffered in memory and uploaded
on close; a `with` block left by an exception uploads nothing. Files opened for reading are
downloaded whole. Mode 'a' is refused: an object cannot be appended to.
"""

from __future__ import annotations

import fnmatch
import io
import os
import posixpath
from typing import Callable, Iterator

from etils import epath
from etils.epath import backend as backend_lib
from etils.epath import gpath, stat_utils

from hybrid_jax.storage import gcs


def _parts(path: epath.PathLike) -> tuple[str, str]:
    """(bucket, name without a trailing '/'); name '' is the bucket's root."""
    bucket, name = gcs.split(path)
    return bucket, name.strip("/")


def _url(bucket: str, name: str) -> str:
    return f"gs://{bucket}/{name}" if name else f"gs://{bucket}"


def _dir_prefix(name: str) -> str:
    return f"{name}/" if name else ""


class _Upload:
    """A file kept in memory and uploaded as one object on close; a `with` block left by an
    exception uploads nothing (a half-written object must not replace a whole one)."""

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def close(self) -> None:
        if not self.closed:
            data = self.getvalue()
            super().close()
            gcs.write(self._path, data.encode() if isinstance(data, str) else data)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            super().close()  # the buffer's own close: discarded, not uploaded
            return None
        return super().__exit__(exc_type, exc, tb)


class _BytesUpload(_Upload, io.BytesIO):
    pass


class _TextUpload(_Upload, io.StringIO):  # UTF-8, as epath's open requires
    pass


class GcsBackend(backend_lib.Backend):

    def open(self, path: epath.PathLike, mode: str):
        path = os.fspath(path)
        if mode in ("w", "wb"):
            return _TextUpload(path) if mode == "w" else _BytesUpload(path)
        if mode in ("r", "rb"):
            data = gcs.read_bytes(path)
            if data is None:
                raise FileNotFoundError(f"no such object: {path}")
            return io.BytesIO(data) if mode == "rb" else io.StringIO(data.decode())
        raise io.UnsupportedOperation(f"open {path} with mode {mode!r}: a gs:// object cannot be "
                                      f"appended to or updated in place; write it whole")

    def exists(self, path: epath.PathLike) -> bool:
        bucket, name = _parts(path)
        if not name:
            return gcs.bucket_exists(bucket)
        return gcs.stat(_url(bucket, name)) is not None or self.isdir(path)

    def isdir(self, path: epath.PathLike) -> bool:
        bucket, name = _parts(path)
        if not name:
            return gcs.bucket_exists(bucket)
        names, _ = gcs.list_names(bucket, _dir_prefix(name), max_results=1)
        return bool(names)

    def listdir(self, path: epath.PathLike) -> list[str]:
        bucket, name = _parts(path)
        prefix = _dir_prefix(name)
        names, prefixes = gcs.list_names(bucket, prefix, delimiter="/")
        if not names and not prefixes and not (name == "" and gcs.bucket_exists(bucket)):
            raise FileNotFoundError(f"no such directory: {os.fspath(path)}")
        entries = {n[len(prefix):] for n in names} | {p[len(prefix):-1] for p in prefixes}
        entries.discard("")  # the directory's own placeholder
        return sorted(entries)

    def glob(self, path: epath.PathLike) -> list[str]:
        bucket, pattern = _parts(path)
        literal = pattern[:min((pattern.find(c) for c in "*?[" if c in pattern),
                               default=len(pattern))]
        depth = pattern.count("/")
        names, _ = gcs.list_names(bucket, literal)
        candidates = set()
        for n in names:  # every object, and every directory implied by its name
            parts = n.rstrip("/").split("/")
            if len(parts) > depth:
                candidates.add("/".join(parts[:depth + 1]))
        segments = pattern.split("/")
        return sorted(_url(bucket, c) for c in candidates
                      if all(fnmatch.fnmatchcase(s, p) for s, p in zip(c.split("/"), segments)))

    def walk(self, top: epath.PathLike, *, top_down: bool = True,
             on_error: Callable[[OSError], object] | None = None
             ) -> Iterator[tuple[epath.PathLike, list[str], list[str]]]:
        bucket, name = _parts(top)
        prefix = _dir_prefix(name)
        tree: dict[str, tuple[set[str], set[str]]] = {}  # directory -> (subdirs, files)
        for n in gcs.list_names(bucket, prefix)[0]:
            parts = n[len(prefix):].split("/")
            here = ""
            for i, part in enumerate(parts):
                dirs, files = tree.setdefault(here, (set(), set()))
                if i == len(parts) - 1:
                    if part:
                        files.add(part)
                else:
                    dirs.add(part)
                    here = f"{here}/{part}" if here else part
                    tree.setdefault(here, (set(), set()))
        if not tree:
            if on_error is not None:
                on_error(FileNotFoundError(f"no such directory: {os.fspath(top)}"))
            return

        def visit(rel: str):
            dirs, files = tree[rel]
            dirs_list, files_list = sorted(dirs), sorted(files)
            where = _url(bucket, f"{name}/{rel}".strip("/") if rel else name)
            if top_down:
                yield where, dirs_list, files_list
            for d in dirs_list:  # top-down callers may prune dirs_list in place, as os.walk's
                yield from visit(f"{rel}/{d}" if rel else d)
            if not top_down:
                yield where, dirs_list, files_list

        yield from visit("")

    def makedirs(self, path: epath.PathLike, *, exist_ok: bool = False,
                 mode: int | None = None) -> None:
        self._mkdir(path, exist_ok=exist_ok, mode=mode, parents=True)

    def mkdir(self, path: epath.PathLike, *, exist_ok: bool = False,
              mode: int | None = None) -> None:
        self._mkdir(path, exist_ok=exist_ok, mode=mode, parents=False)

    def _mkdir(self, path, *, exist_ok: bool, mode: int | None, parents: bool) -> None:
        if mode is not None and mode != 0o777:
            raise NotImplementedError(f"mkdir {os.fspath(path)}: gs:// has no modes "
                                      f"(mode={oct(mode)})")
        bucket, name = _parts(path)
        if not name:
            if not gcs.bucket_exists(bucket):
                raise FileNotFoundError(f"bucket {bucket} does not exist (buckets are not "
                                        f"created here)")
            if not exist_ok:
                raise FileExistsError(f"{os.fspath(path)} exists (the bucket's root)")
            return
        if gcs.stat(_url(bucket, name)) is not None:
            raise FileExistsError(f"{os.fspath(path)} exists and is an object, not a directory")
        if self.isdir(path):
            if not exist_ok:
                raise FileExistsError(f"{os.fspath(path)} exists")
            return
        parent = posixpath.dirname(name)
        if not parents and parent and not self.isdir(_url(bucket, parent)):
            raise FileNotFoundError(f"mkdir {os.fspath(path)}: parent {_url(bucket, parent)} "
                                    f"does not exist")
        gcs.create(f"gs://{bucket}/{name}/", b"")  # None if a concurrent mkdir made it first

    def rmtree(self, path: epath.PathLike) -> None:
        bucket, name = _parts(path)
        if not name:
            raise ValueError(f"rmtree {os.fspath(path)}: refusing to empty a whole bucket")
        names, _ = gcs.list_names(bucket, _dir_prefix(name))
        if not names:
            raise FileNotFoundError(f"no such directory: {os.fspath(path)}")
        for n in names:
            gcs.delete(f"gs://{bucket}/{n}")

    def remove(self, path: epath.PathLike) -> None:
        bucket, name = _parts(path)
        if name and gcs.delete(_url(bucket, name)):
            return
        if self.isdir(path):
            raise IsADirectoryError(f"{os.fspath(path)} is a directory")
        raise FileNotFoundError(f"no such object: {os.fspath(path)}")

    def rename(self, path: epath.PathLike, dst: epath.PathLike) -> None:
        if self.exists(dst):
            raise FileExistsError(f"rename {os.fspath(path)}: {os.fspath(dst)} exists")
        self._move(path, dst)

    def replace(self, path: epath.PathLike, dst: epath.PathLike) -> None:
        if self.isdir(dst):
            raise IsADirectoryError(f"replace {os.fspath(path)}: {os.fspath(dst)} is a "
                                    f"directory")
        if self.isdir(path) and self.exists(dst):
            raise NotADirectoryError(f"replace directory {os.fspath(path)} by the object "
                                     f"{os.fspath(dst)}")
        self._move(path, dst)

    def _move(self, path, dst) -> None:
        """Copy, then delete: not atomic (see the module's docstring)."""
        (sb, sn), (db, dn) = _parts(path), _parts(dst)
        if not sn or not dn:
            raise ValueError(f"move {os.fspath(path)} to {os.fspath(dst)}: a bucket's root "
                             f"cannot be moved")
        if gcs.stat(_url(sb, sn)) is not None:
            gcs.copy(_url(sb, sn), _url(db, dn), overwrite=True)
            gcs.delete(_url(sb, sn))
            return
        names, _ = gcs.list_names(sb, _dir_prefix(sn))
        if not names:
            raise FileNotFoundError(f"no such object or directory: {os.fspath(path)}")
        for n in names:
            gcs.copy(f"gs://{sb}/{n}", f"gs://{db}/{dn}/{n[len(sn) + 1:]}", overwrite=True)
        for n in names:
            gcs.delete(f"gs://{sb}/{n}")

    def copy(self, path: epath.PathLike, dst: epath.PathLike, overwrite: bool) -> None:
        if self.isdir(path):
            raise IsADirectoryError(f"copy {os.fspath(path)}: it is a directory")
        if self.isdir(dst):
            raise IsADirectoryError(f"copy to {os.fspath(dst)}: it is a directory")
        (sb, sn), (db, dn) = _parts(path), _parts(dst)
        gcs.copy(_url(sb, sn), _url(db, dn), overwrite=overwrite)

    def stat(self, path: epath.PathLike) -> stat_utils.StatResult:
        bucket, name = _parts(path)
        seen = gcs.stat(_url(bucket, name)) if name else None
        if seen is not None:
            return stat_utils.StatResult(is_directory=False, length=seen.size,
                                         mtime=int(seen.updated), owner=None, group=None,
                                         mode=None)
        if self.isdir(path):
            return stat_utils.StatResult(is_directory=True, length=0, mtime=0, owner=None,
                                         group=None, mode=None)
        raise FileNotFoundError(f"no such object or directory: {os.fspath(path)}")


gcs_backend = GcsBackend()


@epath.register_path_cls("gs://")
class GcsPath(gpath.PosixGPath):
    """epath.Path("gs://...") with GcsBackend, whatever else is installed."""

    @property
    def _backend(self) -> backend_lib.Backend:
        return gcs_backend if self._uri_scheme == "gs" else super()._backend
