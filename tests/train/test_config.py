"""Run config: validation naming fields, identity hash, example configs, and the refusals that
must come before anything compiles."""

from pathlib import Path

import pytest

from hybrid_jax.config import ConfigError
from hybrid_jax.overrides import OverrideError
from hybrid_jax.sharding import MeshError
from hybrid_jax.train.config import load_config
from hybrid_jax.train.loop import check_fits

from tests.helpers import REPO
BASE = ["train.tokens=5120"]


def cfg_with(*overrides):
    return load_config("transformer_tiny", BASE + list(overrides))


@pytest.mark.parametrize("override, field", [
    ("train.global_batch=0", "train.global_batch"),
    ("train.micro_batches=3", "train.micro_batches"),
    ("optim.b2=1.5", "optim.b2"),
    ("optim.lr=-1", "optim.lr"),
    ("optim.lr=.inf", "optim.lr"),
    ("schedule.kind=linear", "schedule.kind"),
    ("mesh.fsdp=0", "mesh.fsdp"),
    ("eval.interval_tokens=-5", "eval.interval_tokens"),
    ("log.progress=fancy", "log.progress"),
])
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        cfg_with(override)


def test_tokens_required_unless_wsds():
    with pytest.raises(ConfigError, match=r"train\.tokens: is required"):
        load_config("transformer_tiny", [])
    cfg = load_config("transformer_tiny", ["schedule.kind=wsds", "schedule.decay_tokens=[512,1024]"])
    assert cfg.total_tokens == 1024 and cfg.total_steps == 2
    with pytest.raises(ConfigError, match="last schedule.decay_tokens"):
        load_config("transformer_tiny", ["schedule.kind=wsds", "schedule.decay_tokens=[512,1024]",
                                         "train.tokens=2048"])


def test_identity_ignores_operational_fields():
    a = cfg_with()
    same = [cfg_with("mesh.data=2", "mesh.fsdp=4", "checkpoint.interval_steps=7",
                     "train.run_dir=/tmp/x", "train.micro_batches=2", "log.tensorboard=false",
                     "distributed.coordinator=h:1", "distributed.num_processes=2",
                     "distributed.process_id=0")]
    different = [cfg_with("optim.lr=1e-3"), cfg_with("model.d_model=128"),
                 cfg_with("data.seed=1"), cfg_with("train.seed=1"), cfg_with("eval.max_tokens=100")]
    assert all(c.config_hash() == a.config_hash() for c in same)
    assert all(c.config_hash() != a.config_hash() for c in different)


def test_late_fields_keep_old_run_ids_at_their_default():
    from hybrid_jax.train.config import LATE_FIELDS

    # gdn_precision: "highest" is what every run computed before the field existed; today's
    # default "auto" is part of a GDN model's id; a model without GDN layers ignores it
    hybrid = [load_config("hybrid_tiny", BASE + [f"model.gdn_precision={p}"])
              for p in ("highest", "default", "auto")]
    assert "gdn_precision" not in hybrid[0].identity()["model"]
    assert len({c.config_hash() for c in hybrid}) == 3
    assert load_config("hybrid_tiny", BASE).model.gdn_precision == "auto"
    assert cfg_with().config_hash() == cfg_with("model.gdn_precision=default").config_hash()
    a = cfg_with()
    assert LATE_FIELDS == {"model.gdn_precision": "highest", "model.unembed_grad_dtype": "float32",
                           "model.gdn_norm_eps": 1e-6, "model.rope_layers": "AS",
                           "model.layers": "", "train.init_from": None, "data.mix": {},
                           "data.stores": {}}
    assert not {"mix", "stores"} & set(a.identity()["data"])  # a one-store run keeps its id
    # The GDN norm eps was the model's norm_eps (1e-6) before it had its own field: runs at that
    # value keep their ids, the new default (1e-5) is a new model, and a model without GDN
    # layers is not changed by it at all.
    hybrid = load_config("hybrid_tiny", BASE)
    old_eps = load_config("hybrid_tiny", BASE + ["model.gdn_norm_eps=1e-6"])
    assert "gdn_norm_eps" not in old_eps.identity()["model"]
    assert hybrid.identity()["model"]["gdn_norm_eps"] == 1e-5
    assert hybrid.config_hash() != old_eps.config_hash()
    transformer = cfg_with()
    assert "gdn_norm_eps" not in transformer.identity()["model"]
    assert not {"rope_layers", "layers"} & set(transformer.identity()["model"])


def test_removed_fields_keep_old_run_ids_and_are_unknown_keys():
    """A field taken out of the config stays in the identity at the value every published run
    had, so no run id changes; setting it is an error like any unknown key."""
    from hybrid_jax.train.config import REMOVED_FIELDS

    assert REMOVED_FIELDS == {"train.debug_nan_step": None}
    a = cfg_with()
    assert a.identity()["train"]["debug_nan_step"] is None
    assert "debug_nan_step" not in a.to_dict()["train"]
    with pytest.raises(OverrideError, match=r"unknown override key .train\.debug_nan_step"):
        cfg_with("train.debug_nan_step=3")


def test_unembed_grad_dtype_is_in_the_identity_only_where_it_changes_the_run():
    """bf16 models trained before the field existed used plain autodiff ("float32"): that value
    keeps their ids, and the new default ("compute") changes them. fp32 models are unaffected
    by the field, so it never enters their identity."""
    bf16 = lambda *o: cfg_with("model.compute_dtype=bfloat16", *o)
    assert "unembed_grad_dtype" not in bf16("model.unembed_grad_dtype=float32").identity()["model"]
    assert bf16().identity()["model"]["unembed_grad_dtype"] == "compute"
    assert bf16().config_hash() != bf16("model.unembed_grad_dtype=float32").config_hash()
    f32 = lambda *o: cfg_with("model.compute_dtype=float32", *o)
    assert f32().config_hash() == f32("model.unembed_grad_dtype=float32").config_hash()
    assert "unembed_grad_dtype" not in f32().identity()["model"]


@pytest.mark.parametrize("ladder", ["cpu-demo", "gpu-small"])
def test_committed_results_keep_their_run_ids(ladder):
    """The run ids and config hashes in results/LADDER/results.jsonl are the ladder's today:
    adding or removing a config field must not silently orphan published results (see
    LATE_FIELDS and REMOVED_FIELDS)."""
    import json

    from hybrid_jax.sweep.ladder import load_ladder

    rows = [json.loads(line) for line in (REPO / f"results/{ladder}/results.jsonl").open()]
    runs, _ = load_ladder(ladder).expand(f"sweeps/{ladder}")
    assert ({(r["run_id"], r["config_hash"]) for r in rows}
            == {(r.run_id, r.config.config_hash()) for r in runs})


def test_run_dir_defaults_to_name_and_hash():
    cfg = cfg_with("train.name=demo")
    assert cfg.run_dir == Path("runs") / f"demo-{cfg.config_hash()[:8]}"
    assert cfg_with("train.run_dir=/tmp/here").run_dir == Path("/tmp/here")


@pytest.mark.parametrize("path", sorted((REPO / "experiments" / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_example_configs_load(path):
    cfg = load_config(path)
    assert cfg.total_steps > 0 and all(cfg.data.store_paths)


def test_yaml_model_preset_with_fields(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: {preset: gdn_tiny, d_model: 128}\ntrain: {tokens: 1024}\n")
    cfg = load_config(p, ["model.n_layers=2"])
    assert (cfg.model.family, cfg.model.d_model, cfg.model.n_layers) == ("gdn", 128, 2)


@pytest.mark.parametrize("text, message", [
    ("train:\n  tokens: [1, 2\nmodel: x\n",
     "c.yaml: invalid YAML: .*expected ',' or ']', but got ':' at line 3, column 6$"),
    ("model: {d_model: 1\n", "c.yaml: invalid YAML: .* at line 2, column 1$"),
    ("- train\n- model\n", "c.yaml: the top level must be a mapping of sections, got a list$"),
    ("hybrid_tiny\n", "c.yaml: the top level must be a mapping of sections, got a string$"),
])
def test_malformed_config_file_is_one_line_naming_it(tmp_path, text, message):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(tmp_path / "c.yaml")
    assert "\n" not in str(err.value)


def test_config_directory_is_refused_as_one(tmp_path):
    with pytest.raises(ConfigError, match="is a directory, not a config file"):
        load_config(tmp_path)


def test_train_cli_refuses_a_malformed_config_in_one_line(tmp_path, capsys):
    from hybrid_jax.train.cli import main

    (tmp_path / "c.yaml").write_text("train: [1,\n")
    assert main(["--config", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "c.yaml: invalid YAML" in err and "Traceback" not in err


@pytest.mark.parametrize("overrides, devices, message", [
    (["mesh.data=4"], 8, "has 4 devices, but 8 are available"),
    (["mesh.data=3", "mesh.fsdp=-1"], 8, "do not divide the 8 devices"),
    (["train.global_batch=12"], 8, "12 sequences per micro-batch"),
    (["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2", "train.micro_batches=4"], 8,
     "2 sequences per micro-batch"),
    (["eval.batch_size=6"], 4, "eval batch size 6"),
])
def test_device_fit_refusals(overrides, devices, message):
    with pytest.raises(MeshError, match=message):
        check_fits(cfg_with(*overrides), devices)


def test_refusal_happens_before_compiling(monkeypatch, tmp_path):
    """train() refuses a mesh that does not fit before jit is ever called or a dir is made."""
    import jax

    from hybrid_jax.train import loop

    def no_jit(*a, **k):
        raise AssertionError("jit was called before the config was refused")

    monkeypatch.setattr(loop.jax, "jit", no_jit)
    cfg = cfg_with(f"train.run_dir={tmp_path / 'run'}", f"mesh.data={jax.device_count() + 1}",
                   "data.store=/nonexistent")
    with pytest.raises(MeshError):
        loop.train(cfg, verbose=False)
    assert not (tmp_path / "run").exists()
