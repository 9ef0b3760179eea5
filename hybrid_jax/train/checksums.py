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
from pathlib import Path

CHECKSUMS = "checksums.json"
# Written or rewritten by orbax when it commits a checkpoint, after our manifest exists.
VOLATILE = frozenset({CHECKSUMS, "_CHECKPOINT_METADATA", "commit_success.txt"})
_CHUNK = 8 << 20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _files(directory: Path) -> list[str]:
    out = []
    for root, _, names in os.walk(directory):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), directory)
            if rel not in VOLATILE:
                out.append(rel)
    return sorted(out)


def _digests(directory: Path, rels: list[str]) -> dict[str, str]:
    workers = min(8, os.cpu_count() or 1, max(1, len(rels)))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return dict(zip(rels, pool.map(lambda r: _sha256(directory / r), rels)))


def write_checksums(directory: Path) -> None:
    """Write `directory/CHECKSUMS` (atomically) for the files now in `directory`."""
    directory = Path(directory)
    rels = _files(directory)
    digests = _digests(directory, rels)
    files = {r: {"size": (directory / r).stat().st_size, "sha256": digests[r]} for r in rels}
    tmp = directory / f".{CHECKSUMS}.tmp"
    with open(tmp, "w") as f:
        json.dump({"algorithm": "sha256", "files": files}, f, indent=0, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / CHECKSUMS)


def verify_checksums(directory: Path) -> str | None:
    """None if every file in the manifest is present with its size and sha256; else the first
    problem, in words."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / CHECKSUMS).read_text())
        files = manifest["files"]
    except FileNotFoundError:
        return f"no {CHECKSUMS} (the save did not complete)"
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        return f"{CHECKSUMS} is unreadable ({type(e).__name__})"
    for rel, want in sorted(files.items()):
        try:
            size = (directory / rel).stat().st_size
        except FileNotFoundError:
            return f"{rel} is missing"
        if size != want["size"]:
            return f"{rel} has {size} bytes, the manifest says {want['size']}"
    digests = _digests(directory, sorted(files))
    for rel in sorted(files):
        if digests[rel] != files[rel]["sha256"]:
            return f"{rel} fails its sha256 check"
    return None
