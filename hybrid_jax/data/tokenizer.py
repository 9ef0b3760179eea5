"""Tokenizers: SentencePiece BPE with byte fallback, and a zero-setup byte vocabulary.
(Hugging Face tokenizer.json files, `hf:PATH`, are in hf_tokenizer.py.)

Both follow the T5/seqio id convention (pad 0, eos 1, unk 2), so a trained model file loads as
`seqio.SentencePieceVocabulary(path)` unchanged, and the byte vocabulary has the same layout as
`seqio.ByteVocabulary` (byte b is id b + 3).

Round trips are exact: `decode(encode(s)) == s` for any str. SentencePiece needs three settings
for that, all written into the model file by `train_sentencepiece`:
  normalization_rule_name="identity"  no NFKC (it would fold e.g. "ﬁ" into "fi"),
  remove_extra_whitespaces=False       keep runs of spaces, leading and trailing spaces,
  add_dummy_prefix=False               no invisible leading space (documents are code),
and byte_fallback=True turns any character outside the vocabulary into its UTF-8 bytes.
One character still needs help: SentencePiece reads a literal U+2581 ("▁", its own space
marker) as a space. `SentencePieceTokenizer.encode` therefore emits U+2581 as its three byte
tokens, which decode back to U+2581.

Where our ids can differ from raw SentencePiece (e.g. seqio's tokenizer): text containing
U+2581, and text over 4096 characters, which we encode in chunks of whole lines (chunk_text)
and which raw SentencePiece encodes in one piece, so a piece may differ where a chunk ends
(+0.001% tokens on the pycode corpus). Single lines under 4096 characters, as seqio's
TextLineDataSource yields them, get identical ids.
"""

from __future__ import annotations

import hashlib
import heapq
import io
import itertools
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
_META = "\u2581"  # SentencePiece's whitespace marker
BYTE_TOKENIZER_HASH = "byte-v1:pad0-eos1-unk2-bytes3..258"

# Text is encoded, and the tokenizer trained, in chunks of whole lines of up to this many
# characters (chunk_text). Multi-line chunks let newlines and indentation runs get their own
# pieces (training on single lines would leave "\n" to byte fallback: +8% tokens on code).
CHUNK_CHARS = 4096
DEFAULT_SAMPLE_BYTES = 200_000_000


class ByteTokenizer:
    """UTF-8 bytes as ids 3..258; pad 0, eos 1, unk 2 (unused). vocab_size 259."""

    kind = "byte"
    vocab_size = 259
    pad_id, eos_id = PAD_ID, EOS_ID
    hash = BYTE_TOKENIZER_HASH
    model_bytes = None
    store_file = None  # nothing to copy into a store

    def encode(self, text: str) -> list[int]:
        return (np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32) + 3).tolist()

    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[np.ndarray]:
        del num_threads  # a numpy add is not worth threads
        return [np.frombuffer(t.encode("utf-8"), np.uint8).astype(np.uint16) + 3 for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        ids_T = np.asarray(list(ids), np.int64)
        ids_T = ids_T[ids_T >= 3]
        return (ids_T - 3).astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    @property
    def token_nbytes(self) -> np.ndarray:
        """UTF-8 bytes each id stands for (0 for pad/eos/unk)."""
        return np.array([0, 0, 0] + [1] * 256, np.int64)


class SentencePieceTokenizer:
    """A SentencePiece model file; `hash` is the sha256 of the file's bytes."""

    kind = "sentencepiece"
    store_file = "tokenizer.model"  # the copy of the model in a store

    def __init__(self, model_bytes: bytes):
        import sentencepiece as spm

        self.model_bytes = model_bytes
        self.hash = "sha256:" + hashlib.sha256(model_bytes).hexdigest()
        self._sp = spm.SentencePieceProcessor(model_proto=model_bytes)
        self.vocab_size = self._sp.get_piece_size()
        self.eos_id = self._sp.eos_id()
        if self.eos_id < 0:
            raise ValueError("SentencePiece model has no eos piece; train it with eos_id >= 0")
        self.pad_id = self._sp.pad_id() if self._sp.pad_id() >= 0 else 0

        meta_bytes = [self._sp.piece_to_id(f"<0x{b:02X}>") for b in _META.encode("utf-8")]
        # a model without byte pieces (not trained here) cannot round-trip anyway: encode raw
        self._meta_bytes = meta_bytes if all(map(self._sp.is_byte, meta_bytes)) else None

    def _encode_meta(self, text: str) -> list[int]:
        """Text containing U+2581: its pieces around U+2581, which goes as byte tokens."""
        parts = self._sp.encode(text.split(_META))
        ids = parts[0]
        for part in parts[1:]:
            ids = ids + self._meta_bytes + part
        return ids

    def _encode_chunks(self, chunks: list[str], num_threads: int) -> list[list[int]]:
        special = [self._meta_bytes is not None and _META in c for c in chunks]
        plain = iter(self._sp.encode([c for c, m in zip(chunks, special) if not m],
                                     num_threads=num_threads))
        return [self._encode_meta(c) if m else next(plain) for c, m in zip(chunks, special)]

    def encode(self, text: str) -> list[int]:
        return list(itertools.chain.from_iterable(self._encode_chunks(chunk_text(text), 1)))

    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[np.ndarray]:
        dtype = np.uint16 if self.vocab_size <= 1 << 16 else np.uint32
        chunked = [chunk_text(t) for t in texts]
        ids = iter(self._encode_chunks([c for cs in chunked for c in cs], num_threads))
        out = []
        for cs in chunked:
            parts = [next(ids) for _ in cs]
            out.append(np.fromiter(itertools.chain.from_iterable(parts), dtype,
                                   count=sum(map(len, parts))))
        return out

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    @property
    def token_nbytes(self) -> np.ndarray:
        """UTF-8 bytes each id decodes to; exact per token under the settings above."""
        sp = self._sp
        out = np.zeros(self.vocab_size, np.int64)
        for i in range(self.vocab_size):
            if sp.is_byte(i):
                out[i] = 1
            elif not (sp.is_control(i) or sp.is_unknown(i)):
                out[i] = len(sp.id_to_piece(i).replace("\u2581", " ").encode("utf-8"))
        return out


def chunk_text(text: str, max_chars: int = CHUNK_CHARS) -> list[str]:
    """Split after the last "\n" within each max_chars (after the next "\n" if there is none).

    SentencePiece's BPE encoder slows down on long inputs (3.7 vs 5.6 MB/s on the pycode
    corpus for whole files vs these chunks), and its trainer reads "sentences" of bounded size;
    both see the same chunks. The chunks concatenate to the text, and ids concatenate likewise.
    """
    chunks, pos, n = [], 0, len(text)
    while n - pos > max_chars:
        end = text.rfind("\n", pos, pos + max_chars)
        if end < 0:
            end = text.find("\n", pos + max_chars)
            if end < 0:
                break
        chunks.append(text[pos:end + 1])
        pos = end + 1
    if pos < n:
        chunks.append(text[pos:])
    return chunks


def sample_documents(docs: Iterable[str], sample_bytes: int) -> list[str]:
    """The longest run of documents, in sha256 order, whose sizes sum to at most sample_bytes.

    Independent of the order the source yields documents in, and streaming: a heap holds the
    candidates; a document evicted for space (or too big alone) ends the run at its hash.
    """
    heap: list[tuple[bytes, int, str]] = []  # max-heap on the hash via complemented bytes
    total, cut = 0, b"\xff" * 33  # cut: smallest hash known to end the run
    for text in docs:
        data = text.encode("utf-8")
        if not data:
            continue
        digest = hashlib.sha256(data).digest()
        if len(data) > sample_bytes:
            cut = min(cut, digest)
            continue
        heapq.heappush(heap, (bytes(255 - b for b in digest), len(data), text))
        total += len(data)
        while total > sample_bytes:
            key, n_out, _ = heapq.heappop(heap)
            cut = min(cut, bytes(255 - b for b in key))
            total -= n_out
    kept = sorted((bytes(255 - b for b in key), text) for key, _, text in heap)
    return [text for digest, text in kept if digest < cut]


@dataclass(frozen=True)
class TrainedTokenizer:
    path: Path
    hash: str
    seconds: float
    sample_documents: int
    sample_bytes: int


def train_sentencepiece(docs: Iterable[str], out: str | Path, *, vocab_size: int = 8192,
                        sample_bytes: int = DEFAULT_SAMPLE_BYTES, num_threads: int = 2,
                        source: dict | None = None) -> TrainedTokenizer:
    """Train a byte-fallback BPE model on `docs`, write it to `out` and `out`.json (settings).

    Determinism: the sample is chosen by document hash (`sample_documents`), fed in hash order,
    with input_sentence_size=0 (use every sentence) and shuffle_input_sentence=False, so the
    trainer never samples; BPE merges are then a function of the sample alone. Running twice
    gives byte-identical model files, for any num_threads (tests/data/test_tokenizer.py).
    """
    import sentencepiece as spm

    t0 = time.perf_counter()
    sample = sample_documents(docs, sample_bytes)
    if not sample:
        raise ValueError("no text to train a tokenizer on")
    settings = dict(
        model_type="bpe", vocab_size=vocab_size, byte_fallback=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
        split_by_whitespace=True, allow_whitespace_only_pieces=True, split_digits=False,
        pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
        character_coverage=0.9999, max_sentence_length=1 << 16,
        input_sentence_size=0, shuffle_input_sentence=False, num_threads=num_threads,
        hard_vocab_limit=True,
    )
    model = io.BytesIO()
    sentences = (chunk for text in sample for chunk in chunk_text(text))
    spm.SentencePieceTrainer.train(sentence_iterator=sentences, model_writer=model,
                                   minloglevel=2, **settings)
    # The pieces do not depend on the thread count, but the model file records it; clear it so
    # the file (and its hash, the store's tokenizer identity) is the same on any machine.
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto.FromString(model.getvalue())
    proto.trainer_spec.ClearField("num_threads")
    model_bytes = proto.SerializeToString(deterministic=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(model_bytes)
    tmp.replace(out)
    seconds = time.perf_counter() - t0
    tok = SentencePieceTokenizer(model_bytes)
    info = {
        "hash": tok.hash, "settings": settings, "chunk_chars": CHUNK_CHARS,
        "sample": {"documents": len(sample), "bytes": sum(len(t.encode()) for t in sample),
                   "rule": "smallest sha256 first, up to sample_bytes", "sample_bytes": sample_bytes},
        "source": source or {}, "train_seconds": round(seconds, 3),
        "sentencepiece": spm.__version__,
    }
    out.with_name(out.name + ".json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    return TrainedTokenizer(out, tok.hash, seconds, info["sample"]["documents"],
                            info["sample"]["bytes"])
