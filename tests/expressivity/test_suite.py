"""Expressivity suite: model matching, schedule, suite selection errors, and the `smoke` suite
run end to end through the CLI (controls, results JSON, Markdown table, heatmap), then resumed."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from hybrid_jax.expressivity import cli
from hybrid_jax.expressivity.models import MODELS, ModelShape, model_config, param_counts
from hybrid_jax.expressivity.suite import SUITES, TaskSpec, get_suite
from hybrid_jax.expressivity.train import TrainConfig, lr_at
from hybrid_jax.flops import param_count
from hybrid_jax.models.lm import build_model


@pytest.mark.parametrize("suite", ["ci", "full"])
def test_param_counts_matched_within_10_percent(suite):
    counts = param_counts(SUITES[suite].shape)
    ref = counts["transformer"]
    assert all(abs(c - ref) / ref < 0.10 for c in counts.values()), counts


def test_models_are_the_four_required_and_counted_right():
    shape = ModelShape(d_model=16, n_heads=2, n_layers=2, hybrid_pattern="GA")
    cfgs = {m: model_config(m, shape) for m in MODELS}
    assert cfgs["transformer"].layer_types == ("A", "A")
    assert cfgs["gdn01"].layer_types == ("G", "G") and not cfgs["gdn01"].gdn_allow_neg_eigval
    assert cfgs["gdn02"].layer_types == ("G", "G") and cfgs["gdn02"].gdn_allow_neg_eigval
    assert cfgs["hybrid"].layer_types == ("G", "A") and cfgs["hybrid"].gdn_allow_neg_eigval
    for m in ("transformer", "hybrid"):
        _, params = nnx.split(nnx.eval_shape(lambda: build_model(cfgs[m], seed=0)))
        n = sum(x.size for x in jax.tree.leaves(params))
        assert n == param_count(cfgs[m]).total, m


def test_bad_model_shape_and_names():
    with pytest.raises(ValueError, match="n_layers must be in"):
        ModelShape(n_layers=6, hybrid_pattern="GGGGGA")
    with pytest.raises(ValueError, match="hybrid_pattern"):
        ModelShape(n_layers=2, hybrid_pattern="GG")
    with pytest.raises(ValueError, match="unknown model 'hybird'.*'hybrid'"):
        model_config("hybird", ModelShape())
    with pytest.raises(ValueError, match="unknown suite 'fulll'.*'full'"):
        get_suite("fulll")
    with pytest.raises(ValueError, match="task 's7' is not in suite 'ci'"):
        get_suite("ci").select(tasks=["s7"])
    with pytest.raises(ValueError, match="unknown task"):
        TaskSpec("nope", 4)
    with pytest.raises(ValueError, match="train_length must be a positive integer"):
        TaskSpec("parity", 0)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        TrainConfig(steps=0)


def test_lr_schedule_warmup_then_cosine_to_ten_percent():
    lrs = np.array([float(lr_at(s, 100.0, 1.0, 0.1)) for s in range(100)])
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert np.all(np.diff(lrs[10:]) <= 1e-7) and lrs[-1] == pytest.approx(0.1, abs=1e-3)


def test_cli_errors_are_clear(capsys, tmp_path):
    assert cli.main(["run", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown suite 'nope'" in capsys.readouterr().err
    assert cli.main(["run", "ci", "--tasks", "s5", "--out", str(tmp_path)]) == 2
    assert "task 's5' is not in suite 'ci'" in capsys.readouterr().err
    assert cli.main(["list"]) == 0
    assert "state_recall" in capsys.readouterr().out


@pytest.mark.slow
def test_smoke_suite_end_to_end_and_resume(tmp_path, capsys):
    from hybrid_jax.expressivity import train

    out = tmp_path / "smoke"
    compiled = (train._train_step._cache_size(), train._eval_step._cache_size())
    assert cli.main(["run", "smoke", "--out", str(out)]) == 0
    # One training and one evaluation program per model, shared by both tasks (padding); the
    # parity control (gdn02 at the suite's shape) reuses gdn02's training program and adds one
    # evaluation program (it is evaluated at L only).
    assert train._train_step._cache_size() - compiled[0] == 2
    assert train._eval_step._cache_size() - compiled[1] == 3
    doc = json.loads((out / "results.json").read_text())
    assert doc["environment"]["git"].get("sha") is not None or "error" in doc["environment"]["git"]
    assert doc["environment"]["devices"]["backend"] == "cpu"
    assert set(doc["environment"]["implementations"]["gdn02"]) == {"gdn", "gdn_precision",
                                                                  "gdn_norm", "gdn_conv"}
    assert [(c["cell"]["task"], c["cell"]["model"]) for c in doc["cells"]] == [
        ("parity", "transformer"), ("parity", "gdn02"), ("s3", "transformer"), ("s3", "gdn02")]
    for c in doc["cells"]:
        L = c["cell"]["train_length"]
        assert set(c["summary"]) == {str(L), str(2 * L)} and c["chosen_lr"] == 1e-2
        assert all(0.0 <= s["min"] <= s["mean"] <= s["max"] <= 1.0 for s in c["summary"].values())
    # Three steps teach nothing: the control fails, and s3 has none, so neither task's numbers
    # are reported as results.
    assert [(c["task"], c["passed"]) for c in doc["controls"]] == [("parity", False)]
    assert doc["unverified_tasks"] == ["parity", "s3"]
    table = (out / "results.md").read_text()
    assert "| parity (L=4) | gdn02 |" in table and "1L" in table and "2L" in table
    assert "| parity | gdn02 (2 layers, d_model 16) | 4 |" in table
    assert "pipeline unverified" in table.split("| s3 (L=3) | gdn02 |")[1].splitlines()[0]
    assert "| s3 (L=3) | *constant guess* |" in table and set(doc["baselines"]) == {"parity", "s3"}
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    # Rerun: every cell is skipped, the outputs are rewritten identically.
    assert cli.main(["run", "smoke", "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("[skip]") == 5
    assert json.loads((out / "results.json").read_text())["cells"] == doc["cells"]
    # A cell written under another config is refused, not mixed in.
    cell = out / "cells" / "parity__gdn02.json"
    cell.write_text(cell.read_text().replace(doc["cells"][1]["cell_hash"], "0" * 16))
    with pytest.raises(RuntimeError, match="different cell config"):
        cli.main(["run", "smoke", "--out", str(out)])


def test_right_padding_changes_no_output_of_a_causal_model():
    """The suite pads every batch to one T per suite; for the hybrid (GDN and attention) the
    logits at real positions must not depend on the padding after them."""
    from hybrid_jax.expressivity.tasks import generate, get_task
    from hybrid_jax.expressivity.train import pad_batch

    cfg = model_config("hybrid", ModelShape(d_model=16, n_heads=2, n_layers=2, hybrid_pattern="GA"))
    model = build_model(cfg, seed=3)
    b = generate(get_task("s3"), 0, 7, batch=2)
    padded = pad_batch(b, 13)
    assert padded.inputs.shape == (2, 13) and not padded.mask[:, 7:].any()
    np.testing.assert_allclose(np.asarray(model(padded.inputs))[:, :7], np.asarray(model(b.inputs)),
                               rtol=1e-5, atol=1e-5)


def test_padding_lengths_are_fixed_by_the_suite_not_the_selection():
    ci = get_suite("ci")
    assert (ci.train_tokens, ci.eval_tokens) == (18, 72)  # mqar: 3 x 6 pairs, 3 x 24 pairs
    sub = ci.select(tasks=["parity"], n_seeds=1)
    assert (sub.train_tokens, sub.eval_tokens, sub.n_seeds) == (18, 72, 1)
    with pytest.raises(ValueError, match="train_tokens=4 is shorter"):
        type(ci)(**{**ci.__dict__, "train_tokens": 4})
