"""`hybrid-jax export` and `hybrid-jax import`: our checkpoints to and from transformers.

    hybrid-jax export RUN_DIR|RUN_DIR/checkpoints/STEP|MODEL_DIR --out HF_DIR [--dtype bfloat16]
    hybrid-jax import HF_DIR --out MODEL_DIR [--compute-dtype float32]

Exit codes: 0 written, 2 refused (bad input: nothing written), 1 failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hybrid_jax.hf.config_map import DTYPES


def _export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hybrid-jax export", description=(
        "Write a run's newest checkpoint (or a given one, or a model directory) as a "
        "transformers checkpoint: config.json (olmo3 or olmo_hybrid) and safetensors."))
    p.add_argument("checkpoint", type=Path, help="run dir, RUN/checkpoints/STEP or model dir")
    p.add_argument("--out", type=Path, required=True, help="new or empty directory")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="the weights' dtype")
    p.add_argument("--shard-gb", type=float, default=5.0, help="largest safetensors file")
    return p


def _import_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hybrid-jax import", description=(
        "Read a transformers olmo3 / olmo_hybrid checkpoint (safetensors) into a model "
        "directory that evaluation and train.init_from read."))
    p.add_argument("hf_dir", type=Path)
    p.add_argument("--out", type=Path, required=True, help="new or empty directory")
    p.add_argument("--compute-dtype", choices=DTYPES,
                   help="default: the checkpoint's own dtype (config.json's dtype)")
    return p


def _store_tokenizer(source: dict) -> tuple[dict | None, Path | None]:
    """The run's token store tokenizer record and store directory, if the run names one."""
    run_dir = source.get("run_dir")
    if not run_dir:
        return None, None
    try:
        store = json.loads((Path(run_dir) / "config.json").read_text())["config"]["data"]["store"]
        manifest = json.loads((Path(store) / "manifest.json").read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None, None
    return manifest.get("tokenizer"), Path(store)


def export_main(argv: list[str]) -> int:
    args = _export_parser().parse_args(argv)
    from hybrid_jax.hf.config_map import HFConfigError
    from hybrid_jax.hf.export import ExportError, export_params, export_tokenizer
    from hybrid_jax.train.weights import ModelCheckpointError, load_params

    t0 = time.perf_counter()
    try:
        cfg, params, source = load_params(args.checkpoint)
        tok, store = _store_tokenizer(source)
        ids = {"eos": tok.get("eos_id"), "pad": tok.get("pad_id")} if tok else None
        files = export_params(cfg, params, args.out, dtype=args.dtype, special_ids=ids,
                              max_shard_bytes=int(args.shard_gb * (1 << 30)))
    except (ModelCheckpointError, HFConfigError, ExportError) as e:
        print(f"hybrid-jax export: refused: {e}", file=sys.stderr)
        return 2
    print(f"exported {source} -> {args.out} ({len(files)} files, {args.dtype}, "
          f"{time.perf_counter() - t0:.1f} s)")
    try:
        tok_files = export_tokenizer(tok, store, args.out)
    except ExportError as e:  # the weights are written; the tokenizer is not
        print(f"hybrid-jax export: failed: tokenizer not written: {e}", file=sys.stderr)
        return 1
    if tok_files:
        print(f"tokenizer: {store / tok['file']} -> {', '.join(str(f) for f in tok_files)} "
              f"(eos {tok['eos_token']!r}, pad {tok['pad_token']!r})")
    else:
        kind = tok.get("kind") if tok else "unknown (the run names no readable store)"
        model = (f" (its SentencePiece model: {store / tok['file']})"
                 if tok and tok.get("kind") == "sentencepiece" else "")
        print(f"tokenizer: not written (no tokenizer.json, tokenizer_config.json); the run's "
              f"tokenizer ({kind}) has no Hugging Face tokenizer.json{model}. Its eos/pad ids "
              f"are in config.json where known.")
    return 0


def import_main(argv: list[str]) -> int:
    args = _import_parser().parse_args(argv)
    from hybrid_jax.hf.importer import HFImportError, import_params
    from hybrid_jax.hf.safetensors_io import SafetensorsError
    from hybrid_jax.train.weights import ModelCheckpointError, save_model_dir

    t0 = time.perf_counter()
    if args.out.exists() and any(args.out.iterdir()):
        print(f"hybrid-jax import: refused: {args.out} exists and is not empty", file=sys.stderr)
        return 2
    try:
        cfg, params, hf = import_params(args.hf_dir, compute_dtype=args.compute_dtype)
        save_model_dir(args.out, cfg, params, {"hf_dir": str(args.hf_dir.absolute()),
                                               "model_type": hf.get("model_type")})
    except (HFImportError, SafetensorsError, ModelCheckpointError) as e:
        print(f"hybrid-jax import: refused: {e}", file=sys.stderr)
        return 2
    print(f"imported {args.hf_dir} ({hf.get('model_type')}, {cfg.family}, {cfg.n_layers} "
          f"layers, computing in {cfg.compute_dtype}) -> {args.out} "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0
