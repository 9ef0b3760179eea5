"""The language model shared by all three families; the layer pattern decides each mixer.

Blocks:
  * attention ("A", "S"): Olmo 3's "reordered" post-norm,
        h = x + Norm(Attn(x));  out = h + Norm(MLP(h))
  * Gated DeltaNet ("G"): pre-norm, as in the trained Olmo Hybrid 7B,
        h = x + GDN(Norm(x));   out = h + MLP(Norm(h))
The stack ends with a final RMSNorm and an untied (by default) unembedding. Logits are fp32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from hybrid_jax.config import ModelConfig
from hybrid_jax.models.attention import Attention
from hybrid_jax.models.gdn import GatedDeltaNet
from hybrid_jax.models.layers import RMSNorm, SwiGLU, make_param, normal
from hybrid_jax.sharding import constrain


class _Block(nnx.Module):
    """A mixer, an MLP and their two norms; subclasses decide where the norms go."""

    def __init__(self, cfg: ModelConfig, mixer: nnx.Module, *, rngs: nnx.Rngs):
        self.mixer = mixer
        self.mixer_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps, rngs=rngs)
        self.mlp = SwiGLU(cfg.d_model, cfg.mlp_hidden, std=cfg.init_std,
                          dtype=jnp.dtype(cfg.compute_dtype), rngs=rngs)
        self.mlp_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps, rngs=rngs)


class AttentionBlock(_Block):
    """Olmo 3's reordered post-norm."""

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        return self.apply(x_BTD, lambda x: (self.mixer(x), None))[0]

    def apply(self, x_BTD: jax.Array, mix):
        """The block around `mix(x) -> (y, extra)` (decoding passes the mixer with its cache);
        returns (output, extra)."""
        y, extra = mix(x_BTD)
        h = x_BTD + self.mixer_norm(y)
        return h + self.mlp_norm(self.mlp(h)), extra


class GDNBlock(_Block):
    """Pre-norm, as in the trained Olmo Hybrid 7B."""

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        return self.apply(x_BTD, lambda x: (self.mixer(x), None))[0]

    def apply(self, x_BTD: jax.Array, mix):
        """As AttentionBlock.apply."""
        y, extra = mix(self.mixer_norm(x_BTD))
        h = x_BTD + y
        return h + self.mlp(self.mlp_norm(h)), extra


def make_block(cfg: ModelConfig, letter: str, *, rngs: nnx.Rngs) -> nnx.Module:
    if letter in ("A", "S"):
        window = cfg.sliding_window if letter == "S" else None
        mixer = Attention(cfg, window=window, rope=letter in cfg.rope_layers, rngs=rngs)
        return AttentionBlock(cfg, mixer, rngs=rngs)
    if letter == "G":
        return GDNBlock(cfg, GatedDeltaNet(cfg, rngs=rngs), rngs=rngs)
    raise ValueError(f"unknown layer letter {letter!r}")  # config validation makes this unreachable


@jax.custom_vjp
def unembed_logits(x_BTD: jax.Array, w_DY: jax.Array) -> jax.Array:
    """fp32 logits of x [B, T, D] (compute dtype) against fp32 weights w [D, Y], in x's dtype
    with fp32 accumulation, and a backward that stays in x's dtype too.

    Why: with plain autodiff the fp32 logits make an fp32 cotangent, so both backward GEMMs
    (dx, dw) promote their bf16 operand to fp32, which a GPU runs as TF32 at half the bf16 rate:
    23% of a 370M transformer's step on an H200 (profiled; experiments/LOG.md). Here the
    cotangent is rounded to x's dtype once, as mixed-precision frameworks compute logits; dw
    accumulates in fp32 and stays fp32 (plain autodiff rounds it to bf16 at the weight cast)."""
    return jnp.dot(x_BTD, w_DY.astype(x_BTD.dtype), preferred_element_type=jnp.float32)


def _unembed_fwd(x_BTD, w_DY):
    return unembed_logits(x_BTD, w_DY), (x_BTD, w_DY)


def _unembed_bwd(res, g_BTY):
    x_BTD, w_DY = res
    g_BTY = g_BTY.astype(x_BTD.dtype)
    dx_BTD = jnp.dot(g_BTY, w_DY.astype(x_BTD.dtype).T, preferred_element_type=jnp.float32)
    dw_DY = jnp.einsum("btd,bty->dy", x_BTD, g_BTY, preferred_element_type=jnp.float32)
    return dx_BTD.astype(x_BTD.dtype), dw_DY.astype(w_DY.dtype)


unembed_logits.defvjp(_unembed_fwd, _unembed_bwd)


# The residual stream between blocks: split over the batch axes only (see `constrain`).
RESIDUAL = ("batch", None, None)


class LM(nnx.Module):
    """tokens [B, T] int32 -> logits [B, T, vocab] fp32."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = make_param(rngs, normal(cfg.init_std), (cfg.vocab_size, cfg.d_model),
                                ("vocab", "embed"))
        self.blocks = nnx.List([make_block(cfg, t, rngs=rngs) for t in cfg.layer_types])
        self.final_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps, rngs=rngs)
        if cfg.tie_embeddings:
            self.unembed = None
        else:
            self.unembed = make_param(rngs, normal(cfg.init_std), (cfg.d_model, cfg.vocab_size),
                                      ("embed", "vocab"))

    def __call__(self, tokens_BT: jax.Array) -> jax.Array:
        return self.from_embeddings(self.embed_tokens(tokens_BT))

    def embed_tokens(self, tokens_BT: jax.Array) -> jax.Array:
        x_BTD = jnp.take(self.embed[...], tokens_BT, axis=0).astype(self.cfg.compute_dtype)
        return constrain(x_BTD, RESIDUAL)

    def from_embeddings(self, x_BTD: jax.Array) -> jax.Array:
        """Logits from input embeddings; split out so tests can differentiate through inputs."""
        for block in self.blocks:
            x_BTD = constrain(block(x_BTD), RESIDUAL)
        return self.head(x_BTD)

    def head(self, x_BTD: jax.Array) -> jax.Array:
        """fp32 logits [B, T, vocab] of the last block's output: final norm, unembedding."""
        dtype = jnp.dtype(self.cfg.compute_dtype)
        x_BTD = self.final_norm(x_BTD)
        w_DY = self.embed[...].T if self.unembed is None else self.unembed[...]
        if dtype == jnp.float32 or self.cfg.unembed_grad_dtype == "float32":  # plain autodiff
            logits = jnp.dot(x_BTD, w_DY.astype(dtype), preferred_element_type=jnp.float32)
        else:
            logits = unembed_logits(x_BTD, w_DY)
        return constrain(logits, ("batch", None, "vocab"))


def build_model(cfg: ModelConfig, *, seed: int | jax.Array = 0) -> LM:
    """The model with freshly initialised fp32 parameters. `seed` is an int or a typed PRNG key
    (the training step passes a key as a jit argument, so XLA does not fold the init into
    compile-time constants)."""
    return LM(cfg, rngs=nnx.Rngs(params=seed))
