"""Hugging Face tokenizers: any `tokenizer.json` (`hf:PATH`), and byte-level BPE trained here.

`load_hf_tokenizer("DIR")` (or `load_tokenizer("hf:DIR")`) reads DIR/tokenizer.json and, when it
is there, DIR/tokenizer_config.json. Ids are the `tokenizers` library's own, with four choices
made here:
  - no post-processor tokens: `add_special_tokens=False`, since the store frames every document
    with EOS itself;
  - special tokens are not matched in text (`encode_special_tokens=True`): a literal
    "<|endoftext|>" inside a document is encoded as ordinary text, so the only special ids in a
    store are the EOS ids that frame documents (as with SentencePiece, which never reads "</s>"
    in text as its eos). transformers matches them by default; its `split_special_tokens=True`
    gives our ids. Added tokens that are not special are still matched, as transformers does;
  - no truncation or padding, whatever the file sets: a store holds whole documents;
  - eos and pad: `eos_token` / `pad_token` of tokenizer_config.json when it names them (a string
    or a {"content": ...} dict); else the one special added token among EOS_NAMES (PAD_NAMES for
    pad, which falls back to the eos). A tokenizer whose eos cannot be told is refused.

The tokenizer's identity (`hash`, the store's `tokenizer_hash`) covers the choice of eos and pad,
which the file alone does not fix: "hf-sha256:" + sha256(tokenizer.json bytes + b"\\0eos_id=E,
pad_id=P"). The NUL cannot occur in a JSON text, so the suffix is unambiguous.

Round trips `decode(encode(s)) == s` are exact for byte-level BPE without a normalizer (what
`train_hf_bpe` writes), and per-token byte counts (`token_nbytes`) are exact for it too; for
other tokenizers build.py checks the counts on the corpus and records token_bytes_exact.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from hybrid_jax.data.tokenizer import (CHUNK_CHARS, DEFAULT_SAMPLE_BYTES, EOS_ID, PAD_ID,
                                       TrainedTokenizer, chunk_text, sample_documents)

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
TRAINING_FILE = "tokenizer_training.json"  # what train_hf_bpe records beside its tokenizer.json
# End-of-document names of common tokenizers: GPT-2 and ours, Llama 2 / T5, Llama 3, Gemma.
# Chat markers such as "<|im_end|>" end a turn, not a document, and are left out on purpose.
EOS_NAMES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>")
PAD_NAMES = ("<|pad|>", "<pad>")
# train_hf_bpe's special tokens, at the project's ids (tokenizer.py: pad 0, eos 1).
TRAINED_PAD, TRAINED_EOS = "<|pad|>", "<|endoftext|>"


def hf_tokenizer_hash(json_bytes: bytes, eos_id: int, pad_id: int) -> str:
    suffix = f"\0eos_id={int(eos_id)},pad_id={int(pad_id)}".encode()
    return "hf-sha256:" + hashlib.sha256(json_bytes + suffix).hexdigest()


@functools.cache
def byte_level_chars() -> dict[str, int]:
    """GPT-2's byte-level alphabet, char -> byte: printable bytes stand for themselves, the
    other 68 (controls, space, 0x7F-0xA0, soft hyphen) for U+0100 onward, in byte order."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {chr(b): b for b in printable}
    shifted = [b for b in range(256) if chr(b) not in table]
    table.update({chr(0x100 + n): b for n, b in enumerate(shifted)})
    return table


def _is_byte_level(decoder: dict | None) -> bool:
    if not decoder:
        return False
    if decoder.get("type") == "Sequence":
        return any(_is_byte_level(d) for d in decoder.get("decoders", []))
    return decoder.get("type") == "ByteLevel"


def _config_token(config: dict, key: str, origin: str) -> str | None:
    value = config.get(key)
    if isinstance(value, dict):
        value = value.get("content")
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{origin}: {CONFIG_FILE} {key} is {value!r}, not a token string")
    return value


class HFTokenizer:
    """A `tokenizers.Tokenizer` from the bytes of a tokenizer.json (module docstring).

    eos_id and pad_id, when given (a store rebuilding its tokenizer), are used as they are;
    otherwise `config` (tokenizer_config.json's content) or the special-token names decide.
    `origin` names the file in error messages.
    """

    kind = "hf"
    store_file = TOKENIZER_FILE

    def __init__(self, json_bytes: bytes, *, config: dict | None = None,
                 eos_id: int | None = None, pad_id: int | None = None,
                 origin: str = TOKENIZER_FILE):
        from tokenizers import Tokenizer as _Tokenizer

        try:
            doc = json.loads(json_bytes)
        except ValueError as e:  # bad UTF-8 too
            raise ValueError(f"{origin}: not valid JSON ({e})") from None
        try:
            self._tok = _Tokenizer.from_str(json_bytes.decode("utf-8"))
        except Exception as e:  # noqa: BLE001 - the library raises a bare Exception
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(f"{origin}: not a Hugging Face tokenizer.json ({first})") from None
        self._tok.encode_special_tokens = True  # literal special-token text is text
        # A store holds whole documents, unpadded: a file's own settings would cut or pad them.
        self._tok.no_truncation()
        self._tok.no_padding()
        self.model_bytes = json_bytes
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self._added = self._tok.get_added_tokens_decoder()
        if any(i >= self.vocab_size for i in self._added):
            raise ValueError(f"{origin}: added token ids {sorted(self._added)} leave gaps below "
                             f"{max(self._added)}; ids must run 0..vocab_size-1")
        self._byte_level = _is_byte_level(doc.get("decoder"))
        if (eos_id is None) != (pad_id is None):
            raise ValueError("give both eos_id and pad_id, or neither")
        if eos_id is None:
            eos_id, pad_id = self._special_ids(config or {}, origin)
        for name, i in (("eos_id", eos_id), ("pad_id", pad_id)):
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"{origin}: {name} {i} outside the vocabulary [0, "
                                 f"{self.vocab_size})")
        self.eos_id, self.pad_id = int(eos_id), int(pad_id)
        self.eos_token = self._tok.id_to_token(self.eos_id)
        self.pad_token = self._tok.id_to_token(self.pad_id)
        self.hash = hf_tokenizer_hash(json_bytes, self.eos_id, self.pad_id)

    def _special_ids(self, config: dict, origin: str) -> tuple[int, int]:
        special = {t.content: i for i, t in self._added.items() if t.special}
        ids = {}
        for key, names in (("eos_token", EOS_NAMES), ("pad_token", PAD_NAMES)):
            token = _config_token(config, key, origin)
            if token is not None:
                ids[key] = self._tok.token_to_id(token)
                if ids[key] is None:
                    raise ValueError(f"{origin}: {CONFIG_FILE} {key} {token!r} is not in the "
                                     "vocabulary")
                continue
            found = [n for n in names if n in special]
            if len(found) > 1 or (key == "eos_token" and not found):
                raise ValueError(
                    f"{origin}: cannot tell the {key[:3]} token (special tokens among "
                    f"{list(names)}: {found or 'none'}); add a {CONFIG_FILE} beside it with "
                    f'"{key}"')
            ids[key] = special[found[0]] if found else ids["eos_token"]
        return ids["eos_token"], ids["pad_token"]

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[np.ndarray]:
        # num_threads is not used: `tokenizers` spreads a batch over its own thread pool, whose
        # size is fixed when the library starts (RAYON_NUM_THREADS, else every core).
        del num_threads
        dtype = np.uint16 if self.vocab_size <= 1 << 16 else np.uint32
        encodings = self._tok.encode_batch_fast(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype) for e in encodings]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    @functools.cached_property
    def token_nbytes(self) -> np.ndarray:
        """UTF-8 bytes of text each id stands for.

        Byte-level vocabularies: one byte per alphabet character (decoding one token alone would
        give U+FFFD for part of a multi-byte character), other characters their UTF-8 length, as
        the ByteLevel decoder treats them. Otherwise the UTF-8 length of the id decoded alone.
        Added tokens: the UTF-8 length of their text, which is what encode matched; special ones
        0, as encode never emits them (they only frame documents).
        """
        out = np.zeros(self.vocab_size, np.int64)
        if self._byte_level:
            table = byte_level_chars()
            for token, i in self._tok.get_vocab(with_added_tokens=False).items():
                out[i] = sum(1 if c in table else len(c.encode("utf-8")) for c in token)
        else:
            texts = self._tok.decode_batch([[i] for i in range(self.vocab_size)],
                                           skip_special_tokens=False)
            out[:] = [len(t.encode("utf-8")) for t in texts]
        for i, token in self._added.items():
            out[i] = 0 if token.special else len(token.content.encode("utf-8"))
        return out


def load_hf_tokenizer(path: str | Path) -> HFTokenizer:
    """The tokenizer.json at `path` (a file, or a directory holding one), with the
    tokenizer_config.json beside it when there is one."""
    path = Path(path)
    file = path / TOKENIZER_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such file (hf:PATH takes a tokenizer.json or a "
                                "directory holding one)")
    config_file = file.with_name(CONFIG_FILE)
    config = None
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ValueError(f"{config_file}: not valid JSON ({e})") from None
        if not isinstance(config, dict):
            raise ValueError(f"{config_file}: not a JSON object")
    return HFTokenizer(file.read_bytes(), config=config, origin=str(file))


def tokenizer_config(eos_token: str, pad_token: str) -> dict:
    """tokenizer_config.json for transformers' AutoTokenizer (the fast tokenizer over
    tokenizer.json), naming eos and pad. Decoding keeps spaces exactly as encoded."""
    return {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos_token,
            "pad_token": pad_token, "clean_up_tokenization_spaces": False}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _json_bytes(doc: dict) -> bytes:
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def train_hf_bpe(docs: Iterable[str], out: str | Path, *, vocab_size: int = 8192,
                 sample_bytes: int = DEFAULT_SAMPLE_BYTES,
                 source: dict | None = None) -> TrainedTokenizer:
    """Train a byte-level BPE on `docs`; write `out` (named tokenizer.json), and beside it
    tokenizer_config.json and tokenizer_training.json (settings, sample, time).

    GPT-2's scheme: text is split by its regex, each piece mapped byte by byte onto a 256-char
    alphabet, then merged; so every string encodes, with no unknown token, and decodes back
    exactly. Pad is id 0 and eos id 1, as in our other tokenizers. The sample is
    train_sentencepiece's (`sample_documents`, hash order), fed in chunk_text chunks so a long
    document spreads over threads; a chunk ends after a newline, where the regex may split a
    whitespace run that encoding the whole text keeps together (a negligible difference in
    counts). The trainer breaks ties in merge counts by token ids, not by thread timing:
    training twice gives byte-identical files, at any thread count (tests/data).
    """
    from tokenizers import Tokenizer as _Tokenizer
    from tokenizers import __version__ as tokenizers_version
    from tokenizers import decoders, models, pre_tokenizers, trainers

    out = Path(out)
    if out.name != TOKENIZER_FILE:
        raise ValueError(f"{out}: name the file {TOKENIZER_FILE} (DIR/{TOKENIZER_FILE}: "
                         "transformers and hf:DIR read that name)")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + 2:
        raise ValueError(f"vocab_size {vocab_size} < {len(alphabet) + 2}: byte-level BPE needs "
                         "256 byte symbols plus pad and eos")
    t0 = time.perf_counter()
    sample = sample_documents(docs, sample_bytes)
    if not sample:
        raise ValueError("no text to train a tokenizer on")
    settings = {"model": "BPE", "pre_tokenizer": "ByteLevel(add_prefix_space=False, "
                "use_regex=True)", "decoder": "ByteLevel", "vocab_size": vocab_size,
                "special_tokens": [TRAINED_PAD, TRAINED_EOS], "initial_alphabet": "ByteLevel"}
    tok = _Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  special_tokens=[TRAINED_PAD, TRAINED_EOS],
                                  initial_alphabet=alphabet)
    tok.train_from_iterator((chunk for text in sample for chunk in chunk_text(text)),
                            trainer=trainer)
    if (tok.token_to_id(TRAINED_PAD), tok.token_to_id(TRAINED_EOS)) != (PAD_ID, EOS_ID):
        raise RuntimeError(f"the trainer placed {TRAINED_PAD}/{TRAINED_EOS} at ids "
                           f"{tok.token_to_id(TRAINED_PAD)}/{tok.token_to_id(TRAINED_EOS)}")
    if tok.get_vocab_size() < vocab_size:
        raise ValueError(f"the sample gives only {tok.get_vocab_size()} tokens (no pair is left "
                         f"to merge); ask for fewer than {vocab_size} or train on more text")
    json_bytes = tok.to_str(pretty=True).encode()
    result = HFTokenizer(json_bytes, eos_id=EOS_ID, pad_id=PAD_ID, origin=str(out))
    seconds = time.perf_counter() - t0
    info = {
        "hash": result.hash, "settings": settings, "chunk_chars": CHUNK_CHARS,
        "sample": {"documents": len(sample), "bytes": sum(len(t.encode()) for t in sample),
                   "rule": "smallest sha256 first, up to sample_bytes",
                   "sample_bytes": sample_bytes},
        "source": source or {}, "train_seconds": round(seconds, 3),
        "tokenizers": tokenizers_version,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(out.with_name(CONFIG_FILE),
                  _json_bytes(tokenizer_config(TRAINED_EOS, TRAINED_PAD)))
    _write_atomic(out.with_name(TRAINING_FILE), _json_bytes(info))
    _write_atomic(out, json_bytes)
    return TrainedTokenizer(out, result.hash, seconds, info["sample"]["documents"],
                            info["sample"]["bytes"])
