"""Data helpers shared by the data tests (no tests here): a small text corpus of stdlib sources,
awkward and random text for tokenizer round trips, and fake distribution metadata for the
license checks."""

import inspect
import json
import random
import shutil
import textwrap
from pathlib import Path


# Text that trips tokenizers: whitespace runs, controls, forms a normalizer would fold, astral
# characters, SentencePiece's own marker, text that looks like special tokens.
AWKWARD = [
    "",
    " ",
    "  leading and trailing spaces  ",
    "tabs\t\tand\r\nCRLF\rCR\n\n\nnewlines\n",
    "control \x00\x01\x07\x1b[31mred\x1b[0m\x7f\x85 chars",
    "zero width \u200b\u200c\u200d, BOM \ufeff, RTL \u202e marks",
    "compatibility forms NFKC would fold: \ufb01 \u2460 \uff21\uff22 \u00bd \u2126",
    "combining e\u0301 vs \u00e9, hangul \u1100\u1161 vs \uac00",
    "astral \U0001d518\U0001d52b \U0001f469\u200d\U0001f469\u200d\U0001f467 \U0010ffff",
    "sentencepiece's own marker \u2581 and \u2581\u2581 next to spaces \u2581 ",
    "pieces that look special: <unk> </s> <pad> <0x41> <s>",
    "日本語のテキスト、中文文本, русский текст, ελληνικά, עברית, العربية",
]


def random_text(rng: random.Random, n: int) -> str:
    """n code points, each UTF-8 length (1 to 4 bytes) alike; no surrogates (not text)."""
    ranges = [(0, 0x80), (0x80, 0x800), (0x800, 0xD800), (0xE000, 0x10000), (0x10000, 0x110000)]
    return "".join(chr(rng.randrange(*rng.choice(ranges))) for _ in range(n))


def write_text_corpus(root: Path) -> Path:
    """Stdlib sources as prose-and-code files, plus awkward unicode, and an exact duplicate."""
    import argparse
    import dataclasses
    import difflib

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
