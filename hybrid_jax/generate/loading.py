"""A checkpoint's model and tokenizer, for generation and evaluation.

The model comes from `train.weights` (a run directory's newest verified checkpoint, one of its
checkpoints, or a model directory). The tokenizer is the one given (`load_tokenizer` spec:
"byte", "hf:PATH" or a SentencePiece file), else the run's token store's own tokenizer, else,
for a model directory imported from Hugging Face, the tokenizer.json beside the HF weights.
A checkpoint with none of these is refused with a message that says to pass one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hybrid_jax.data.vocab import Tokenizer, load_tokenizer
from hybrid_jax.models.lm import LM
from hybrid_jax.storage.paths import as_path


class LoadError(ValueError):
    """The checkpoint or its tokenizer cannot be loaded; the message names the path."""


def _run_store(source: dict) -> str | None:
    """The run's data.store (a store directory, local or gs://, or an olmo: spec), or for a
    mixture its first component's store: a mixture's components share one tokenizer."""
    run_dir = source.get("run_dir")
    if not run_dir:
        return None
    try:
        data = json.loads((as_path(run_dir) / "config.json").read_text())["config"]["data"]
        stores = data.get("stores") or {}
        return str(stores[min(stores)] if stores else data["store"]) or None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def checkpoint_tokenizer(source: dict, spec: str | None) -> Tokenizer:
    """The tokenizer for a checkpoint of provenance `source` (train.weights.locate)."""
    if spec is not None:
        try:
            return load_tokenizer(spec)
        except (OSError, ValueError) as e:
            raise LoadError(f"tokenizer {spec!r}: {e}") from None
    store = _run_store(source)
    if store:
        from hybrid_jax.data.store import StoreError, open_store
        try:
            return open_store(store, verify=False).tokenizer()
        except StoreError as e:
            if (store.startswith("olmo:") or
                    (as_path(store) / "manifest.json").exists()):  # there but unreadable
                raise LoadError(f"the run's token store: {e}") from None
    hf_dir = source.get("hf_dir")
    if hf_dir and (Path(hf_dir) / "tokenizer.json").is_file():
        return load_tokenizer(f"hf:{hf_dir}")
    where = f"its token store {store} is not readable" if store else "it names no token store"
    raise LoadError(f"no tokenizer found for {source} ({where}); pass --tokenizer "
                    f"byte|hf:PATH|MODEL_FILE")


def load_checkpoint(path: str | os.PathLike, tokenizer: str | None = None, *, mesh=None,
                    need_tokenizer: bool = True) -> tuple[LM, Tokenizer | None, dict]:
    """(model with its weights, tokenizer, provenance) of the checkpoint at `path`. With a mesh
    the parameters are placed as training places them. With need_tokenizer False a checkpoint
    whose tokenizer cannot be found gives None instead of an error."""
    from flax import nnx

    from hybrid_jax.models.lm import build_model
    from hybrid_jax.train.weights import ModelCheckpointError, load_params

    path = as_path(path)
    if not path.exists():
        raise LoadError(f"{path}: no such checkpoint (pass a run directory, "
                        f"RUN/checkpoints/STEP or a model directory)")
    try:
        cfg, params, source = load_params(path, mesh)
    except ModelCheckpointError as e:
        raise LoadError(str(e)) from None
    try:
        tok = checkpoint_tokenizer(source, tokenizer)
    except LoadError:
        if need_tokenizer or tokenizer is not None:
            raise
        tok = None
    if tok is not None and int(tok.vocab_size) > cfg.vocab_size:
        raise LoadError(f"the tokenizer has {tok.vocab_size} ids, the model {cfg.vocab_size}: "
                        f"they do not belong together")
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: build_model(cfg)))
    model = nnx.merge(graphdef, params)
    return model, tok, source
