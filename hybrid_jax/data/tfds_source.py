"""`tfds:NAME[/CONFIG]`: any prepared TFDS dataset with a text feature. Needs the [seqio] extra.

TensorFlow is imported here only, when such a source is made, and it is shown no GPU or TPU, so
it cannot take accelerator memory from JAX in the same process. Nothing downloads: the dataset
must already be prepared under --data-dir (a local GeneratorBasedBuilder counts: prepare it
with `tfds build` or `builder.download_and_prepare()` first; `--import MODULE` registers it).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

from hybrid_jax.data.document import DEFAULT_GROUP, Document

EXTRA_HINT = "needs the [seqio] extra: pip install .[seqio]"


def import_tensorflow():
    """`tensorflow`, with GPUs and TPUs hidden from it before it initializes any device."""
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError(f"{EXTRA_HINT} ({e})") from None
    for kind in ("GPU", "TPU"):
        try:
            tf.config.set_visible_devices([], kind)
        except RuntimeError:  # devices already initialized: fine only if none of this kind is visible
            if tf.config.get_visible_devices(kind):
                raise RuntimeError(f"TensorFlow initialized {kind}s before hybrid_jax could hide "
                                   "them; import hybrid_jax's tfds/seqio sources first") from None
    return tf


def import_modules(names: list[str]) -> None:
    """Import modules that register tfds builders or seqio tasks (`--import`)."""
    for name in names:
        importlib.import_module(name)


class TfdsSource:
    kind = "tfds"

    def __init__(self, name: str, *, split: str = "train", text_key: str = "text",
                 data_dir: str | None = None, imports: list[str] = ()):
        tf = import_tensorflow()
        import tensorflow_datasets as tfds

        import_modules(list(imports))
        self._tf, self._tfds = tf, tfds
        self.builder = tfds.builder(name, data_dir=data_dir)
        if not self.builder.is_prepared():
            raise FileNotFoundError(
                f"tfds dataset {name!r} is not prepared in {self.builder.data_dir}; prepare it "
                "there first (nothing is downloaded at build time)")
        features = self.builder.info.features
        if text_key not in features or not isinstance(features[text_key], tfds.features.Text):
            texts = [k for k, f in features.items() if isinstance(f, tfds.features.Text)]
            raise ValueError(f"{name}: no text feature {text_key!r}; text features: {texts}")
        if split not in self.builder.info.splits:
            raise ValueError(f"{name}: no split {split!r}; splits: {list(self.builder.info.splits)}")
        self.name, self.split, self.text_key, self.data_dir = name, split, text_key, data_dir
        self.groups = [DEFAULT_GROUP]

    def documents(self) -> Iterator[Document]:
        ds = self.builder.as_dataset(split=self.split, shuffle_files=False)
        for example in self._tfds.as_numpy(ds):
            yield Document(example[self.text_key].decode("utf-8"))

    def describe(self) -> dict:
        info = self.builder.info
        return {"kind": self.kind, "name": self.name, "full_name": info.full_name,
                "version": str(info.version), "split": self.split, "text_key": self.text_key,
                "num_examples": info.splits[self.split].num_examples,
                "data_dir": str(self.builder.data_dir),
                "tensorflow": self._tf.__version__, "tensorflow_datasets": self._tfds.__version__}
