"""Open and verify a token store (layout: hybrid_jax/data/build.py), local or on gs://."""

from __future__ import annotations

import functools
import io
import json
import os

import numpy as np
from etils import epath

from hybrid_jax.data.build import FORMAT, FORMAT_VERSION
from hybrid_jax.data.errors import StoreError
from hybrid_jax.data.token_files import gather_windows, open_token_file, read_span
from hybrid_jax.storage import objects
from hybrid_jax.storage.paths import as_path, is_object_store
from hybrid_jax.data.hf_tokenizer import HFTokenizer, hf_tokenizer_hash
from hybrid_jax.data.tokenizer import ByteTokenizer, SentencePieceTokenizer
from hybrid_jax.data.vocab import Tokenizer


class TokenArray:
    """One token stream (train or a validation set): shards + document table.

    Local shards are memory-mapped; gs:// shards are read with one ranged request per window
    (token_files.GcsTokenFile, 16 at a time for a batch), never downloaded whole. The stream is
    read as token_files.TokenFiles reads one (read_span, gather_windows)."""

    def __init__(self, directory: epath.Path, entry: dict, dtype: np.dtype):
        self.dir = directory
        self.dtype = dtype
        self.shards = [open_token_file(directory / s["file"], dtype) for s in entry["shards"]]
        sizes = np.array([f.nbytes // dtype.itemsize for f in self.shards], np.int64)
        self.shard_starts = np.concatenate([[0], np.cumsum(sizes)])
        self.n_tokens = int(self.shard_starts[-1])
        self.n_documents = entry["documents"]
        self.n_bytes = entry["bytes"]
        self.remote = is_object_store(directory)

    def __len__(self) -> int:
        return self.n_tokens

    @functools.cached_property
    def doc_offsets(self) -> np.ndarray:
        """int64 [n_docs + 1]; document i (with its trailing EOS) is [off[i], off[i+1])."""
        return _load_npy(self.dir / "doc_offsets.npy")

    @functools.cached_property
    def doc_bytes(self) -> np.ndarray:
        return _load_npy(self.dir / "doc_bytes.npy")

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length), across shard boundaries."""
        if start < 0 or start + length > self.n_tokens:
            raise IndexError(f"[{start}, {start + length}) outside [0, {self.n_tokens})")
        parts = read_span(self.shards, self.shard_starts, start, start + length)
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.zeros(0, self.dtype)

    def gather(self, starts_B: np.ndarray, length: int) -> np.ndarray:
        """[B, length] windows starting at starts_B: one read per row (a memmap slice, or a
        ranged request), none per token."""
        return gather_windows(self.read, starts_B, length, self.dtype, self.remote)


def _load_npy(path: epath.Path) -> np.ndarray:
    data = objects.read_bytes(path)
    if data is None:
        raise StoreError(f"{path}: missing")
    return np.load(io.BytesIO(data))


class TokenStore:
    def __init__(self, path: epath.Path, manifest: dict):
        self.path = path
        self.manifest = manifest
        tok = manifest["tokenizer"]
        self.vocab_size: int = tok["vocab_size"]
        self.eos_id: int = tok["eos_id"]
        self.pad_id: int = tok["pad_id"]
        self.tokenizer_hash: str = tok["hash"]
        self.dtype = np.dtype(manifest["dtype"])
        self.train = TokenArray(path / "train", manifest["train"], self.dtype)
        self.n_train_tokens: int = self.train.n_tokens
        self.n_train_documents: int = self.train.n_documents
        self.validation_set_names: list[str] = sorted(manifest["validation"])
        self._validation: dict[str, TokenArray] = {}

    def validation(self, name: str) -> TokenArray:
        if name not in self.manifest["validation"]:
            raise KeyError(f"no validation set {name!r}; this store has {self.validation_set_names}")
        if name not in self._validation:
            self._validation[name] = TokenArray(self.path / "val" / name,
                                                self.manifest["validation"][name], self.dtype)
        return self._validation[name]

    def tokenizer(self) -> Tokenizer:
        """The tokenizer the store was built with, from the store's own copy of its file."""
        tok = self.manifest["tokenizer"]
        if tok["kind"] == "byte":
            tokenizer = ByteTokenizer()
        elif tok["kind"] == "sentencepiece":
            tokenizer = SentencePieceTokenizer((self.path / tok["file"]).read_bytes())
        elif tok["kind"] == "hf":  # eos/pad came from a config file the store does not keep
            tokenizer = HFTokenizer((self.path / tok["file"]).read_bytes(), eos_id=tok["eos_id"],
                                    pad_id=tok["pad_id"], origin=str(self.path / tok["file"]))
        else:
            raise StoreError(f"{self.path / 'manifest.json'}: unknown tokenizer kind "
                             f"{tok['kind']!r}")
        if tokenizer.hash != tok["hash"]:  # reachable where the store was opened unverified
            raise StoreError(f"{self.path}: the tokenizer's hash {tokenizer.hash} is not the "
                             f"hash {tok['hash']} the store was built with")
        return tokenizer

    @functools.cached_property
    def token_nbytes(self) -> np.ndarray:
        return self.tokenizer().token_nbytes

    def __repr__(self) -> str:
        return (f"TokenStore({str(self.path)!r}, train_tokens={self.n_train_tokens}, "
                f"vocab={self.vocab_size}, validation={self.validation_set_names})")


def verify_files(path: epath.Path, manifest: dict) -> None:
    """Every file the manifest lists exists with its size and sha256 (about 1-2 GB/s locally;
    a gs:// store is read back whole, in ranged chunks)."""
    for rel, entry in manifest["files"].items():
        file = path / rel
        seen = objects.sha256(file)
        if seen is None:
            raise StoreError(f"{file}: missing (listed in {path / 'manifest.json'})")
        digest, size = seen
        if size != entry["bytes"]:
            raise StoreError(f"{file}: {size} bytes, manifest says {entry['bytes']}")
        if digest != entry["sha256"]:
            raise StoreError(f"{file}: sha256 {digest} does not match the manifest "
                             f"({entry['sha256']}); the file was modified or corrupted")
    tok = manifest["tokenizer"]
    if tok["file"] is not None:
        # The file is the listed one (checked above); is it the tokenizer the store was built
        # with? A SentencePiece hash is the file's sha256; an hf hash also covers eos and pad.
        if tok["kind"] == "hf":
            model_hash = hf_tokenizer_hash((path / tok["file"]).read_bytes(), tok["eos_id"],
                                           tok["pad_id"])
        else:
            model_hash = "sha256:" + manifest["files"][tok["file"]]["sha256"]
        if model_hash != tok["hash"]:
            raise StoreError(f"{path / tok['file']}: hash {model_hash} is not the tokenizer "
                             f"hash {tok['hash']} the store was built with")


def read_manifest(path: str | os.PathLike) -> dict:
    path = as_path(path)
    file = path / "manifest.json"
    data = objects.read_bytes(file)
    if data is None:
        hint = ""
        if not is_object_store(path) and (path.parent / f"{path.name}.build").is_dir():
            hint = (f" (an unfinished build left {path.name}.build; run the build again to "
                    "resume it)")
        raise StoreError(f"{path}: not a complete token store, {file} missing{hint}")
    text = data.decode(errors="replace")
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as e:
        # A cut inside a string is reported at the string's start, not at the end of the text.
        cut = ("truncated, " if not text.strip() or e.pos >= len(text.rstrip())
               or e.msg.startswith("Unterminated string") else "")
        raise StoreError(f"{file}: not valid JSON ({cut}{e.msg} at line {e.lineno}, column "
                         f"{e.colno}); build the store again") from None
    if not isinstance(manifest, dict):
        raise StoreError(f"{file}: not a store manifest (a JSON object), got "
                         f"{type(manifest).__name__}")
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"{file}: format {manifest.get('format')!r} "
                         f"v{manifest.get('format_version')}, expected {FORMAT!r} v{FORMAT_VERSION}")
    return manifest


def open_store(path: str | os.PathLike, *, verify: bool = True) -> TokenStore:
    """Open a store; with verify=True (the default) every file's sha256 is checked first.

    `olmo:...` opens OLMo-core token files in place instead (olmo.py documents the spec); their
    verification is a header, size and final-EOS check of each file, as they carry no sha256."""
    if str(path).startswith("olmo:"):
        from hybrid_jax.data.olmo import OlmoStore

        return OlmoStore(str(path), verify=verify)
    path = as_path(path)
    manifest = read_manifest(path)
    try:
        if verify:
            verify_files(path, manifest)
        return TokenStore(path, manifest)
    except KeyError as e:  # a manifest of the right format that lost a field
        raise StoreError(f"{path / 'manifest.json'}: malformed manifest, missing key "
                         f"{e.args[0]!r}; build the store again") from None
    except (TypeError, AttributeError) as e:  # a field of the wrong type
        raise StoreError(f"{path / 'manifest.json'}: malformed manifest ({e}); build the "
                         "store again") from None
