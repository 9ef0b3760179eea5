import jax
import pytest
from flax import nnx

from hybrid_jax import flops
from hybrid_jax.config import ModelConfig
from hybrid_jax.models.lm import LM
from hybrid_jax.presets import get_preset


def _abstract_param_count(cfg: ModelConfig) -> int:
    abstract = nnx.eval_shape(lambda: LM(cfg, rngs=nnx.Rngs(0)))
    leaves = jax.tree.leaves(nnx.state(abstract, nnx.Param))
    return sum(int(x.size) for x in leaves)


def test_hand_count_small_hybrid():
    # One G layer and one A layer; every term written out by hand.
    cfg = ModelConfig(family="hybrid", vocab_size=10, d_model=8, n_layers=2, n_heads=2,
                      n_kv_heads=1, mlp_hidden=16, layer_pattern="GA", gdn_n_heads=2,
                      gdn_n_v_heads=4, gdn_head_k_dim=3, gdn_v_expand=2.0, gdn_conv_width=4,
                      gdn_chunk_size=4, sliding_window=2)
    D, F, V = 8, 16, 10
    # attention block: q 8x8, k 8x4, v 8x4, o 8x8, qk-norm 8 + 4, 2 block norms, MLP 3*8*16
    attn = 64 + 32 + 32 + 64 + 12 + 16 + 384
    # GDN block: H=2, K=3, HV=4, Vd=6. q,k 8x6 each; v,g 8x24 each; o 24x8; a,b 8x4 each;
    # conv 4*(6+6+24); A_log, dt_bias 4 each; output norm 6; block norms 16; MLP 384.
    gdn = 48 * 2 + 192 * 2 + 192 + 32 * 2 + 4 * 36 + 8 + 6 + 16 + 384
    emb = 2 * V * D
    pc = flops.param_count(cfg)
    assert pc.total == attn + gdn + D + emb
    assert pc.non_embedding == attn + gdn + D
    assert pc.total == _abstract_param_count(cfg)

    T = 6
    attn_fwd = 2 * 8 * 4 * (2 * 2 + 2 * 1) + 4 * 2 * 4 * (T / 2)   # full attention: L = T/2
    gdn_fwd = (2 * 8 * (2 * 6 + 3 * 24 + 2 * 4) + 2 * 4 * (6 + 6 + 24)
               + 4 * (6 * 4 * 3 + 4 * 4 * 6 + 6 * 3 * 6 + (2 / 3) * 16))
    expected = attn_fwd + gdn_fwd + 2 * 6 * D * F + 2 * D * V
    assert flops.forward_flops_per_token(cfg, T) == pytest.approx(expected, rel=1e-12)
    assert flops.train_flops(cfg, T, 1000) == pytest.approx(3 * expected * 1000, rel=1e-12)


def test_window_caps_attention_length():
    cfg = ModelConfig(family="transformer", vocab_size=10, d_model=8, n_layers=1, n_heads=2,
                      mlp_hidden=16)
    full = flops.attention_flops_per_token(cfg, 100, None)
    windowed = flops.attention_flops_per_token(cfg, 100, 10)
    proj = 2 * 8 * 4 * (2 * 2 + 2 * 2)
    assert full == proj + 4 * 8 * 50
    assert windowed == proj + 4 * 8 * 10
    assert flops.attention_flops_per_token(cfg, 10, 100) == proj + 4 * 8 * 5


def test_gdn_chunk_flops_match_design_anchor():
    # docs/environment.md: about 183k FLOPs per token-head for K = V = 128 at chunk 64.
    cfg = ModelConfig(family="gdn", vocab_size=10, d_model=128, n_layers=1, n_heads=1,
                      mlp_hidden=16, gdn_head_k_dim=128, gdn_v_expand=1.0, gdn_chunk_size=64)
    proj_and_conv = 2 * 128 * (2 * 128 + 3 * 128 + 2) + 2 * 4 * (3 * 128)
    per_head = flops.gdn_flops_per_token(cfg) - proj_and_conv
    assert per_head == pytest.approx(183_000, rel=0.01)


@pytest.mark.parametrize("name, total, non_emb", [
    ("olmo3_7b", 7.30e9, 6.48e9),
    ("olmo_hybrid_7b", 7.43e9, 6.66e9),
])
def test_7b_presets_param_counts(name, total, non_emb):
    cfg = get_preset(name)
    assert cfg.vocab_size == 100_352 and not cfg.tie_embeddings
    pc = flops.param_count(cfg)
    assert pc.total == pytest.approx(total, rel=0.005)
    assert pc.non_embedding == pytest.approx(non_emb, rel=0.005)
    assert _abstract_param_count(cfg) == pc.total  # jax.eval_shape: never materialised


@pytest.mark.parametrize("name", ["transformer_tiny", "hybrid_tiny", "gdn_tiny"])
@pytest.mark.parametrize("changes", [{}, dict(n_kv_heads=2), dict(tie_embeddings=True),
                                     dict(qk_norm=False)])
def test_param_count_matches_model(name, changes):
    cfg = get_preset(name, **changes)
    assert flops.param_count(cfg).total == _abstract_param_count(cfg)


def test_ladder_param_counts_match_models():
    for name in ("transformer_60m", "hybrid_190m", "gdn_1b"):
        cfg = get_preset(name)
        assert flops.param_count(cfg).total == _abstract_param_count(cfg)
