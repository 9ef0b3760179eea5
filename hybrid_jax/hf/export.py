"""Write a model as a Hugging Face checkpoint: config.json, safetensors shards, tokenizer.

Tensors are converted and written one at a time (safetensors_io), so the host holds the
model's parameters (wherever they live) plus one converted tensor. Shards are cut at
`max_shard_bytes`; with more than one, model.safetensors.index.json maps names to files, as
transformers' own sharded checkpoints do.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jax
import ml_dtypes
import numpy as np

from hybrid_jax.config import ModelConfig
from hybrid_jax.hf import config_map, weights_map
from hybrid_jax.hf.safetensors_io import write_file

NP_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16),
             "float16": np.dtype(np.float16)}
DEFAULT_SHARD_BYTES = 5 << 30


class ExportError(ValueError):
    """An export cannot be written; the message names the reason."""


def export_params(cfg: ModelConfig, params: dict, out_dir: Path, *, dtype: str = "float32",
                  special_ids: dict[str, int | None] | None = None,
                  max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> list[Path]:
    """Write `params` (our pure dict) of model `cfg` to `out_dir` in HF's layout; returns the
    files written. `out_dir` must be new or empty."""
    hf_config = config_map.to_hf_config(cfg, dtype=dtype, special_ids=special_ids)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ExportError(f"{out_dir}: exists and is not empty; nothing was written")
    if jax.process_count() > 1:
        raise ExportError("export runs in one process; restore the checkpoint on one host")
    np_dtype = NP_DTYPES[dtype]
    groups, size, total = [[]], 0, 0
    by_name = {}
    for t in weights_map.tensors(cfg):
        shape = weights_map.hf_shape(t, tuple(weights_map.leaf(params, t.part).shape))
        n = int(np.prod(shape)) * np_dtype.itemsize
        if groups[-1] and size + n > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append((t.name, shape, np_dtype))
        by_name[t.name] = t
        size += n
        total += n

    def produce(name: str) -> np.ndarray:
        t = by_name[name]
        array = np.asarray(jax.device_get(weights_map.leaf(params, t.part)), np.float32)
        return weights_map.to_hf(t, array).astype(np_dtype)

    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    try:
        names = (["model.safetensors"] if len(groups) == 1 else
                 [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
                  for i in range(len(groups))])
        for fname, group in zip(names, groups):
            write_file(out_dir / fname, group, produce, metadata={"format": "pt"})
            files.append(out_dir / fname)
        if len(groups) > 1:
            index = {"metadata": {"total_size": total},
                     "weight_map": {name: f for f, g in zip(names, groups) for name, _, _ in g}}
            _write_json(out_dir / "model.safetensors.index.json", index)
            files.append(out_dir / "model.safetensors.index.json")
        _write_json(out_dir / "config.json", hf_config)
        files.append(out_dir / "config.json")
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)  # no half-written checkpoint is left
        raise
    return files


def export_tokenizer(record: dict | None, store: Path | None, out_dir: Path) -> list[Path]:
    """Copy a run's Hugging Face tokenizer out of its token store (`record` is the manifest's
    tokenizer entry) into `out_dir`: tokenizer.json, and tokenizer_config.json naming the eos and
    pad the store used (they may have come from a config file the store does not keep). Returns
    [] where the store's tokenizer is not an hf one: byte and SentencePiece stores have no
    tokenizer.json. A missing or altered copy in the store is an ExportError."""
    from hybrid_jax.data.hf_tokenizer import CONFIG_FILE, hf_tokenizer_hash, tokenizer_config

    if not record or record.get("kind") != "hf":
        return []
    source = Path(store) / record["file"]
    try:
        data = source.read_bytes()
    except OSError as e:
        raise ExportError(f"{source}: the store's tokenizer cannot be read "
                          f"({e.strerror})") from None
    if hf_tokenizer_hash(data, record["eos_id"], record["pad_id"]) != record["hash"]:
        raise ExportError(f"{source}: not the tokenizer the store was built with (its hash is "
                          f"not {record['hash']})")
    out_dir = Path(out_dir)
    tmp = out_dir / "tokenizer.json.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, out_dir / "tokenizer.json")
    _write_json(out_dir / CONFIG_FILE, tokenizer_config(record["eos_token"], record["pad_token"]))
    return [out_dir / "tokenizer.json", out_dir / CONFIG_FILE]


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
