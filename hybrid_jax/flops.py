"""Exact parameter counts and forward FLOPs per token, for any ModelConfig.

Conventions (the same ones every scaling-law paper needs stated):

* A FLOP is one multiply or one add; a multiply-accumulate is 2 FLOPs.
* Only matrix products and the GDN short convolution are counted. Norms, RoPE, softmax,
  activations and gates are elementwise, O(D) per token, and left out (< 1% at every preset).
* The embedding lookup costs nothing; the unembedding is a D x vocab product and counts.
* Training FLOPs = 3 x forward (backward = 2 x forward).
* N ("non-embedding parameters") excludes the embedding and the unembedding matrices
  (Kaplan et al.); the 7B presets' published counts use the same rule.

Per token, per layer (D = d_model, F = MLP hidden, T = sequence length):

  attention, N query heads, G kv heads, head dim A, window W (None for full attention):
      projections  2*D*A*(2N + 2G)               q, k, v, o
      scores       2*N*A*L  and  values 2*N*A*L,  L = min(T/2, W)   (causal average length)
  Gated DeltaNet, H key heads of dim K, HV value heads of dim V, conv width W, chunk C:
      projections  2*D*(2*H*K + 3*HV*V + 2*HV)   q, k, v, g, o, a, b
      conv         2*W*(2*H*K + HV*V)
      chunk algorithm, per value head:  6CK + 4CV + 6KV + (2/3)C^2
          A = (beta k) k^T within the chunk      2CK
          (I + A)^-1 by forward substitution      (2/3)C^2
          w = T (beta k exp(G)), u = T (beta v)   2CK + 2CV
          v' = u - w S,  o_inter = (q exp(G)) S   4KV
          q k^T and (masked) x v' intra-chunk     2CK + 2CV
          S += (k decay)^T v'                     2KV
      (K = V = 128, C = 64 gives about 183k FLOPs per token-head, the figure in docs/environment.md.)
  SwiGLU MLP:  6*D*F
  unembedding: 2*D*vocab
"""

from __future__ import annotations

import dataclasses

from hybrid_jax.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class ParamCount:
    total: int
    embedding: int  # embedding + unembedding matrices

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding


def _attention_block_params(cfg: ModelConfig) -> int:
    D, N, G, A = cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.attn_head_dim
    proj = D * N * A * 2 + D * G * A * 2
    qk_norm = (N * A + G * A) if cfg.qk_norm else 0
    return proj + qk_norm + 3 * D * cfg.mlp_hidden + 2 * D


def _gdn_block_params(cfg: ModelConfig) -> int:
    D, H, HV = cfg.d_model, cfg.gdn_k_heads, cfg.gdn_v_heads
    K, V, W = cfg.gdn_k_dim, cfg.gdn_v_dim, cfg.gdn_conv_width
    proj = D * (2 * H * K + 2 * HV * V + 2 * HV) + HV * V * D
    conv = W * (2 * H * K + HV * V)
    scalars = 2 * HV + V  # A_log, dt_bias, output-norm scale
    return proj + conv + scalars + 3 * D * cfg.mlp_hidden + 2 * D


def param_count(cfg: ModelConfig) -> ParamCount:
    blocks = sum(_gdn_block_params(cfg) if t == "G" else _attention_block_params(cfg)
                 for t in cfg.layer_types)
    n_emb_mats = 1 if cfg.tie_embeddings else 2
    embedding = n_emb_mats * cfg.vocab_size * cfg.d_model
    return ParamCount(total=blocks + cfg.d_model + embedding, embedding=embedding)


def attention_flops_per_token(cfg: ModelConfig, seq_len: int, window: int | None) -> float:
    D, N, G, A = cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.attn_head_dim
    L = seq_len / 2 if window is None else min(seq_len / 2, window)
    return 2 * D * A * (2 * N + 2 * G) + 4 * N * A * L


def gdn_flops_per_token(cfg: ModelConfig) -> float:
    D, H, HV = cfg.d_model, cfg.gdn_k_heads, cfg.gdn_v_heads
    K, V, W, C = cfg.gdn_k_dim, cfg.gdn_v_dim, cfg.gdn_conv_width, cfg.gdn_chunk_size
    proj = 2 * D * (2 * H * K + 3 * HV * V + 2 * HV)
    conv = 2 * W * (2 * H * K + HV * V)
    chunk = HV * (6 * C * K + 4 * C * V + 6 * K * V + (2 / 3) * C * C)
    return proj + conv + chunk


def forward_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Forward FLOPs per token, averaged over a sequence of length seq_len."""
    if seq_len <= 0:
        raise ValueError(f"seq_len must be > 0, got {seq_len}")
    mlp = 6 * cfg.d_model * cfg.mlp_hidden
    total = 0.0
    for t in cfg.layer_types:
        if t == "G":
            total += gdn_flops_per_token(cfg)
        else:
            window = cfg.sliding_window if t == "S" else None
            total += attention_flops_per_token(cfg, seq_len, window)
        total += mlp
    return total + 2 * cfg.d_model * cfg.vocab_size


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    return 3 * forward_flops_per_token(cfg, seq_len)


def train_flops(cfg: ModelConfig, seq_len: int, tokens: float) -> float:
    """Training FLOPs C for `tokens` tokens at sequence length seq_len."""
    return train_flops_per_token(cfg, seq_len) * tokens
