"""Hugging Face interchange: our checkpoints to and from transformers' `olmo3` and
`olmo_hybrid` (docs/hf.md).

    from hybrid_jax.hf import export_hf, import_hf
    export_hf(model, cfg, "hf_out")           # config.json + safetensors
    cfg, model = import_hf("hf_out")          # transformers' files back into our LM

On the command line: `hybrid-jax export RUN_OR_CHECKPOINT --out HF_DIR` and
`hybrid-jax import HF_DIR --out MODEL_DIR`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flax import nnx

from hybrid_jax.config import ModelConfig


def export_hf(model: Any, cfg: ModelConfig, out_dir: str | Path, *, dtype: str = "float32",
              special_ids: dict[str, int | None] | None = None) -> list[Path]:
    """Write `model` (our LM, or its parameters as a pure dict) of config `cfg` to `out_dir`
    as a transformers checkpoint in `dtype`; returns the files written."""
    from hybrid_jax.hf.export import export_params

    params = model if isinstance(model, dict) else nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return export_params(cfg, params, Path(out_dir), dtype=dtype, special_ids=special_ids)


def import_hf(hf_dir: str | Path, *, compute_dtype: str | None = None, mesh: Any = None
              ) -> tuple[ModelConfig, Any]:
    """(config, our LM with the weights) of the transformers checkpoint in `hf_dir`. The model
    computes in the checkpoint's dtype unless `compute_dtype` says otherwise. With a jax Mesh
    the weights are placed split over it as training places them (the default logical rules),
    one tensor at a time, so the host never holds more than one whole tensor."""
    from hybrid_jax.hf.importer import import_params
    from hybrid_jax.models.lm import build_model

    cfg, params, _ = import_params(Path(hf_dir), compute_dtype=compute_dtype, sharding=mesh)
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: build_model(cfg)))
    return cfg, nnx.merge(graphdef, params)
