"""OLMo-core token files as a store, read in place: `open_store("olmo:...")`.

Spec (the value of `data.store`; a URL-style query after the first '?'):

    olmo:TRAIN[,TRAIN...]?tokenizer=TOK&val=VAL[,VAL...]|none[&val.NAME=VAL...][&dtype=uint32][&eos=ID]

    TRAIN, VAL  local globs or gs://bucket/... fnmatch patterns of OLMo-core token files: raw
                little-endian id arrays without a header (OLMo-core's `.npy` memmaps), each
                document followed by EOS. Files are read in the order listed, sorted within a
                pattern. Since '?' starts the options, it is not a wildcard here.
    tokenizer   what load_tokenizer takes: hf:PATH (a tokenizer.json or its directory), a
                SentencePiece model, or byte. Gives vocab_size, pad, the default EOS id and
                the per-token byte counts that bits-per-byte divides by.
    val         the validation files, the set named "val"; `val.NAME=` adds a set NAME. The
                split is explicit: `val=none` says the run has no validation set.
    dtype       uint32 (default, OLMo-core's for vocabularies over 65536) or uint16.
    eos         the document separator id, if not the tokenizer's EOS.

The train stream is `EOS` + the concatenation of the train files, which is the stream a built
store of the same documents in the same order holds, so batches.py samples it the same way:
a batch is a function of (seed, step, rank). Document boundaries (needed only by `data info`
and bits-per-byte) come from one scan for the EOS id, done when first asked for.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from urllib.parse import unquote

import numpy as np

from hybrid_jax.data.errors import StoreError
from hybrid_jax.data.token_files import TokenFiles, list_token_files
from hybrid_jax.data.vocab import Tokenizer, load_tokenizer

PREFIX = "olmo:"
FORMAT = "olmo-token-files"
_DTYPES = {"uint32": np.dtype("<u4"), "uint16": np.dtype("<u2")}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class OlmoSpecError(StoreError):
    pass


@dataclasses.dataclass(frozen=True)
class OlmoSpec:
    train: tuple[str, ...]
    tokenizer: str
    validation: tuple[tuple[str, tuple[str, ...]], ...]  # (set name, patterns), sorted by name
    dtype: str = "uint32"
    eos: int | None = None

    def __post_init__(self):
        if not self.train or not all(self.train):
            raise OlmoSpecError("olmo: no train files given (olmo:GLOB[,GLOB]?tokenizer=...)")
        if self.dtype not in _DTYPES:
            raise OlmoSpecError(f"olmo: dtype={self.dtype!r}; use one of {sorted(_DTYPES)}")
        for name, patterns in self.validation:
            if not _NAME.match(name):
                raise OlmoSpecError(f"olmo: validation set name {name!r} is not a safe name")
            if not patterns or not all(patterns):
                raise OlmoSpecError(f"olmo: validation set {name!r} has an empty file pattern")


def parse_spec(spec: str) -> OlmoSpec:
    if not spec.startswith(PREFIX):
        raise OlmoSpecError(f"not an olmo: spec: {spec!r}")
    paths, _, query = spec[len(PREFIX):].partition("?")
    options: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or not value:
            raise OlmoSpecError(f"olmo: option {item!r} is not KEY=VALUE")
        if key in options:
            raise OlmoSpecError(f"olmo: option {key!r} given twice")
        options[key] = unquote(value)
    known = {"tokenizer", "val", "dtype", "eos"}
    for key in options:
        if key not in known and not key.startswith("val."):
            raise OlmoSpecError(f"olmo: unknown option {key!r}; options are tokenizer, val, "
                                "val.NAME, dtype, eos")
    if "tokenizer" not in options:
        raise OlmoSpecError("olmo: tokenizer=... is required (e.g. tokenizer=hf:PATH)")
    val_sets = {k[4:]: v for k, v in options.items() if k.startswith("val.")}
    if "val" not in options and not val_sets:
        raise OlmoSpecError("olmo: say which files validate: val=GLOB[,GLOB], val.NAME=GLOB, "
                            "or val=none")
    if options.get("val") == "none":
        if val_sets:
            raise OlmoSpecError("olmo: val=none together with val.NAME=...")
    elif "val" in options:
        val_sets["val"] = options["val"]
    eos = options.get("eos")
    if eos is not None and not eos.isdigit():
        raise OlmoSpecError(f"olmo: eos={eos!r} is not a token id")
    return OlmoSpec(train=tuple(paths.split(",")), tokenizer=options["tokenizer"],
                    validation=tuple(sorted((n, tuple(v.split(","))) for n, v in val_sets.items())),
                    dtype=options.get("dtype", "uint32"), eos=None if eos is None else int(eos))


class OlmoStore:
    """TokenStore's interface (store.py) over OLMo-core token files; nothing is copied."""

    def __init__(self, spec: str, *, verify: bool = True):
        self.spec = parse_spec(spec)
        self.path = spec
        self._tokenizer = load_tokenizer(self.spec.tokenizer)
        tok = self._tokenizer
        self.vocab_size: int = tok.vocab_size
        self.eos_id: int = tok.eos_id if self.spec.eos is None else self.spec.eos
        self.pad_id: int = tok.pad_id
        self.tokenizer_hash: str = tok.hash
        self.dtype = _DTYPES[self.spec.dtype]
        if self.eos_id >= self.vocab_size:
            raise OlmoSpecError(f"olmo: eos id {self.eos_id} >= vocab_size {self.vocab_size}")
        if self.dtype.itemsize == 2 and self.vocab_size > 1 << 16:
            raise OlmoSpecError(f"olmo: dtype=uint16 cannot hold vocab_size {self.vocab_size}")
        self.train = self._files(self.spec.train)
        self._validation = {name: self._files(patterns) for name, patterns in self.spec.validation}
        train_names = {f.name for f in self.train.files}
        for name, array in self._validation.items():
            both = sorted(train_names & {f.name for f in array.files})
            if both:
                raise OlmoSpecError(f"olmo: {both[0]} is both a train file and a file of "
                                    f"validation set {name!r}")
        if verify:
            for array in [self.train, *self._validation.values()]:
                array.check()
        self.n_train_tokens: int = self.train.n_tokens
        self.validation_set_names: list[str] = sorted(self._validation)
        self.manifest = {
            "format": FORMAT, "source": {"kind": "olmo", "spec": spec},
            "tokenizer": {"kind": tok.kind, "hash": tok.hash, "vocab_size": self.vocab_size,
                          "eos_id": self.eos_id, "pad_id": self.pad_id,
                          # bytes are defined by the tokenizer's per-token counts: no text here
                          "token_bytes_exact": True},
            "dtype": self.dtype.str,
            "train": {"tokens": self.n_train_tokens,
                      "files": [{"name": f.name, "bytes": f.nbytes} for f in self.train.files]},
            "validation": {n: {"tokens": a.n_tokens,
                               "files": [{"name": f.name, "bytes": f.nbytes} for f in a.files]}
                           for n, a in self._validation.items()},
        }

    def _files(self, patterns: tuple[str, ...]) -> TokenFiles:
        return TokenFiles(list_token_files(list(patterns), self.dtype), self.dtype, self.eos_id,
                          self.vocab_size, lambda: self.token_nbytes)

    @property
    def n_train_documents(self) -> int:
        return self.train.n_documents

    def validation(self, name: str) -> TokenFiles:
        if name not in self._validation:
            raise KeyError(f"no validation set {name!r}; this store has {self.validation_set_names}")
        return self._validation[name]

    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    @functools.cached_property
    def token_nbytes(self) -> np.ndarray:
        nbytes = np.array(self._tokenizer.token_nbytes, np.int64)
        nbytes[self.eos_id] = 0  # a separator, not text
        return nbytes

    def __repr__(self) -> str:
        return (f"OlmoStore({self.path!r}, train_tokens={self.n_train_tokens}, "
                f"vocab={self.vocab_size}, validation={self.validation_set_names})")
