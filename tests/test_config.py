import pytest

from hybrid_jax.config import ConfigError, ModelConfig
from hybrid_jax.presets import PRESETS, get_preset


@pytest.mark.parametrize("kwargs, field", [
    (dict(d_model=100, n_heads=3), "n_heads"),
    (dict(sliding_window=0), "sliding_window"),
    (dict(sliding_window=-5), "sliding_window"),
    (dict(family="transfomer"), "family"),
    (dict(layer_pattern="SSXA"), "layer_pattern"),
    (dict(n_kv_heads=5), "n_kv_heads"),
    (dict(family="hybrid", gdn_n_heads=4, gdn_n_v_heads=6), "gdn_n_v_heads"),
    (dict(family="transformer", layer_pattern="GGGA"), "layer_pattern"),
    (dict(family="gdn", layer_pattern="GGA"), "layer_pattern"),
    (dict(family="hybrid", layer_pattern="AAAA"), "layer_pattern"),
    (dict(n_layers=0), "n_layers"),
    (dict(gdn_implementation="triton"), "gdn_implementation"),
    (dict(compute_dtype="fp8"), "compute_dtype"),
])
def test_invalid_configs_name_the_field(kwargs, field):
    base = dict(vocab_size=64, d_model=64, n_layers=4, n_heads=4, mlp_hidden=128)
    with pytest.raises(ConfigError, match=rf"ModelConfig\.{field}"):
        ModelConfig(**{**base, **kwargs})


def test_unknown_family_suggests_nearest():
    with pytest.raises(ConfigError, match="did you mean 'transformer'"):
        ModelConfig(family="transfomer")


def test_layer_patterns():
    t = ModelConfig(family="transformer", n_layers=8)
    assert "".join(t.layer_types) == "SSSASSSA"
    # Olmo 3: the last layer is full attention even when the tiling would make it a window.
    assert "".join(ModelConfig(family="transformer", n_layers=6).layer_types) == "SSSASA"
    h = ModelConfig(family="hybrid", n_layers=8)
    assert "".join(h.layer_types) == "GGGAGGGA"
    g = ModelConfig(family="gdn", n_layers=5)
    assert "".join(g.layer_types) == "GGGGG"
    one_to_one = ModelConfig(family="hybrid", n_layers=4, layer_pattern=["G", "A"])
    assert one_to_one.layer_pattern == "GA" and "".join(one_to_one.layer_types) == "GAGA"
    seven_to_one = ModelConfig(family="hybrid", n_layers=16, layer_pattern="GGGGGGGA")
    assert seven_to_one.layer_types.count("A") == 2


def test_derived_gdn_dims_follow_olmo_hybrid():
    cfg = get_preset("olmo_hybrid_7b")
    assert (cfg.gdn_k_heads, cfg.gdn_v_heads, cfg.gdn_k_dim, cfg.gdn_v_dim) == (30, 30, 96, 192)
    # The 0.75 * d_model / heads rule derives the same key dim when it is not given.
    assert cfg.replace(gdn_head_k_dim=None).gdn_k_dim == 96


def test_presets_exist_for_every_family_and_size():
    for size in ("60m", "100m", "190m", "370m", "600m", "760m", "1b", "tiny"):
        for family in ("transformer", "hybrid", "gdn"):
            cfg = PRESETS[f"{family}_{size}"]()
            assert cfg.family == family
            assert cfg.n_layers % 4 == 0


def test_preset_overrides_and_unknown_name():
    assert get_preset("hybrid_tiny", sliding_window=8).sliding_window == 8
    with pytest.raises(KeyError, match="hybrid_tiny"):
        get_preset("hybrid_tyni")


def test_gdn_implementation_names_are_the_kernels():
    from hybrid_jax.config import GDN_IMPLEMENTATIONS
    from kernels.gated_delta_rule import IMPLEMENTATIONS

    assert set(GDN_IMPLEMENTATIONS) == {"auto", *IMPLEMENTATIONS}
