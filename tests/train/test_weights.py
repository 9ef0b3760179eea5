"""A model's weights out of a run and back in: `hybrid-jax export` of a run directory, `hybrid-jax
import` into a model directory, loading it, and `train.init_from` starting a new run from it."""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tests.helpers.training import build_tiny_store, tiny_config

from hybrid_jax.hf.cli import export_main, import_main
from hybrid_jax.train.weights import ModelCheckpointError, load_model, load_params


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from hybrid_jax.train.loop import train

    root = tmp_path_factory.mktemp("model_ckpt")
    store = build_tiny_store(root / "store")
    cfg = tiny_config(store, root / "run", "hybrid", **{"train.tokens": 8 * 32 * 4,
                                                        "model.rope_layers": '""'})
    train(cfg, verbose=False)
    return root, cfg


def test_export_import_round_trip_through_the_cli(run, tmp_path, capsys):
    root, cfg = run
    assert export_main([str(root / "run"), "--out", str(tmp_path / "hf")]) == 0
    out = capsys.readouterr().out
    assert "'step': 4" in out and "tokenizer: not written" in out and "(byte)" in out
    hf_config = json.loads((tmp_path / "hf/config.json").read_text())
    assert hf_config["model_type"] == "olmo_hybrid" and hf_config["eos_token_id"] == 1
    assert import_main([str(tmp_path / "hf"), "--out", str(tmp_path / "model")]) == 0
    _, run_params, _ = load_params(root / "run")
    _, model_params, source = load_params(tmp_path / "model")
    assert source["model_type"] == "olmo_hybrid"
    for a, b in zip(jax.tree.leaves(run_params), jax.tree.leaves(model_params)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    model, _ = load_model(tmp_path / "model")
    tokens = jnp.arange(40).reshape(2, 20) % cfg.model.vocab_size
    run_model, _ = load_model(root / "run" / "checkpoints" / "4")
    assert np.array_equal(np.asarray(model(tokens)), np.asarray(run_model(tokens)))
    # refusals: exit 2, one line, nothing written or moved
    assert import_main([str(tmp_path / "hf"), "--out", str(tmp_path / "model")]) == 2
    assert export_main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "neither a run directory" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_corrupt_model_directory_is_refused(run, tmp_path):
    root, _ = run
    assert export_main([str(root / "run"), "--out", str(tmp_path / "hf")]) == 0
    assert import_main([str(tmp_path / "hf"), "--out", str(tmp_path / "model")]) == 0
    victim = max((p for p in (tmp_path / "model" / "state").rglob("*") if p.is_file()
                  and p.name != "checksums.json"), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(ModelCheckpointError, match="sha256|size"):
        load_params(tmp_path / "model")


def test_init_from_starts_from_those_weights_with_a_fresh_optimizer(run, tmp_path):
    from hybrid_jax.train.loop import _initial_state
    from hybrid_jax.train.program import build_program

    root, cfg = run
    shutil.copytree(root / "run", tmp_path / "src")
    new = cfg.replace(train=cfg.train.__class__(**{**cfg.train.__dict__,
                                                   "init_from": str(tmp_path / "src"),
                                                   "run_dir": str(tmp_path / "new")}))
    assert new.config_hash() != cfg.replace(train=cfg.train.__class__(
        **{**cfg.train.__dict__, "run_dir": str(tmp_path / "new")})).config_hash()
    prog = build_program(new, (1, 1, 1))
    state = _initial_state(new, prog, lambda *a: None)
    _, src, _ = load_params(tmp_path / "src")
    assert int(state["step"]) == 0
    for a, b in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(src)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(state["opt_state"])
               if x.ndim > 0)  # Adam moments start at zero
    other = new.replace(model=new.model.replace(gdn_norm_eps=1e-6))
    from hybrid_jax.train.weights import check_architecture
    with pytest.raises(ModelCheckpointError, match="gdn_norm_eps"):
        check_architecture(tmp_path / "src", None, other.model)
