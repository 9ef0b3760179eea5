"""The `hybrid-jax train` command line: dry runs and refusals, in-process (nothing compiles)."""

import pytest

from hybrid_jax.distributed import DistributedConfig, detect
from hybrid_jax.train.cli import main


def test_dry_run_prints_the_resolved_config(capsys):
    assert main(["--config", "hybrid_tiny", "--dry-run", "train.tokens=5120",
                 "train.name=demo", "model.d_model=128"]) == 0
    out = capsys.readouterr().out
    assert '"d_model": 128' in out and "run_dir: runs/demo-" in out and "total_steps: 10" in out


@pytest.mark.parametrize("args, message", [
    (["optim.lrr=1"], "did you mean 'optim.lr'"),
    (["optim.lr=fast"], "optim.lr: expected a number"),
    (["train.micro_batches=3"], "train.micro_batches: 3 micro-batches do not divide"),
    (["mesh.data=3"], "but 1 are available"),  # the tests' process has one CPU device
])
def test_refusals_exit_2_with_the_reason(capsys, args, message):
    assert main(["--config", "transformer_tiny", "--dry-run", "train.tokens=5120", *args]) == 2
    assert message in capsys.readouterr().err


def test_missing_store_is_refused(capsys, tmp_path):
    code = main(["--config", "transformer_tiny", "train.tokens=5120",
                 f"train.run_dir={tmp_path / 'run'}", "--quiet"])
    assert code == 2 and "data.store" in capsys.readouterr().err


def test_distributed_flags_become_overrides(capsys):
    assert main(["--config", "transformer_tiny", "--dry-run", "train.tokens=5120",
                 "--coordinator", "10.0.0.1:1234", "--num-processes", "1",
                 "--process-id", "0"]) == 0
    assert '"coordinator": "10.0.0.1:1234"' in capsys.readouterr().out


@pytest.mark.parametrize("cfg, env, expected", [
    (DistributedConfig(), {}, None),
    (DistributedConfig(coordinator="h:1", num_processes=2, process_id=1), {}, "explicit"),
    (DistributedConfig(coordinator="h:1", num_processes=1, process_id=0), {}, None),
    (DistributedConfig(), {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, "slurm"),
    (DistributedConfig(), {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, None),
    (DistributedConfig(), {"TPU_WORKER_HOSTNAMES": "a,b,c,d"}, "tpu-pod"),
    (DistributedConfig(), {"TPU_WORKER_HOSTNAMES": "localhost"}, None),
])
def test_multi_process_detection(cfg, env, expected):
    assert detect(cfg, env) == expected


def test_partial_explicit_settings_are_an_error():
    with pytest.raises(ValueError, match="together"):
        detect(DistributedConfig(coordinator="h:1"), {})
    with pytest.raises(ValueError, match="process_id=2 outside"):
        detect(DistributedConfig(coordinator="h:1", num_processes=2, process_id=2), {})
