"""What every source yields, and the file helpers the file-reading sources share.

A `Document` is text, the validation group a held-out document goes to, and, for sources whose
text arrives already tokenized (seqio), its tokens. The source modules (sources.py's text
source, pycode.py, tfds_source.py, seqio_source.py) import this module; sources.py imports them.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_GROUP = "val"
DOC_SEPARATORS = {
    "file": None,
    # one or more empty (or whitespace-only) lines; the next paragraph keeps its indentation
    "blank-lines": r"\n(?:[ \t\r\f\v]*\n)+",
}


@dataclass
class Document:
    text: str
    group: str = DEFAULT_GROUP
    tokens: np.ndarray | None = None


def split_documents(text: str, separator: str) -> list[str]:
    """`file`: the text is one document; `blank-lines`; else `separator` is a regex."""
    pattern = DOC_SEPARATORS.get(separator, separator)
    return [text] if pattern is None else re.split(pattern, text)


def expand_inputs(patterns: list[str]) -> list[str]:
    """Globs (recursive `**` allowed) expanded, sorted, de-duplicated; each must match a file."""
    paths: list[str] = []
    for pattern in patterns:
        matches = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True)
                         if os.path.isfile(p))
        if not matches:
            raise FileNotFoundError(f"--input {pattern!r} matches no file")
        paths += matches
    return sorted(set(os.path.abspath(p) for p in paths))


def file_records(paths: list[str]) -> list[dict]:
    """{path, sha256, bytes} of each file, for a manifest."""
    records = []
    for path in paths:
        raw = Path(path).read_bytes()
        records.append({"path": path, "sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)})
    return records
