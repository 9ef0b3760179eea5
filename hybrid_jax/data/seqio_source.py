"""`seqio:TASK`: any registered seqio Task; tokens come from the task itself. Needs [seqio].

`register_text_task(name, file_patterns, vocab_path)` registers the project's task over local
text files: one example per line (seqio.TextLineDataSource), mapped to {"targets": line}, then
`seqio.preprocessors.tokenize` with our vocabulary (a SentencePiece model from
`hybrid-jax data tokenizer`, or "byte"). Built into a store, it gives the same tokens as the
`text` source with `--doc-separator '\\n'` on the same files.

The store's tokenizer is the task feature's vocabulary (its model bytes are hashed and copied
into the store). Document text for bytes and the split comes from `<feature>_pretokenized`
(kept by `tokenize` by default); when a task drops it, text is decoded from the tokens, and the
manifest says so.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from hybrid_jax.data.document import DEFAULT_GROUP, Document, expand_inputs, file_records
from hybrid_jax.data.tfds_source import EXTRA_HINT, import_modules, import_tensorflow
from hybrid_jax.data.tokenizer import ByteTokenizer, SentencePieceTokenizer
from hybrid_jax.data.vocab import load_tokenizer


def _import_seqio():
    import_tensorflow()
    try:
        import seqio
    except ImportError as e:
        raise ImportError(f"{EXTRA_HINT} ({e})") from None
    return seqio


def seqio_vocabulary(vocab_path: str):
    if str(vocab_path).startswith("hf:"):
        raise ValueError(f"--tokenizer {vocab_path}: a seqio text task takes a SentencePiece "
                         "model or 'byte' (seqio has no vocabulary over a tokenizer.json)")
    seqio = _import_seqio()
    if vocab_path == "byte":
        return seqio.ByteVocabulary()
    return seqio.SentencePieceVocabulary(str(vocab_path))


def register_text_task(name: str, file_patterns: list[str] | str, vocab_path: str,
                       split: str = "train"):
    """Register (or re-register) seqio Task `name`: lines of local text files, tokenized."""
    seqio = _import_seqio()
    import tensorflow as tf

    patterns = [file_patterns] if isinstance(file_patterns, str) else list(file_patterns)
    files = expand_inputs(patterns)

    def to_targets(line):
        return {"targets": line}

    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    return seqio.TaskRegistry.add(
        name,
        source=seqio.TextLineDataSource({split: files}),
        preprocessors=[
            lambda ds: ds.map(to_targets, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True),
            seqio.preprocessors.tokenize,
        ],
        output_features={"targets": seqio.Feature(seqio_vocabulary(vocab_path), add_eos=False)},
    )


class SeqioSource:
    kind = "seqio"

    def __init__(self, task: str, *, split: str = "train", feature: str = "targets",
                 inputs: list[str] | None = None, tokenizer_path: str | None = None,
                 imports: list[str] = ()):
        seqio = _import_seqio()
        import_modules(list(imports))
        if inputs:
            if not tokenizer_path:
                raise ValueError("registering a text task from --input needs --tokenizer")
            register_text_task(task, inputs, tokenizer_path, split)
        if task not in seqio.TaskRegistry.names():
            raise ValueError(f"seqio task {task!r} is not registered; pass --import MODULE that "
                           f"registers it, or --input FILES to register a text task")
        self.task = seqio.get_mixture_or_task(task)
        if feature not in self.task.output_features:
            raise ValueError(f"task {task!r} has no feature {feature!r}; "
                             f"features: {list(self.task.output_features)}")
        vocab = self.task.output_features[feature].vocabulary
        if getattr(vocab, "extra_ids", 0):
            raise ValueError(f"task {task!r}: vocabularies with extra_ids are not supported")
        if isinstance(vocab, seqio.ByteVocabulary):
            self.tokenizer = ByteTokenizer()
        elif isinstance(vocab, seqio.SentencePieceVocabulary):
            self.tokenizer = SentencePieceTokenizer(vocab.sp_model)
        else:
            raise ValueError(f"task {task!r}: unsupported vocabulary {type(vocab).__name__}")
        if tokenizer_path and load_tokenizer(tokenizer_path).hash != self.tokenizer.hash:
            raise ValueError(f"--tokenizer {tokenizer_path} is not task {task!r}'s vocabulary")
        self.name, self.split, self.feature, self.inputs = task, split, feature, inputs
        self.vocab = vocab
        self.groups = [DEFAULT_GROUP]
        self.text_from = None
        self._versions = {"seqio": getattr(seqio, "__version__", "unknown")}

    def documents(self) -> Iterator[Document]:
        ds = self.task.get_dataset(sequence_length=None, split=self.split, shuffle=False,
                                   use_cached=False, num_epochs=1)
        pretokenized = f"{self.feature}_pretokenized"
        for example in ds.as_numpy_iterator():
            tokens = np.asarray(example[self.feature])
            if pretokenized in example:
                self.text_from = pretokenized
                text = example[pretokenized].decode("utf-8")
            else:
                self.text_from = "decoded tokens"
                text = self.vocab.decode(tokens.tolist())
            yield Document(text, DEFAULT_GROUP, tokens)

    def describe(self) -> dict:
        return {"kind": self.kind, "task": self.name, "split": self.split,
                "feature": self.feature, "text_from": self.text_from,
                "files": file_records(expand_inputs(self.inputs)) if self.inputs else None,
                **self._versions}
