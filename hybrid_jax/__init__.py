"""hybrid-jax: Olmo Hybrid (Gated DeltaNet + attention) vs Olmo 3 transformer, in JAX.

Dimension letters used in tensor-name suffixes throughout the project (`x_BTD`, `q_BTHK`):

    B  batch                     T  sequence length (time)
    D  d_model                   F  MLP hidden size
    V  vocabulary (in logits)    L  layers
    N  attention query heads     G  attention key/value heads (GQA groups)
    H  head dimension of attention, or GDN key heads in kernel signatures
    K  GDN key dim per head      E  GDN value dim per head ("V" in fla's kernel notation)
    C  chunk length              W  conv width / sliding window

In the gated-delta-rule kernels (kernels/gated_delta_rule) we keep fla's notation:
q, k are [B, T, H, K]; v is [B, T, HV, V]; g, beta are [B, T, HV]; the state is [B, HV, K, V].
"""

__version__ = "0.1.0"
