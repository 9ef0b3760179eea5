"""sha256 manifests of checkpoint directories: written when a save completes, checked at restore.

Why this exists: orbax 0.12 and tensorstore verify nothing about a checkpoint's data when it is
restored (the only checksum in orbax's zarr3 layout covers the shard index, not the chunks), so
bytes flipped on disk come back as silently wrong weights. A manifest of every file's size and
sha256, written inside the checkpoint before orbax commits it, turns that into a detected,
recoverable fault.

`CHECKSUMS` lists every file under the checkpoint directory, relative to it, except those that
orbax itself rewrites at commit time (`VOLATILE`). Verification reports the first problem it
finds, as one line: a missing manifest, a missing file, a size change or a digest change.
Hashing runs on a small thread pool (hashlib releases the GIL on large buffers).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os

from etils import epath

from hybrid_jax.storage.paths import as_path, read_text_or_none, write_text_atomic

CHECKSUMS = "checksums.json"
# Written or rewritten by orbax when it commits a checkpoint, after our manifest exists.
VOLATILE = frozenset({CHECKSUMS, "_CHECKPOINT_METADATA", "commit_success.txt"})
_CHUNK = 8 << 20


def _sha256(path: epath.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _files(directory: epath.Path) -> list[str]:
    out = []
    for root, _, names in directory.walk():
        for name in names:
            rel = os.path.relpath(os.fspath(epath.Path(root) / name), os.fspath(directory))
            if rel not in VOLATILE:
                out.append(rel)
    return sorted(out)


def _digests(directory: epath.Path, rels: list[str]) -> dict[str, str]:
    workers = min(8, os.cpu_count() or 1, max(1, len(rels)))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return dict(zip(rels, pool.map(lambda r: _sha256(directory / r), rels)))


def write_checksums(directory: str | os.PathLike) -> None:
    """Write `directory/CHECKSUMS` (atomically) for the files now in `directory` (a local
    directory or a gs:// prefix)."""
    directory = as_path(directory)
    rels = _files(directory)
    digests = _digests(directory, rels)
    files = {r: {"size": (directory / r).stat().length, "sha256": digests[r]} for r in rels}
    write_text_atomic(directory / CHECKSUMS, json.dumps(
        {"algorithm": "sha256", "files": files}, indent=0, sort_keys=True))


def verify_checksums(directory: str | os.PathLike) -> str | None:
    """None if every file in the manifest is present with its size and sha256; else the first
    problem, in words."""
    directory = as_path(directory)
    text = read_text_or_none(directory / CHECKSUMS)
    if text is None:
        return f"no {CHECKSUMS} (the save did not complete)"
    try:
        files = json.loads(text)["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        return f"{CHECKSUMS} is unreadable ({type(e).__name__})"
    for rel, want in sorted(files.items()):
        try:
            size = (directory / rel).stat().length
        except FileNotFoundError:
            return f"{rel} is missing"
        if size != want["size"]:
            return f"{rel} has {size} bytes, the manifest says {want['size']}"
    digests = _digests(directory, sorted(files))
    for rel in sorted(files):
        if digests[rel] != files[rel]["sha256"]:
            return f"{rel} fails its sha256 check"
    return None
