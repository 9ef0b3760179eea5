"""Reading back a long-context result file (what `hybrid-jax eval long-context --out` writes),
for the heatmap and for --resume. Kept apart from the suite so that reading a file imports no
model code."""

from __future__ import annotations

import json

from hybrid_jax.storage.paths import as_path


def read_result(path) -> dict:
    """The JSON document at `path` (local or gs://), checked to hold the suite's "accuracy"
    cells; ValueError naming the file otherwise."""
    try:
        doc = json.loads(as_path(path).read_text())
        if not isinstance(doc["accuracy"], list):
            raise TypeError("its accuracy is not a list")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a long-context result ({type(e).__name__}: {e}); write "
                         f"one with `hybrid-jax eval long-context ... --out FILE`") from None
    return doc
