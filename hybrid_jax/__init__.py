"""hybrid-jax: Olmo Hybrid (Gated DeltaNet + attention) vs Olmo 3 transformer, in JAX.

Dimension letters used in tensor-name suffixes throughout the project (`x_BTD`, `q_BTHK`):

    B  batch                      T  sequence length (time)
    D  d_model                    F  MLP hidden size
    Y  vocabulary (`logits_BTY`)  L  layers
    N  attention query heads      G  attention key/value heads (GQA groups)
    A  attention head dim
    H  GDN query/key heads        HV GDN value heads
    K  GDN key dim per head       V  GDN value dim per head
    C  chunk length               W  conv width / sliding window

H, HV, K and V are fla's notation, which the gated-delta-rule kernels (kernels/gated_delta_rule)
use too: q, k are [B, T, H, K]; v is [B, T, HV, V]; g, beta are [B, T, HV]; the state is
[B, HV, K, V]. A suffix has one letter per dimension, so it writes value heads as H too (the
tensor says which heads): `v_BTHV` is [B, T, HV, V] and `g_BTH` is [B, T, HV]. The attention
kernels (kernels/attention) use N, G and A as above, and S for the key length; decoding caches
(hybrid_jax/generate) use S for a cache's positions and W for a sliding window's ring slots.
"""

__version__ = "0.1.0"
