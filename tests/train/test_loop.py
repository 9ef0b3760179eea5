"""The loop in-process on one CPU device: every family learns; NaN guard; corrupt checkpoints."""

import json
import os

import numpy as np
import pytest

from hybrid_jax.train import NonFiniteError, train
from hybrid_jax.train.metrics import read_metrics

from tests.helpers.training import (NanAtStep, build_tiny_store, cache_dir, child_train,
                                    final_params, jax_cache_env, tiny_config, tiny_overrides,
                                    train_losses)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_tiny_store(tmp_path_factory.mktemp("data") / "store")


@pytest.mark.parametrize("family", [
    "transformer", pytest.param("hybrid", marks=pytest.mark.slow),
    pytest.param("gdn", marks=pytest.mark.slow)])
def test_each_family_learns_in_30_steps(store, tmp_path, family):
    cfg = tiny_config(store, tmp_path / "run", family, **{
        "train.tokens": 30 * 256, "log.tensorboard": True, "eval.interval_tokens": 12 * 256})
    summary = train(cfg, verbose=False)
    losses = train_losses(tmp_path / "run")
    assert sorted(losses) == list(range(1, 31)) and summary["status"] == "completed"
    first, last5 = losses[1], np.mean([losses[s] for s in range(26, 31)])
    assert first > 5.0 and last5 < first - 1.0, losses
    # one scaling point (the end of the cosine), evaluated, recorded, checkpointed
    (point,) = summary["scaling_points"]
    assert point["step"] == 30 and point["tokens"] == 30 * 256
    assert 0 < point["eval"]["val"]["bpb"] < 8 and point["eval"]["val"]["tokens"] == 512
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 30
    meta = json.loads((tmp_path / "run" / "run_meta.json").read_text())
    assert meta["devices"]["backend"] == "cpu" and meta["implementations"]
    if family != "transformer":
        assert meta["implementations"]["gdn"] == "chunked"
        # the precision that ran: the default "auto" is "highest" on a CPU
        assert cfg.model.gdn_precision == "auto"
        assert meta["implementations"]["gdn_precision"] == "highest"
    assert os.listdir(tmp_path / "run" / "tensorboard")
    record = read_metrics(tmp_path / "run")[-1]
    assert record["mfu"] is None and record["tokens_per_s"] > 0
    evals = read_metrics(tmp_path / "run", "eval")
    assert [(e["step"], e["scaling_point"]) for e in evals] == [(12, False), (24, False), (30, True)]
    assert evals[-1]["sets"] == point["eval"]


def test_nan_stops_the_run_and_nothing_after_is_saved(store, tmp_path):
    cfg = tiny_config(store, tmp_path / "run", **{"train.tokens": 8 * 256,
                                                  "checkpoint.interval_steps": 2})
    with pytest.raises(NonFiniteError, match=r"non-finite loss at step 5 .*step 4\) is kept"):
        train(cfg, source=NanAtStep(cfg, 5), verbose=False)
    steps = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert steps == [2, 4]
    assert max(r["step"] for r in read_metrics(tmp_path / "run")) == 4
    assert not (tmp_path / "run" / "summary.json").exists()


# The tests below train the same 8-step run in child processes that share a compilation cache,
# so it compiles once.
EIGHT_STEPS = {"train.tokens": 8 * 256, "checkpoint.interval_steps": 4}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return jax_cache_env(cache_dir(tmp_path_factory))


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(store, cache, tmp_path):
    run = tmp_path / "run"
    child_train([("transformer", tiny_overrides(store, run, **EIGHT_STEPS), None)], env=cache)
    good_params, good_losses = final_params(run), train_losses(run)
    data_files = sorted((run / "checkpoints" / "8" / "state").rglob("d/*"),
                        key=lambda p: p.stat().st_size)
    blob = bytearray(data_files[-1].read_bytes())
    blob[len(blob) // 2:] = bytes(len(blob) - len(blob) // 2)  # zero the second half
    data_files[-1].write_bytes(bytes(blob))

    (summary,), stderr = child_train(
        [("transformer", tiny_overrides(store, run, **EIGHT_STEPS), None)], env=cache,
        with_stderr=True)
    assert "CheckpointWarning: checkpoint at step 8" in stderr
    assert summary["status"] == "completed" and summary["steps"] == 8
    assert [p.name.split("-")[0] for p in (run / "corrupt_checkpoints").iterdir()] == ["8"]
    assert json.loads((run / "run_meta.json").read_text())["resumed_from_step"] == 4
    assert train_losses(run) == good_losses  # steps 5..8 retrained exactly as before
    again = final_params(run)
    assert all(np.array_equal(again[k], good_params[k]) for k in good_params)


def test_completed_run_is_not_retrained_and_a_changed_config_is_refused(store, cache, tmp_path):
    run = tmp_path / "run"
    first, second = child_train([("transformer", tiny_overrides(store, run, **EIGHT_STEPS), None)]
                                * 2, env=cache)
    assert second["status"] == "completed" and second["steps"] == 8
    assert second["scaling_points"] == first["scaling_points"]
    assert sorted(train_losses(run)) == list(range(1, 9))

    from hybrid_jax.train import ConfigMismatchError

    with pytest.raises(ConfigMismatchError, match="config hash"):
        train(tiny_config(store, run, **{**EIGHT_STEPS, "optim.lr": 1e-4}), verbose=False)
