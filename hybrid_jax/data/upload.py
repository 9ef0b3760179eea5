"""A token store onto gs://: built in a local staging directory, then uploaded.

Why not build straight into the bucket: the builder appends to shards and resumes a killed
build from what it wrote, and GCS objects cannot be appended to or rewritten in part. So a build
with `--out gs://...` works in a local directory (resumable as any build), then uploads every
file the manifest lists, and the manifest last: a gs:// store is complete exactly when its
manifest is there, as a local one is. An upload cut by a kill is finished by running the same
command again; an object already there with the listed size is kept (an object is written
whole or not at all). `hybrid-jax data verify` (data info) reads every object back against its
sha256.
"""

from __future__ import annotations

import os
from pathlib import Path

from hybrid_jax.data.errors import StoreError
from hybrid_jax.storage import gcs, objects
from hybrid_jax.storage.paths import as_path


def staging_dir(url: str) -> Path:
    """Where `data build --out URL` builds before uploading: ~/.cache/hybrid-jax/builds/."""
    import hashlib

    key = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:12]
    name = url.rstrip("/").rsplit("/", 1)[-1]
    return Path.home() / ".cache" / "hybrid-jax" / "builds" / f"{name}-{key}"


def upload_store(local: str | os.PathLike, url: str, say=print) -> int:
    """Upload the built store in `local` to `url` (gs://...); returns the files uploaded."""
    from hybrid_jax.data.store import read_manifest

    manifest = read_manifest(local)
    local, remote = Path(local), as_path(url)
    mine = (local / "manifest.json").read_bytes()
    theirs = objects.read_bytes(remote / "manifest.json")
    if theirs is not None:
        if theirs == mine:
            return 0
        raise StoreError(f"{url} already holds another token store (its manifest differs); "
                         f"choose another --out, or delete it first")
    uploaded = 0
    total = sum(e["bytes"] for e in manifest["files"].values())
    for rel, entry in sorted(manifest["files"].items()):
        target = f"{str(remote).rstrip('/')}/{rel}"
        seen = gcs.stat(target)
        if seen is not None and seen.size == entry["bytes"]:
            continue
        gcs.upload_file(local / rel, target)
        uploaded += 1
    objects.write_atomic(remote / "manifest.json", mine)  # last: the store is now complete
    say(f"uploaded {uploaded} of {len(manifest['files'])} files ({total / 1e6:.1f} MB) and the "
        f"manifest to {url}")
    return uploaded
