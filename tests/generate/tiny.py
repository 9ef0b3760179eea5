"""Tiny configs of the three families for decoding tests (no tests here)."""

from hybrid_jax.config import ModelConfig

# GQA (4 query heads on 2 kv heads), grouped GDN heads (2 key on 4 value heads), a window of 5
# and GDN chunks of 4, so short prompts are no chunk multiple and generation passes the window.
_BASE = dict(vocab_size=61, d_model=32, n_heads=4, n_kv_heads=2, mlp_hidden=64,
             sliding_window=5, gdn_chunk_size=4, gdn_n_heads=2, gdn_n_v_heads=4,
             gdn_head_k_dim=8, compute_dtype="float32", gdn_precision="highest")
CONFIGS = {
    "transformer": ModelConfig(family="transformer", n_layers=2, layers="SA", **_BASE),
    "hybrid": ModelConfig(family="hybrid", n_layers=3, layers="GSA", **_BASE),
    # The released Olmo Hybrid's attention has no positional encoding at all.
    "hybrid-nope": ModelConfig(family="hybrid", n_layers=3, layers="GSA", rope_layers="",
                               **_BASE),
    "gdn": ModelConfig(family="gdn", n_layers=2, **_BASE),
}


def save_tiny_model(out, family: str = "hybrid", seed: int = 0):
    """A model directory (as `hybrid-jax import` writes) of CONFIGS[family] with the byte
    tokenizer's 259 ids in a vocabulary of 264; returns (model, out)."""
    from flax import nnx

    from hybrid_jax.models.lm import build_model
    from hybrid_jax.train.weights import save_model_dir

    cfg = CONFIGS[family].replace(vocab_size=264)
    model = build_model(cfg, seed=seed)
    save_model_dir(out, cfg, nnx.to_pure_dict(nnx.state(model, nnx.Param)), {"test": family})
    return model, out
