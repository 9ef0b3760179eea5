"""Live parity with transformers, both ways, where torch and transformers are installed (the
GPU image has both; CI has neither and reads tests/hf/fixtures instead):

    python tests/hf/live_parity.py [--T 300] [--json OUT]

1. transformers -> ours: each fixture case's architecture at random weights is saved by
   transformers, imported by us, and both compute logits for the same ids.
2. ours -> transformers: each family's tiny model at random weights is exported by us and
   loaded by `AutoModelForCausalLM.from_pretrained`.
Each at fp32 (weights and compute) and at bf16 (bf16 weights, each side computing in bf16), with
the relative error ||ours - theirs|| / ||theirs||. A bf16 row also gives each side's error
against transformers' fp32 logits; by the triangle inequality the two sides can differ by at
most their sum, which is the bf16 pass bound (fp32 must agree within 1e-4). On a GPU our side also runs the Pallas GDN
kernel (gdn_implementation=pallas_gpu at precision default); its own error against our fp32
path is printed beside it, and its distance from transformers must stay within that error plus
our fp32 path's (the triangle inequality). Our other rows run XLA `chunked` at "highest", with
fp32 matmuls as fp32 (not TF32) on a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from hybrid_jax.hf import export_hf, import_hf  # noqa: E402
from hybrid_jax.models.lm import build_model  # noqa: E402
from hybrid_jax.presets import get_preset  # noqa: E402
from tests.hf.make_fixtures import CASES, COMMON  # noqa: E402

TORCH = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# Our side's reference path: XLA `chunked` at "highest". The models' default ("auto") would run
# the Pallas kernel at "default" (bf16 operands) on a GPU; that path has its own rows.
REFERENCE_GDN = {"gdn_implementation": "chunked", "gdn_precision": "highest"}


def ours_logits(hf_dir: Path, ids: np.ndarray, dtype: str, **fields) -> np.ndarray:
    from flax import nnx

    cfg, model = import_hf(hf_dir, compute_dtype=dtype)
    cfg = cfg.replace(**{**REFERENCE_GDN, **fields})
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: build_model(cfg)))
    model = nnx.merge(graphdef, nnx.state(model))
    return np.asarray(model(jnp.asarray(ids)), np.float32)


def hf_logits(hf_dir: Path, ids: np.ndarray, dtype: str) -> np.ndarray:
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=TORCH[dtype]).eval()
    with torch.no_grad():
        return model(input_ids=torch.as_tensor(ids, dtype=torch.long)).logits.float().numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--T", type=int, default=300)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    gpu = jax.default_backend() == "gpu"
    # XLA runs fp32 matmuls as TF32 on a GPU by default: fp32 rows off by 1e-3 (the transformer
    # too, which has no GDN layer). Parity in fp32 means fp32 products; bf16 matmuls are
    # unaffected.
    jax.config.update("jax_default_matmul_precision", "highest")
    rows = []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (config_cls, model_cls, fields) in CASES.items():
            torch.manual_seed(0)
            hf_model = model_cls(config_cls(**COMMON, **fields)).float().eval()
            ids = rng.integers(2, COMMON["vocab_size"], (2, args.T))
            ref = None
            for dtype in ("float32", "bfloat16"):
                d = Path(tmp) / f"{name}-{dtype}"
                hf_model.to(TORCH[dtype]).save_pretrained(d)
                theirs = hf_logits(d, ids, dtype)
                mine = ours_logits(d, ids, dtype)
                row = {"direction": "transformers -> ours", "case": name, "dtype": dtype,
                       "rel": rel(mine, theirs)}
                ref = theirs if ref is None else ref
                if dtype == "bfloat16":
                    row.update(ours_vs_fp32=rel(mine, ref), theirs_vs_fp32=rel(theirs, ref))
                if gpu and "hybrid" in name:
                    pallas = ours_logits(d, ids, dtype, gdn_implementation="pallas_gpu",
                                         gdn_precision="default")
                    ours_fp32 = ours_logits(d, ids, "float32")
                    row["rel_pallas"] = rel(pallas, theirs)
                    row["pallas_vs_ours_fp32"] = rel(pallas, ours_fp32)
                    # the kernel's own error (against our fp32 path) plus ours against theirs
                    row["pallas_bound"] = row["pallas_vs_ours_fp32"] + rel(ours_fp32, theirs)
                rows.append(row)
        for family in ("transformer", "hybrid"):
            for rope in ("AS", ""):
                if family == "transformer" and not rope:
                    continue  # olmo3 always applies RoPE
                cfg = get_preset(f"{family}_tiny", rope_layers=rope, compute_dtype="float32",
                                 init_std=0.08)
                model = build_model(cfg, seed=1)
                ids = rng.integers(0, cfg.vocab_size, (2, args.T))
                ref = None
                for dtype in ("float32", "bfloat16"):
                    d = Path(tmp) / f"ours-{family}-{rope or 'nope'}-{dtype}"
                    export_hf(model, cfg, d, dtype=dtype)
                    mine, theirs = ours_logits(d, ids, dtype), hf_logits(d, ids, dtype)
                    row = {"direction": "ours -> transformers",
                           "case": f"{family}_tiny rope={rope or 'none'}", "dtype": dtype,
                           "rel": rel(mine, theirs)}
                    ref = theirs if ref is None else ref
                    if dtype == "bfloat16":
                        row.update(ours_vs_fp32=rel(mine, ref), theirs_vs_fp32=rel(theirs, ref))
                    rows.append(row)
    print(f"device: {jax.devices()[0].device_kind}; torch {torch.__version__}; T = {args.T}")
    for r in rows:
        extra = "".join(f"  {k} {v:.2e}" for k, v in r.items()
                        if k not in ("direction", "case", "dtype", "rel"))
        print(f"{r['direction']:<22} {r['case']:<34} {r['dtype']:<9} rel {r['rel']:.2e}{extra}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    bad = [r for r in rows if r["rel"] > (1e-4 if r["dtype"] == "float32" else
                                          r["ours_vs_fp32"] + r["theirs_vs_fp32"] + 1e-4)
           or r.get("rel_pallas", 0) > r.get("pallas_bound", 0) + 1e-4]
    print(f"worst fp32 {max(r['rel'] for r in rows if r['dtype'] == 'float32'):.2e}; "
          f"{len(bad)} row(s) out of bounds")
    if bad:
        raise SystemExit("parity FAILED: fp32 must agree within 1e-4, bf16 within the sum of "
                         "each side's own bf16 error")

if __name__ == "__main__":
    main()
