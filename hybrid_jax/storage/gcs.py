"""Google Cloud Storage objects through google-cloud-storage (the [cluster] extra).

The few operations the suite's state needs, each one request where the API allows:

    create(path, data)               write only if no object exists (ifGenerationMatch=0)
    replace(path, data, generation)  write only if the object is still that generation
    delete(path, generation)         delete only if the object is still that generation
    read(path)                       bytes, generation, and age by the server's clock
    write / read_bytes / listing     plain whole-object writes, reads and prefix listings

google-cloud-storage retries a conditional write after a transient error; when the first
attempt did succeed and only its response was lost, the retry fails its own precondition and
the write reports None. Only the caller can tell that apart, when its bytes are unique (a
claim's random token): claims.py reads the object back after a refused write.

Ages: `updated` is the server's time of the last write; `now` is the server's Date header on
the same response, so clock skew between hosts does not enter. Date has whole seconds: an age
can read up to 1 s short, never long (a claim is judged stale slightly late, never early).

Clients: one per thread (google-cloud-storage does not promise thread safety) and per process
(a forked child must not share the parent's connections). With STORAGE_EMULATOR_HOST set (an
emulator), credentials are anonymous; otherwise Application Default Credentials.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

SCHEME = "gs://"
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
_local = threading.local()
_credentials_cache: dict[tuple, tuple[Any, str | None]] = {}
_credentials_lock = threading.Lock()


@dataclass(frozen=True)
class Stat:
    generation: int
    size: int
    updated: float  # POSIX seconds, the server's time of the last write
    age: float  # seconds since then, by the server's clock


def is_gcs_path(path: str | os.PathLike) -> bool:
    return os.fspath(path).startswith(SCHEME)


def split(path: str | os.PathLike) -> tuple[str, str]:
    """gs://bucket/a/b -> ("bucket", "a/b")."""
    text = os.fspath(path)
    if not text.startswith(SCHEME):
        raise ValueError(f"not a gs:// path: {text!r}")
    bucket, _, name = text[len(SCHEME):].partition("/")
    if not bucket:
        raise ValueError(f"gs:// path without a bucket: {text!r}")
    return bucket, name


def _object(path: str | os.PathLike) -> tuple[str, str]:
    bucket, name = split(path)
    if not name:
        raise ValueError(f"not an object path (a bucket without a name): {os.fspath(path)!r}")
    return bucket, name


# ---- clients ------------------------------------------------------------------------------
def _imports():
    try:
        from google.api_core import exceptions
        from google.cloud import storage
    except ImportError as e:
        raise ImportError(f"gs:// paths need google-cloud-storage (the [cluster] extra: pip "
                          f"install -e .[cluster]): {e}") from e
    return storage, exceptions


def _credentials(key: tuple) -> tuple[Any, str | None]:
    with _credentials_lock:
        if key not in _credentials_cache:
            import google.auth
            from google.auth import exceptions as auth_exceptions
            from google.auth.credentials import AnonymousCredentials, with_scopes_if_required

            storage, _ = _imports()
            if key[1]:  # an emulator: no authentication
                creds, project = AnonymousCredentials(), os.environ.get("GOOGLE_CLOUD_PROJECT",
                                                                        "emulator")
            else:
                try:
                    creds, project = google.auth.default()
                except auth_exceptions.DefaultCredentialsError as e:
                    raise RuntimeError(f"gs:// paths need Google credentials (gcloud auth "
                                       f"application-default login, or a service account); "
                                       f"none found: {e}") from e
            creds = with_scopes_if_required(creds, storage.Client.SCOPE)
            _credentials_cache[key] = (creds, project)
        return _credentials_cache[key]


def client():
    """This thread's storage.Client."""
    return _clients()[0]


def _clients():
    key = (os.getpid(), os.environ.get(EMULATOR_ENV))
    if getattr(_local, "key", None) != key:
        from google.auth.transport.requests import AuthorizedSession

        storage, _ = _imports()
        creds, project = _credentials(key)
        _local.clients = (storage.Client(project=project, credentials=creds),
                          AuthorizedSession(creds))
        _local.key = key
    return _local.clients


# ---- single objects -------------------------------------------------------------------------
def stat(path: str | os.PathLike) -> Stat | None:
    """The object's generation, size, and age by the server's clock; None if there is none."""
    _, gexc = _imports()
    from google.cloud.storage.retry import DEFAULT_RETRY

    bucket, name = _object(path)
    gcs, session = _clients()
    url = f"{gcs.api_endpoint}/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}"

    def get():
        response = session.get(url, params={"fields": "generation,size,updated"}, timeout=60)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise gexc.from_http_response(response)
        return response

    response = DEFAULT_RETRY(get)()
    if response is None:
        return None
    meta = response.json()
    if "Date" not in response.headers:
        raise RuntimeError(f"stat {os.fspath(path)}: the response has no Date header, so the "
                           f"object's age cannot be read by the server's clock")
    updated = datetime.fromisoformat(meta["updated"]).timestamp()
    now = email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp()
    return Stat(int(meta["generation"]), int(meta["size"]), updated, max(0.0, now - updated))


def read(path: str | os.PathLike) -> tuple[bytes, Stat] | None:
    """The object's bytes with the Stat of exactly that generation; None if there is none."""
    _, gexc = _imports()
    bucket, name = _object(path)
    while True:  # each pass that fails saw a write between its two requests
        seen = stat(path)
        if seen is None:
            return None
        try:
            data = client().bucket(bucket).blob(name, generation=seen.generation) \
                .download_as_bytes()
        except gexc.NotFound:
            continue  # replaced or deleted after the stat: that generation is gone
        return data, seen


_HASH_CHUNK = 64 << 20


def read_range(path: str | os.PathLike, start: int, stop: int, generation: int) -> bytes:
    """Bytes [start, stop) of one generation of the object (NotFound if it was replaced)."""
    if stop <= start:
        return b""
    bucket, name = _object(path)
    blob = client().bucket(bucket).blob(name, generation=generation)
    return blob.download_as_bytes(start=start, end=stop - 1)  # `end` is inclusive


def read_tail(path: str | os.PathLike, nbytes: int) -> tuple[bytes, int] | None:
    """(the object's last `nbytes` bytes, its size) in one ranged read; None if there is no
    object. Read again if the object is replaced between its stat and the read."""
    _, gexc = _imports()
    while True:
        seen = stat(path)
        if seen is None:
            return None
        try:
            return read_range(path, max(0, seen.size - nbytes), seen.size,
                              seen.generation), seen.size
        except gexc.NotFound:
            continue


def sha256(path: str | os.PathLike) -> tuple[str, int] | None:
    """(sha256 hex digest, size) of the object, by ranged reads of one generation."""
    seen = stat(path)
    if seen is None:
        return None
    digest = hashlib.sha256()
    for start in range(0, seen.size, _HASH_CHUNK):
        digest.update(read_range(path, start, min(seen.size, start + _HASH_CHUNK),
                                 seen.generation))
    return digest.hexdigest(), seen.size


def read_bytes(path: str | os.PathLike) -> bytes | None:
    _, gexc = _imports()
    bucket, name = _object(path)
    try:
        return client().bucket(bucket).blob(name).download_as_bytes()
    except gexc.NotFound:
        return None


def write(path: str | os.PathLike, data: bytes) -> int:
    """Write the whole object (one upload: a reader sees the old object or the new one)."""
    _imports()
    from google.cloud.storage.retry import DEFAULT_RETRY

    bucket, name = _object(path)
    blob = client().bucket(bucket).blob(name)
    blob.upload_from_string(data, retry=DEFAULT_RETRY)  # the same bytes again: safe to retry
    return blob.generation


def upload_file(local: str | os.PathLike, path: str | os.PathLike) -> int:
    """Upload a local file as the whole object, streamed in chunks (a resumable upload above
    8 MiB), visible only when complete; returns its generation."""
    _imports()
    from google.cloud.storage.retry import DEFAULT_RETRY

    bucket, name = _object(path)
    blob = client().bucket(bucket).blob(name)
    blob.upload_from_filename(os.fspath(local), retry=DEFAULT_RETRY)
    return blob.generation


def create(path: str | os.PathLike, data: bytes) -> int | None:
    """Write `data` only if no object exists; its generation, or None if one did.

    Up to 8 MiB google-cloud-storage sends one multipart upload; larger objects go as resumable
    uploads, on which fake-gcs-server 1.54 does not check the condition (GCS does)."""
    return _conditional_write(path, data, 0)


def replace(path: str | os.PathLike, data: bytes, generation: int) -> int | None:
    """Overwrite only if the object is still `generation`; the new generation, or None."""
    if not generation:
        raise ValueError(f"replace {os.fspath(path)}: generation must be an object's "
                         f"generation, got {generation!r}")
    return _conditional_write(path, data, generation)


def _conditional_write(path, data: bytes, generation: int) -> int | None:
    _, gexc = _imports()
    bucket, name = _object(path)
    blob = client().bucket(bucket).blob(name)
    try:
        blob.upload_from_string(data, if_generation_match=generation)
    except gexc.PreconditionFailed:
        return None
    return blob.generation


def delete(path: str | os.PathLike, generation: int | None = None) -> bool:
    """Delete the object (only if still `generation`, when given); whether this call did.

    fake-gcs-server ignores ifGenerationMatch on deletes (GCS honours it), so the generation is
    also checked first: against the emulator only the moment between the two requests is
    unguarded."""
    _, gexc = _imports()
    bucket, name = _object(path)
    if generation is not None:
        seen = stat(path)
        if seen is None or seen.generation != generation:
            return False
    try:
        client().bucket(bucket).blob(name).delete(if_generation_match=generation)
    except (gexc.NotFound, gexc.PreconditionFailed):
        return False
    return True


def copy(src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool) -> None:
    """Server-side copy of one object; FileExistsError if `dst` exists and not `overwrite`.

    fake-gcs-server ignores the precondition on copies too, so `dst` is also checked first."""
    _, gexc = _imports()
    (sb, sn), (db, dn) = _object(src), _object(dst)
    if not overwrite and stat(dst) is not None:
        raise FileExistsError(f"copy to {os.fspath(dst)}: it exists")
    gcs = client()
    try:
        gcs.bucket(sb).copy_blob(gcs.bucket(sb).blob(sn), gcs.bucket(db), dn,
                                 if_generation_match=None if overwrite else 0)
    except gexc.NotFound as e:
        raise FileNotFoundError(f"copy {os.fspath(src)}: no such object") from e
    except gexc.PreconditionFailed as e:
        raise FileExistsError(f"copy to {os.fspath(dst)}: it exists") from e


# ---- listings -----------------------------------------------------------------------------
def list_names(bucket: str, prefix: str, *, delimiter: str | None = None,
               max_results: int | None = None) -> tuple[list[str], list[str]]:
    """(object names, sub-prefixes) under `prefix` in `bucket`; sub-prefixes only with a
    delimiter."""
    blobs = client().list_blobs(bucket, prefix=prefix, delimiter=delimiter,
                                max_results=max_results)
    names = [b.name for b in blobs]  # iterating fetches every page, which fills .prefixes
    return names, sorted(blobs.prefixes)


def bucket_exists(bucket: str) -> bool:
    return client().bucket(bucket).exists()
