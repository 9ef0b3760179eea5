"""The four small models of the suite, built with the ladder's ModelConfig / build_model.

    transformer   full causal attention in every layer (pattern "A"), RoPE
    gdn01         Gated DeltaNet only, beta in (0, 1)  (gdn_allow_neg_eigval=False)
    gdn02         Gated DeltaNet only, beta in (0, 2)  (gdn_allow_neg_eigval=True)
    hybrid        GDN beta in (0, 2) and full attention, pattern e.g. "GA" (2 layers), "GGGA" (4)

All share d_model, heads, depth and vocabulary; parameter counts are matched by choosing each
model's SwiGLU hidden width: the transformer uses mlp_hidden = 4 d_model, and every other model
gets the width that brings its total closest to the transformer's (a GDN block has about
6 d_model^2 projection parameters against attention's 4 d_model^2, so its MLP is narrower).

Token embeddings are drawn with std `ModelShape.embed_std` (1.0), not the ladder's init_std
(0.02, OLMo-core's "normal" init). Why: the attention block is Olmo 3's reordered post-norm,
h = x + Norm(Attn(x)), so every attention layer adds an RMS-1 output to the residual stream from
the first step; an RMS-0.02 embedding is then about 5% of the stream after one layer (measured
on a 2-layer d_model-64 transformer on MQAR: |e| / |x_1| = 0.06 at init, 0.05 after 2000 steps,
in which the embedding grew only to RMS 0.07). The current token is nearly lost, and the
transformer never formed the induction circuit that copy and MQAR need: the `full` transformer
scored 0.00 on MQAR at each of 3 learning rates after 2000 and after 6000 steps, and 1.00 with
std 1 (LOG). At std 1 the token enters at the scale of a normalised block output, as in
OLMo-core's "llama" init. The same rule holds for all four models; GDN blocks are pre-norm and
see only Norm(x).
"""

from __future__ import annotations

import dataclasses
import difflib

from hybrid_jax.config import ModelConfig
from hybrid_jax.expressivity.tasks import VOCAB_SIZE
from hybrid_jax.flops import param_count
from hybrid_jax.models.lm import LM, build_model

MODELS = ("transformer", "gdn01", "gdn02", "hybrid")


@dataclasses.dataclass(frozen=True)
class ModelShape:
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    hybrid_pattern: str = "GA"
    # Short sequences: theta = 10k rotates enough RoPE dims to separate positions at T <= 1k.
    rope_theta: float = 10_000.0
    compute_dtype: str = "float32"
    embed_std: float = 1.0  # see the module docstring


    def __post_init__(self) -> None:
        if not 2 <= self.n_layers <= 4:
            raise ValueError(f"n_layers must be in [2, 4], got {self.n_layers}")
        if len(self.hybrid_pattern) != self.n_layers or set(self.hybrid_pattern) != {"G", "A"}:
            raise ValueError(f"hybrid_pattern must spell all {self.n_layers} layers with both G "
                             f"and A, got {self.hybrid_pattern!r}")
        if not self.embed_std > 0:
            raise ValueError(f"embed_std must be > 0, got {self.embed_std}")


def _base(shape: ModelShape, mlp_hidden: int, **kw) -> ModelConfig:
    return ModelConfig(vocab_size=VOCAB_SIZE, d_model=shape.d_model, n_layers=shape.n_layers,
                       n_heads=shape.n_heads, mlp_hidden=mlp_hidden, rope_theta=shape.rope_theta,
                       compute_dtype=shape.compute_dtype, **kw)


def _unmatched(name: str, shape: ModelShape, mlp_hidden: int) -> ModelConfig:
    if name == "transformer":
        return _base(shape, mlp_hidden, family="transformer", layer_pattern="A")
    if name in ("gdn01", "gdn02"):
        return _base(shape, mlp_hidden, family="gdn", layer_pattern="G",
                     gdn_allow_neg_eigval=name == "gdn02")
    if name == "hybrid":
        return _base(shape, mlp_hidden, family="hybrid", layer_pattern=shape.hybrid_pattern,
                     final_full_attention=False, gdn_allow_neg_eigval=True)
    close = difflib.get_close_matches(name, MODELS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown model {name!r}{hint}; known: {MODELS}")


def model_config(name: str, shape: ModelShape) -> ModelConfig:
    """The config of model `name`, its MLP width chosen to match the transformer's parameters."""
    target = param_count(_unmatched("transformer", shape, 4 * shape.d_model)).total
    if name == "transformer":
        return _unmatched(name, shape, 4 * shape.d_model)
    p1 = param_count(_unmatched(name, shape, 1)).total
    p2 = param_count(_unmatched(name, shape, 2)).total
    hidden = max(1, round(1 + (target - p1) / (p2 - p1)))  # the count is linear in mlp_hidden
    return _unmatched(name, shape, hidden)


def param_counts(shape: ModelShape, names=MODELS) -> dict[str, int]:
    return {n: param_count(model_config(n, shape)).total for n in names}


def init_model(cfg: ModelConfig, embed_std: float, *, seed: int) -> LM:
    """build_model(cfg), its token embedding redrawn with std `embed_std` (the ladder draws every
    weight, the embedding too, as N(0, init_std^2), so rescaling gives exactly N(0, embed_std^2))."""
    model = build_model(cfg, seed=seed)
    model.embed[...] = model.embed[...] * (embed_std / cfg.init_std)
    return model
