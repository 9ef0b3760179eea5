"""Which tokenizer a name means: `load_tokenizer("byte" | "hf:PATH" | MODEL_FILE)`, and the
`Tokenizer` type of all three (tokenizer.py: byte and SentencePiece; hf_tokenizer.py: Hugging
Face tokenizers)."""

from __future__ import annotations

from pathlib import Path

from hybrid_jax.data.hf_tokenizer import HFTokenizer, load_hf_tokenizer
from hybrid_jax.data.tokenizer import ByteTokenizer, SentencePieceTokenizer

Tokenizer = ByteTokenizer | SentencePieceTokenizer | HFTokenizer


def load_tokenizer(path_or_byte: str | Path) -> Tokenizer:
    """`"byte"` gives the byte vocabulary, `"hf:PATH"` a Hugging Face tokenizer.json (or a
    directory holding one); anything else is a SentencePiece model file."""
    if str(path_or_byte) == "byte":
        return ByteTokenizer()
    if str(path_or_byte).startswith("hf:"):
        return load_hf_tokenizer(str(path_or_byte)[3:])
    path = Path(path_or_byte)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer model {path} not found (pass a .model file, "
                                "hf:PATH or 'byte')")
    if path.suffix == ".json":  # SentencePiece would fail on it with a parse error
        raise ValueError(f"{path} is not a SentencePiece model; for a Hugging Face "
                         f"tokenizer.json pass hf:{path}")
    return SentencePieceTokenizer(path.read_bytes())
