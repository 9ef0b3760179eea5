"""Data helpers shared by the data tests (no tests here): a small text corpus of stdlib sources
and fake distribution metadata for the license checks."""

import inspect
import json
import shutil
import textwrap
from pathlib import Path


def write_text_corpus(root: Path) -> Path:
    """Stdlib sources as prose-and-code files, plus awkward unicode, and an exact duplicate."""
    import argparse
    import dataclasses
    import difflib
    import random

    root.mkdir(parents=True, exist_ok=True)
    for mod in (json, textwrap, random, inspect, argparse, dataclasses, difflib, shutil):
        (root / f"{mod.__name__}.txt").write_text(inspect.getsource(mod), encoding="utf-8")
    (root / "unicode.txt").write_text("caf\u00e9 \u2603 \U0001f600\n\n\x00\x1b tabs\t\n\n"
                                      "\u65e5\u672c\u8a9e \ufb01\n", encoding="utf-8")
    (root / "copy_of_json.txt").write_text(inspect.getsource(json), encoding="utf-8")
    (root / "empty.txt").write_text("")
    return root


class FakeDist:
    """A distribution's metadata (`importlib.metadata.Distribution.metadata`) from keyword
    fields: License_Expression=..., Classifier=[...]."""

    def __init__(self, **fields):
        from email.message import Message

        self.metadata = Message()
        for key, value in fields.items():
            for v in value if isinstance(value, list) else [value]:
                self.metadata[key.replace("_", "-")] = v
