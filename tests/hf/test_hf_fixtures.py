"""Hugging Face interchange on CPU, without torch: transformers' own golden logits for small
random olmo3 / olmo_hybrid models (tests/hf/make_fixtures.py wrote them), export then import
for every family, the 7B presets against transformers' configs, and refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hybrid_jax.hf import export_hf, import_hf
from hybrid_jax.hf.config_map import HFConfigError, from_hf_config, to_hf_config
from hybrid_jax.hf.export import ExportError
from hybrid_jax.hf.importer import HFImportError
from hybrid_jax.models.lm import build_model
from hybrid_jax.presets import get_preset

FIXTURES = Path(__file__).parent / "fixtures"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "golden.npz").is_file())


def params_of(model) -> dict:
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def test_fixtures_are_small_and_cover_the_cases():
    assert CASES == ["olmo3_gqa_window", "olmo_hybrid_nope", "olmo_hybrid_rope_gva"]
    assert sum(f.stat().st_size for f in FIXTURES.rglob("*") if f.is_file()) < 2e6


@pytest.mark.parametrize("case", CASES)
def test_import_matches_transformers_logits(case):
    golden = np.load(FIXTURES / case / "golden.npz")
    cfg, model = import_hf(FIXTURES / case)
    assert cfg.compute_dtype == "float32"  # the fixtures are fp32 checkpoints
    logits = np.asarray(model(jnp.asarray(golden["input_ids"])))
    ref = golden["logits"]
    assert logits.shape == ref.shape
    assert np.linalg.norm(logits - ref) / np.linalg.norm(ref) < 1e-4
    assert np.abs(logits - ref).max() < 1e-4 * np.abs(ref).max() * 10


def test_fixture_configs_are_read_as_written():
    nope = from_hf_config(json.loads((FIXTURES / "olmo_hybrid_nope/config.json").read_text()))
    assert nope.layers == "GGGAGG" and nope.rope_layers == "" and nope.family == "hybrid"
    gva = from_hf_config(json.loads((FIXTURES / "olmo_hybrid_rope_gva/config.json").read_text()))
    assert (gva.gdn_k_heads, gva.gdn_v_heads, gva.kv_heads) == (2, 4, 2)
    assert gva.rope_layers == "AS" and gva.rope_theta == 1e4 and gva.gdn_norm_eps == 1e-5
    olmo3 = from_hf_config(json.loads((FIXTURES / "olmo3_gqa_window/config.json").read_text()))
    assert olmo3.layers == "SSSAS" and olmo3.sliding_window == 32  # no forced final layer


@pytest.mark.parametrize("family", ["transformer", "hybrid", "gdn"])
def test_export_then_import_is_bitwise(family, tmp_path):
    overrides = dict(gdn_chunk_size=8, n_kv_heads=2) if family != "gdn" else dict(gdn_n_v_heads=8)
    if family == "hybrid":
        overrides["rope_layers"] = ""
    cfg = get_preset(f"{family}_tiny", **overrides)
    model = build_model(cfg, seed=3)
    export_hf(model, cfg, tmp_path / "hf")
    cfg2, model2 = import_hf(tmp_path / "hf")
    assert cfg2.architecture() == cfg.architecture()
    assert (cfg2.gdn_chunk_size, cfg2.init_std) == (cfg.gdn_chunk_size, cfg.init_std)
    for a, b in zip(jax.tree.leaves(params_of(model)), jax.tree.leaves(params_of(model2))):
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
    tokens = jnp.arange(2 * 37).reshape(2, 37) % cfg.vocab_size
    assert np.array_equal(np.asarray(model(tokens)), np.asarray(model2(tokens)))


def test_reexported_fixture_is_the_same_checkpoint(tmp_path):
    """Our export of an imported transformers checkpoint imports back to the same weights
    (the GDN convs are written at their true sizes, unlike transformers 5.23's save)."""
    cfg, model = import_hf(FIXTURES / "olmo_hybrid_rope_gva")
    export_hf(model, cfg, tmp_path / "again")
    _, model2 = import_hf(tmp_path / "again")
    for a, b in zip(jax.tree.leaves(params_of(model)), jax.tree.leaves(params_of(model2))):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_bf16_export_imports_as_bf16_compute(tmp_path):
    cfg = get_preset("transformer_tiny")
    export_hf(build_model(cfg), cfg, tmp_path / "hf", dtype="bfloat16")
    assert json.loads((tmp_path / "hf/config.json").read_text())["dtype"] == "bfloat16"
    cfg2, model2 = import_hf(tmp_path / "hf")
    assert cfg2.compute_dtype == "bfloat16"
    assert import_hf(tmp_path / "hf", compute_dtype="float32")[0].compute_dtype == "float32"


def test_presets_equal_the_reference_configs():
    ref = json.loads((FIXTURES / "reference_configs.json").read_text())
    keys = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "layer_types", "tie_word_embeddings"]
    hybrid = to_hf_config(get_preset("olmo_hybrid_7b"))
    hf_hybrid = ref["OlmoHybridConfig"]
    gdn_keys = ["linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim",
                "linear_value_head_dim", "linear_conv_kernel_dim", "linear_allow_neg_eigval",
                "rms_norm_eps"]
    assert {k: hybrid[k] for k in keys + gdn_keys} == {k: hf_hybrid[k] for k in keys + gdn_keys}
    # The released checkpoint has no RoPE (rope_theta null); a default OlmoHybridConfig() fills
    # in RoPE at theta 1e4. olmo_hybrid_7b_rope is the RoPE variant, at Olmo 3's theta.
    assert hybrid["rope_parameters"]["rope_theta"] is None
    assert hf_hybrid["rope_parameters"]["rope_theta"] == 1e4
    assert to_hf_config(get_preset("olmo_hybrid_7b_rope"))["rope_parameters"]["rope_theta"] == 5e5
    olmo3 = to_hf_config(get_preset("olmo3_7b"))
    hf_olmo3 = ref["Olmo3Config(vocab_size=100352)"]
    assert {k: olmo3[k] for k in keys + ["sliding_window"]} == \
        {k: hf_olmo3[k] for k in keys + ["sliding_window"]}
    assert olmo3["rope_parameters"] == hf_olmo3["rope_parameters"]
    # Olmo3Config's default eps is 1e-5; OLMo-core's Olmo 3 (and our preset) use 1e-6, and a
    # released config.json carries its own value, which import reads.
    assert (olmo3["rms_norm_eps"], hf_olmo3["rms_norm_eps"]) == (1e-6, 1e-5)


def _hf_dir(tmp_path: Path, case: str = "olmo_hybrid_nope") -> Path:
    d = tmp_path / case
    shutil.copytree(FIXTURES / case, d)
    return d


def _edit_config(d: Path, **changes) -> None:
    doc = json.loads((d / "config.json").read_text())
    doc.update(changes)
    (d / "config.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("changes, match", [
    ({"model_type": "llama"}, "model_type='llama'"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ({"num_hidden_layers": 5}, "layer_types: 6 entries for 5 layers"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 8.0}},
     "only plain RoPE"),
    ({"intermediate_size": 48}, "mlp.gate_proj.weight has shape"),
])
def test_import_refuses_configs_it_cannot_hold(tmp_path, changes, match):
    d = _hf_dir(tmp_path)
    _edit_config(d, **changes)
    with pytest.raises(HFImportError, match=match):
        import_hf(d)


def test_import_refuses_missing_and_unknown_tensors(tmp_path):
    d = _hf_dir(tmp_path, "olmo3_gqa_window")
    _edit_config(d, num_hidden_layers=4, layer_types=["sliding_attention"] * 3 + ["full_attention"])
    with pytest.raises(HFImportError, match=r"tensor\(s\) this config has no place for.*layers\.4"):
        import_hf(d)
    _edit_config(d, num_hidden_layers=6, layer_types=["sliding_attention"] * 6)
    with pytest.raises(HFImportError, match="model.layers.5.self_attn.q_proj.weight is missing"):
        import_hf(d)
    (d / "model.safetensors").unlink()
    with pytest.raises(HFImportError, match="no model.safetensors"):
        import_hf(d)


def test_export_refuses_what_transformers_cannot_hold(tmp_path):
    sliding_hybrid = get_preset("hybrid_tiny", layer_pattern="GGSA")
    with pytest.raises(HFConfigError, match="no sliding-window attention layers"):
        export_hf(build_model(sliding_hybrid), sliding_hybrid, tmp_path / "a")
    eps = get_preset("hybrid_tiny", gdn_norm_eps=1e-6)
    with pytest.raises(HFConfigError, match="gdn_norm_eps=1e-06"):
        export_hf(build_model(eps), eps, tmp_path / "b")
    nope = get_preset("transformer_tiny", rope_layers="A")
    with pytest.raises(HFConfigError, match="olmo3 applies RoPE in every attention layer"):
        export_hf(build_model(nope), nope, tmp_path / "c")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("mine")
    cfg = get_preset("transformer_tiny")
    with pytest.raises(ExportError, match="not empty"):
        export_hf(build_model(cfg), cfg, tmp_path / "d")
    assert (tmp_path / "d" / "keep.txt").read_text() == "mine"
    assert not any(p.exists() for p in (tmp_path / "a", tmp_path / "b", tmp_path / "c"))
