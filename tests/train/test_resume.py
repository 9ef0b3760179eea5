"""Exact resume: a training *process* killed at a random step and restarted ends bitwise equal to
an uninterrupted run, and TensorBoard shows each step once; SIGTERM saves a checkpoint and exits
cleanly, and a run directory on gs:// resumes the same way. Runs the real command line (`python -m hybrid_jax.train`) in child processes."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hybrid_jax.storage import objects
from hybrid_jax.storage.paths import as_path
from tests.helpers import REPO
from tests.helpers.gcs import EMULATOR_ENV, gcs_emulator, gs_prefix  # noqa: F401 (fixture)
from tests.helpers.tfevents import shown_scalars
from tests.helpers.training import final_params, tiny_overrides, train_losses

STEPS = 60
EXTRA = {"train.tokens": STEPS * 256, "checkpoint.interval_steps": 7, "log.tensorboard": True}


def command(store, run_dir):
    return [sys.executable, "-m", "hybrid_jax.train", "--config", "transformer_tiny", "--quiet",
            *tiny_overrides(store, run_dir, **EXTRA)]


def run_to_end(store, run_dir, env):
    proc = subprocess.run(command(store, run_dir), env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return proc


@pytest.fixture(scope="module")
def reference(store, env, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    run_to_end(store, run_dir, env)
    return train_losses(run_dir), final_params(run_dir)


def start_and_wait_for_step(store, run_dir, env, step):
    proc = subprocess.Popen(command(store, run_dir), env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and any(json.loads(line).get("step", 0) >= step
                                    for line in metrics.read_text().splitlines()[-3:]
                                    if line.endswith("}")):
            return proc
        time.sleep(0.002)
    proc.kill()
    raise AssertionError(f"the run never reached step {step}: {proc.communicate()[1][-3000:]}")


def assert_same_as(reference, run_dir):
    ref_losses, ref_params = reference
    assert train_losses(run_dir) == ref_losses  # exact float equality, every step
    params = final_params(run_dir)
    assert params.keys() == ref_params.keys()
    for key in ref_params:
        assert np.array_equal(params[key], ref_params[key]), key


def assert_tensorboard_shows_each_step_once(run_dir):
    assert_tensorboard_shows_each_step_once_in(run_dir, run_dir / "tensorboard")


def assert_tensorboard_shows_each_step_once_in(run_dir, logdir):
    """The earlier attempt's steps past the checkpoint are purged; TensorBoard keeps float32."""
    losses = train_losses(run_dir)
    assert shown_scalars(logdir)["train/loss"] == [
        (step, float(np.float32(losses[step]))) for step in sorted(losses)]


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_is_bitwise_exact(store, env, reference, tmp_path):
    seed = int(os.environ.get("HYBRID_JAX_TEST_SEED", time.time_ns() % 10**6))
    kill_after = random.Random(seed).randint(3, STEPS - 15)
    run_dir = tmp_path / "run"
    proc = start_and_wait_for_step(store, run_dir, env, kill_after)
    proc.kill()  # SIGKILL: no handler, no cleanup
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"seed {seed}: the run ended before the kill"
    killed_at = max(json.loads(line)["step"] for line in
                    (run_dir / "metrics.jsonl").read_text().splitlines() if line.endswith("}"))
    assert killed_at < STEPS, f"seed {seed}"
    run_to_end(store, run_dir, env)
    resumed = json.loads((run_dir / "run_meta.json").read_text())["resumed_from_step"]
    assert resumed % 7 == 0 and resumed <= killed_at, (seed, killed_at, resumed)
    assert_same_as(reference, run_dir)
    assert_tensorboard_shows_each_step_once(run_dir)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_a_gs_run_dir_resumes_bitwise(store, env, reference,
                                                                     gcs_emulator, tmp_path):
    """The same run with train.run_dir on gs:// (the emulator): SIGTERM once a checkpoint is
    in the bucket saves one at the step it stopped and exits 75; the rerun is SIGKILLed after
    its next checkpoint; the third attempt's losses, final params and TensorBoard match the
    uninterrupted local run's."""
    run = gs_prefix(gcs_emulator.bucket, "resume-run")
    gs_env = {**env, **{k: os.environ[k] for k in EMULATOR_ENV}}

    def start_and_wait_for_checkpoint(step):
        proc = subprocess.Popen(command(store, run), env=gs_env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240
        while objects.read_bytes(f"{run}/checkpoints/{step}/commit_success.txt") is None:
            assert proc.poll() is None and time.monotonic() < deadline, \
                proc.communicate()[1][-3000:]
            time.sleep(0.05)
        return proc

    proc = start_and_wait_for_checkpoint(7)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 75, stderr[-3000:]  # EX_TEMPFAIL: stopped, rerun to resume
    assert "Traceback" not in stderr
    summary = json.loads(objects.read_bytes(f"{run}/summary.json"))
    stopped = summary["steps"]
    assert summary["status"] == "interrupted" and 7 <= stopped < STEPS
    steps = sorted(int(p.name) for p in (as_path(run) / "checkpoints").iterdir()
                   if p.name.isdigit())
    assert steps[-1] == stopped  # saved at the step it stopped, not a regular interval
    # the second attempt is SIGKILLed once it has saved a checkpoint of its own
    proc = start_and_wait_for_checkpoint(stopped + 7 - stopped % 7)
    proc.kill()
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    run_to_end(store, run, gs_env)
    resumed = json.loads(objects.read_bytes(f"{run}/run_meta.json"))["resumed_from_step"]
    assert resumed > stopped and resumed % 7 == 0
    assert_same_as(reference, as_path(run))
    tb = tmp_path / "tensorboard"  # TensorBoard reads gs:// itself; the test helper reads files
    tb.mkdir()
    for name in objects.list_names(f"{run}/tensorboard"):
        (tb / name).write_bytes(objects.read_bytes(f"{run}/tensorboard/{name}"))
    assert len(list(tb.iterdir())) == 3  # one event file per attempt
    assert_tensorboard_shows_each_step_once_in(run, tb)
