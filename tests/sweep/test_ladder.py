"""Ladder expansion: run ids from config hashes, overrides, invalid sizes, and `plan` on the
three shipped ladders (no training)."""

import json

import pytest
import yaml

from hybrid_jax.sweep import cli
from hybrid_jax.sweep.ladder import LadderError, load_ladder, shipped_ladders
from hybrid_jax.overrides import OverrideError

from tests.helpers.sweeps import micro_ladder

SIZES = {"a": {"d_model": 16, "n_layers": 2, "n_heads": 2, "mlp_hidden": 32},
         "b": {"d_model": 24, "n_layers": 2, "n_heads": 2, "mlp_hidden": 48},
         "c": {"d_model": 32, "n_layers": 4, "n_heads": 2, "mlp_hidden": 64}}


def ids(path, root="r"):
    runs, invalid = load_ladder(path).expand(root)
    assert not invalid
    return {(r.family, r.size): r.run_id for r in runs}


def test_run_ids_are_stable_under_reordering(tmp_path):
    a = micro_ladder(tmp_path / "a.yaml", "store", sizes=SIZES, families=["transformer", "hybrid"])
    b = micro_ladder(tmp_path / "b.yaml", "store", sizes=dict(reversed(SIZES.items())),
                     families=["hybrid", "transformer"])
    first, second = ids(a), ids(b)
    assert first == second and len(set(first.values())) == 6
    assert ids(a, root="elsewhere") == first  # the root is not part of a run's identity
    lad = load_ladder(a)
    runs, _ = lad.expand("r")
    assert all(r.run_dir.parent.as_posix() == "r/runs" for r in runs)
    assert all(r.run_id.startswith(f"{r.family}-{r.size}-") for r in runs)
    seeds = {r.config.train.seed for r in runs}
    assert len(seeds) == 6 and seeds == {r.config.train.seed for r in load_ladder(b).expand("x")[0]}


def test_run_ids_change_with_what_a_run_computes(tmp_path):
    base = ids(micro_ladder(tmp_path / "base.yaml", "store", sizes=SIZES))
    wider = dict(SIZES, b={**SIZES["b"], "mlp_hidden": 64})
    changed = ids(micro_ladder(tmp_path / "w.yaml", "store", sizes=wider))
    assert changed[("transformer", "b")] != base[("transformer", "b")]
    assert changed[("transformer", "a")] == base[("transformer", "a")]
    evals = ids(micro_ladder(tmp_path / "e.yaml", "store", sizes=SIZES,
                             overrides=["eval.max_tokens=512"]))
    assert not set(evals.values()) & set(base.values())
    lr = ids(micro_ladder(tmp_path / "l.yaml", "store", sizes=SIZES, recipe={"lr": 0.004,
                                                                           "batch_tokens": 256}))
    assert not set(lr.values()) & set(base.values())
    # checkpointing and logging do not change what is computed: same ids
    ops = ids(micro_ladder(tmp_path / "o.yaml", "store", sizes=SIZES,
                           overrides=["checkpoint.interval_steps=7", "log.log_every_steps=3"]))
    assert ops == base


def test_recipe_and_overrides_reach_the_run_config(tmp_path):
    sizes = {**SIZES, "c": {**SIZES["c"], "recipe": {"lr": 0.01},
                            "overrides": ["optim.clip_norm=0.5", "model.mlp_hidden=96"]}}
    lad = load_ladder(micro_ladder(tmp_path / "l.yaml", "store", sizes=sizes, ratios=(2, 4, 8)))
    runs = {r.size: r for r in lad.expand("root")[0]}
    c = runs["c"].config
    assert c.optim.lr == 0.01 and c.optim.clip_norm == 0.5 and c.model.mlp_hidden == 96
    assert runs["a"].config.optim.lr == 0.003 and runs["a"].config.optim.clip_norm == 1.0
    assert c.schedule.kind == "wsds" and len(c.schedule.decay_tokens) == 3
    assert c.train.global_batch == 8 and c.train.seq_len == 32  # batch_tokens 256 / 32
    assert c.schedule.warmup_tokens == runs["c"].n_params  # warmup N tokens
    assert c.model.sliding_window == 8 and c.model.vocab_size == 264
    assert runs["c"].n_params != runs["b"].n_params


def test_an_invalid_size_is_reported_and_the_rest_expand(tmp_path):
    sizes = {**SIZES, "bad": {"d_model": 16, "n_layers": 2, "n_heads": 3, "mlp_hidden": 32}}
    runs, invalid = load_ladder(micro_ladder(tmp_path / "l.yaml", "s", sizes=sizes)).expand("r")
    assert [r.size for r in runs] == ["a", "b", "c"]
    assert [(i.size, "n_heads" in i.error) for i in invalid] == [("bad", True)]


def test_only_filters(tmp_path):
    lad = load_ladder(micro_ladder(tmp_path / "l.yaml", "s", sizes=SIZES,
                                   families=["transformer", "hybrid"]))
    assert {(r.family, r.size) for r in lad.expand("r", ["hybrid/*", "*/a"])[0]} == {
        ("hybrid", "a"), ("hybrid", "b"), ("hybrid", "c"), ("transformer", "a")}
    assert [r.size for r in lad.expand("r", ["transformer/b"])[0]] == ["b"]


def test_malformed_ladders_are_refused_with_the_key(tmp_path):
    path = micro_ladder(tmp_path / "l.yaml", "s")
    data = yaml.safe_load(path.read_text())
    for change, match in ((("decay_ratio", [1]), "decay_ratios"),
                          (("families", ["transformr"]), "transformr"),
                          (("run", {"optim": {"lr": 1.0}}), "recipe")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({**data, change[0]: change[1]}))
        with pytest.raises((LadderError, OverrideError), match=match):
            load_ladder(bad)
    with pytest.raises(FileNotFoundError, match="cpu-demo"):
        load_ladder("cpu-dmo")


@pytest.mark.parametrize("text, message", [
    ("families: [transformer\nsizes: {}\n", "l.yaml: invalid YAML: .* at line 2, column 6$"),
    ("- families\n- sizes\n", "l.yaml: the top level must be a mapping of sections, got a list$"),
])
def test_malformed_ladder_file_is_one_line_naming_it(tmp_path, capsys, text, message):
    (tmp_path / "l.yaml").write_text(text)
    with pytest.raises(LadderError, match=message):
        load_ladder(tmp_path / "l.yaml")
    assert cli.main(["plan", str(tmp_path / "l.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "l.yaml: " in err and "Traceback" not in err
    (tmp_path / "d.yaml").mkdir()
    with pytest.raises(LadderError, match="is a directory, not a ladder file"):
        load_ladder(tmp_path / "d.yaml")


@pytest.mark.parametrize("name", ["cpu-demo", "gpu-small", "paper"])
def test_plan_prints_every_run_of_the_shipped_ladders(name, capsys, tmp_path):
    assert name in shipped_ladders()
    root = tmp_path / "root"
    args = ["plan", name, "--root", str(root)]
    if name != "cpu-demo":
        args += ["--device-kind", "NVIDIA H100 80GB HBM3"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("run "))
    for column in ("N", "D/N", "D tokens", "steps", "FLOPs", "batch", "lr", "b2", "epochs", "est"):
        assert column in header.split() or column in header, column
    runs, invalid = load_ladder(name).expand(root)
    assert not invalid
    for run in runs:
        assert run.run_id in out
    assert "estimated time" in out and ("MFU" in out or "GFLOP/s" in out)
    assert not root.exists()  # planning trains nothing and writes nothing
    families = {r.family for r in runs}
    sizes = {r.size for r in runs}
    n_points = len(load_ladder(name).decay_ratios)
    if name == "cpu-demo":
        assert families >= {"transformer", "hybrid"} and len(sizes) >= 3 and n_points >= 3
    else:
        assert families == {"transformer", "hybrid", "gdn"} and len(sizes) >= 4
    if name == "paper":
        assert load_ladder(name).decay_ratios == (10, 20, 40, 80) and len(sizes) == 7
    if name == "gpu-small":
        assert load_ladder(name).decay_ratios == (2.5, 5, 10, 20)
        assert all(2e6 <= r.n_params <= 25e6 for r in runs)


def test_plan_for_slices_gives_each_worker_its_own_devices(capsys, tmp_path):
    """Four v5p slices of 32 chips: each run 32x one chip's FLOP/s; the wall is the larger of
    the longest run and the total over the four."""
    root = str(tmp_path / "root")

    def plan(*args):
        assert cli.main(["plan", "paper", "--root", root, "--json", *args]) == 0
        return json.loads(capsys.readouterr().out)

    v5p = ["--device-kind", "TPU v5p"]
    sliced = plan(*v5p, "--parallel", "4", "--devices-per-run", "32")
    one = plan(*v5p, "--parallel", "1")
    assert (sliced["workers"], sliced["devices_per_run"]) == (4, 32)
    for a, b in zip(sliced["runs"], one["runs"]):
        assert a["flops_per_s"] == pytest.approx(32 * b["flops_per_s"])
    assert cli.main(["plan", "paper", "--root", root, "--devices-per-run", "8"]) == 2
    assert "--devices-per-run needs --device-kind" in capsys.readouterr().err
    # the same cluster named as slices: v5p:4x4x2 is 32 chips; device-hours = run time x 32
    named = plan("--slices", "4", "--slice", "v5p:4x4x2")
    assert named["runs"] == sliced["runs"] and named["device_kind"] == "TPU v5p"
    assert named["device_hours"] == pytest.approx(
        sum(r["est_s"] for r in sliced["runs"]) * 32 / 3600)
    # GPUs: 16 in all, 8 a run, at a given MFU; bad combinations are one line each
    gpus = ["--gpus", "16", "--gpus-per-run", "8", "--device-kind", "NVIDIA H100 80GB HBM3"]
    at40, at20 = plan(*gpus, "--mfu", "0.4"), plan(*gpus, "--mfu", "0.2")
    assert (at40["workers"], at40["devices_per_run"]) == (2, 8)
    for a, b in zip(at40["runs"], at20["runs"]):
        assert a["flops_per_s"] == pytest.approx(2 * b["flops_per_s"])
    for args, message in ((["--slices", "4"], "--slices and --slice go together"),
                          (["--slices", "2", "--slice", "v9:2x2"], "unknown TPU topology"),
                          (["--gpus", "6", "--gpus-per-run", "4", "--device-kind", "h100"],
                           "not a multiple of --gpus-per-run"),
                          (["--gpus", "8"], "--gpus needs --device-kind"),
                          (["--mfu", "1.5"], "--mfu must be a fraction in (0, 1]")):
        assert cli.main(["plan", "paper", "--root", root, *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_plan_mfu_is_validated_and_used_by_the_plan(tmp_path):
    from hybrid_jax.sweep.plan import assumed_speed

    lad = load_ladder(micro_ladder(tmp_path / "l.yaml", "s", plan_mfu={"transformer": 0.05}))
    assert lad.plan_mfu == {"transformer": 0.05}
    measured = assumed_speed("NVIDIA H200", lad.plan_mfu["transformer"])
    default = assumed_speed("NVIDIA H200")
    assert measured.flops_per_s == pytest.approx(default.flops_per_s / 4)
    assert "measured MFU 5.0%" in measured.source and "assumed MFU 20.0%" in default.source
    for bad in ({"hybrid": 0.1}, {"transformer": 0}, {"transformer": 1.5}, [0.1]):
        with pytest.raises(LadderError, match="plan_mfu"):
            load_ladder(micro_ladder(tmp_path / "b.yaml", "s", plan_mfu=bad))
