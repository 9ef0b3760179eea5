"""The fault matrix: each fault is injected into a real training process (the command line, in a
child process) and must end with its expected outcome, no metrics rows lost and no checkpoint
lost. Where training recovers, the final metrics and weights are bitwise equal to an
uninterrupted run's.

| fault                                  | expected outcome                                | test |
|----------------------------------------|--------------------------------------------------|------|
| checkpoint truncated                   | set aside, previous one used, bitwise equal      | here |
| checkpoint with 8 bytes flipped        | set aside, previous one used, bitwise equal      | here |
| checkpoint metadata missing (all)      | both set aside; "no usable checkpoint" line;     | here |
|                                        | restart from 0, bitwise equal                    |      |
| checkpoint that verifies, won't restore | rc 1, one line, every checkpoint kept           | here |
| disk full at a save                    | rc 74, one line, nothing half-written; after     | here |
|                                        | freeing space, bitwise equal                     |      |
| disk full inside orbax's async write   | CheckpointSaveError at that save, tmp removed    | here |
| two trainers on one run directory      | second: rc 2 at once, names the holder; first    | here |
|                                        | unharmed                                         |      |
| NaN soon after a resume                | names the checkpoint, resume_step goes back one  | here |
| corrupt token-store shard              | rc 2, one line naming the file                   | here |
| SIGKILL at a random step               | resume bitwise equal          | tests/train/test_resume.py |
| SIGTERM                                | checkpoint, rc 75, resume bitwise equal | tests/train/test_resume.py |
| two sweep drivers on one root          | each run trained once         | tests/sweep/test_runner.py |
| torn results row                       | repaired at the next append   | tests/sweep/test_state.py |

"Rows lost" counts the reference run's per-step metrics missing or different at the end;
"checkpoints lost" counts the reference run's checkpoint steps that are neither in
checkpoints/ nor moved aside (corrupt_checkpoints/, superseded_checkpoints/).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REPO
from tests.helpers.training import (NanAtStep, final_params, tiny_config, tiny_overrides,
                                    train_losses)

EIGHT_STEPS = {"train.tokens": 8 * 256, "checkpoint.interval_steps": 4}


def command(store, run_dir, **extra) -> list[str]:
    return [sys.executable, "-m", "hybrid_jax.train", "--config", "transformer_tiny", "--quiet",
            *tiny_overrides(store, run_dir, **{**EIGHT_STEPS, **extra})]


def train_cli(store, run_dir, env, **extra) -> subprocess.CompletedProcess:
    return subprocess.run(command(store, run_dir, **extra), env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def ckpt_steps(run_dir: Path, folder: str = "checkpoints") -> list[int]:
    d = run_dir / folder
    return sorted(int(p.name.split("-")[0]) for p in d.iterdir()) if d.is_dir() else []


def losses_and_params(run_dir: Path):
    return train_losses(run_dir), final_params(run_dir)


def rows_lost(reference, run_dir: Path) -> int:
    ref_losses, _ = reference
    losses = train_losses(run_dir)
    return sum(1 for step, loss in ref_losses.items() if losses.get(step) != loss)


def checkpoints_lost(expected: list[int], run_dir: Path) -> int:
    kept = set(ckpt_steps(run_dir)) | set(ckpt_steps(run_dir, "corrupt_checkpoints")) | set(
        ckpt_steps(run_dir, "superseded_checkpoints"))
    return len(set(expected) - kept)


def assert_bitwise(reference, run_dir: Path) -> None:
    assert rows_lost(reference, run_dir) == 0
    ref_params, params = reference[1], final_params(run_dir)
    assert params.keys() == ref_params.keys()
    assert all(np.array_equal(params[k], ref_params[k]) for k in ref_params)


def one_line(stderr: str) -> str:
    """The command's own message: no traceback, and the last line names the command."""
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("hybrid-jax train: "), stderr[-3000:]
    return last


@pytest.fixture(scope="module")
def reference(store, env, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    proc = train_cli(store, run_dir, env)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert ckpt_steps(run_dir) == [4, 8]
    return run_dir, losses_and_params(run_dir)


# ---- corrupt checkpoints ------------------------------------------------------------------------
def _largest_data_file(step_dir: Path) -> Path:
    return max((p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"),
               key=lambda p: p.stat().st_size)


def truncate(run_dir: Path) -> list[int]:
    f = _largest_data_file(run_dir / "checkpoints" / "8")
    os.truncate(f, f.stat().st_size // 2)
    return [8]


def flip_8_bytes(run_dir: Path) -> list[int]:
    f = _largest_data_file(run_dir / "checkpoints" / "8")
    blob = bytearray(f.read_bytes())
    mid = len(blob) // 2
    blob[mid:mid + 8] = bytes(b ^ 0xFF for b in blob[mid:mid + 8])
    f.write_bytes(bytes(blob))  # same size, same mtime resolution: only content differs
    return [8]


def drop_metadata(run_dir: Path) -> list[int]:
    for step in (4, 8):
        (run_dir / "checkpoints" / str(step) / "state" / "_METADATA").unlink()
    return [4, 8]


@pytest.mark.parametrize("corrupt", [truncate, flip_8_bytes, drop_metadata],
                         ids=lambda f: f.__name__)
def test_corrupt_checkpoint_is_set_aside_and_training_ends_bitwise_equal(
        store, env, reference, tmp_path, corrupt):
    ref_dir, ref = reference
    run_dir = tmp_path / "run"
    shutil.copytree(ref_dir, run_dir)
    bad = corrupt(run_dir)
    proc = train_cli(store, run_dir, env)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("fails its checksums") == len(bad), proc.stderr
    assert ckpt_steps(run_dir, "corrupt_checkpoints") == bad
    resumed = json.loads((run_dir / "run_meta.json").read_text())["resumed_from_step"]
    if bad == [4, 8]:
        assert resumed == 0
        assert f"no usable checkpoint in {run_dir / 'checkpoints'}; starting from step 0" in \
            proc.stderr.splitlines()
    else:
        assert resumed == 4
    assert_bitwise(ref, run_dir)
    assert checkpoints_lost([4, 8], run_dir) == 0


def test_a_checkpoint_that_verifies_but_does_not_restore_stops_and_moves_nothing(tmp_path):
    import jax
    import jax.numpy as jnp

    from hybrid_jax.train.checkpoint import CheckpointRestoreError, Checkpointer

    ckpt = Checkpointer(tmp_path / "run", max_to_keep=3)
    ckpt.save(1, {"w": jnp.ones((3,))}, {"step": 1})
    ckpt.save(2, {"w": jnp.ones((3,))}, {"step": 2})
    ckpt.wait()
    # A changed parameter tree (say, another model on the same directory): not corruption.
    abstract = {"w": jax.ShapeDtypeStruct((4,), jnp.float32)}
    with pytest.raises(CheckpointRestoreError, match="step 2 .* passes its checksums but does not "
                                                     "restore: .*Every checkpoint is kept"):
        ckpt.restore(abstract)
    assert ckpt.all_steps() == [1, 2] and not (tmp_path / "run" / "corrupt_checkpoints").exists()
    ckpt.close()


# ---- a full disk ----------------------------------------------------------------------------------
def _unshare_works() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


needs_tmpfs = pytest.mark.skipif(not _unshare_works(), reason="needs `unshare -rm` to mount a "
                                 "small tmpfs (a real full disk) without root")


@needs_tmpfs
def test_full_disk_fails_at_that_save_in_one_line_and_resumes_after_space_is_freed(
        store, env, reference, tmp_path):
    """The run directory lives on a 4 MB tmpfs in a private mount namespace. A filler leaves too
    little room for the step-4 checkpoint; after the filler is removed the same command finishes
    the run bitwise equal to the reference."""
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir(), out.mkdir()
    cmd = " ".join(f"'{a}'" for a in command(store, mnt / "run"))
    script = textwrap.dedent(f"""
        set -u
        mount -t tmpfs -o size=4m tmpfs {mnt}
        head -c 3000000 /dev/zero > {mnt}/filler
        {cmd} > {out}/first.out 2> {out}/first.err; echo $? > {out}/first.rc
        cp -a {mnt}/run {out}/after_first
        rm {mnt}/filler
        {cmd} > {out}/second.out 2> {out}/second.err; echo $? > {out}/second.rc
        cp -a {mnt}/run {out}/run
    """)
    subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env, cwd=REPO, check=True,
                   timeout=400)
    first_err = (out / "first.err").read_text()
    assert (out / "first.rc").read_text().strip() == "74", first_err[-3000:]
    line = one_line(first_err)
    assert "DiskFullError: checkpoint at step 4 not saved:" in line and "MB free" in line, line
    assert "resume from step 0" in line
    first = out / "after_first"
    assert max(train_losses(first)) == 4  # reported at the failing save, not one save later
    assert not list((first / "checkpoints").iterdir())  # nothing half-written
    assert (out / "second.rc").read_text().strip() == "0", (out / "second.err").read_text()
    assert_bitwise(reference[1], out / "run")
    assert ckpt_steps(out / "run") == [4, 8]


ASYNC_DISK_FULL = """
import os, sys, time, jax
from hybrid_jax.train import checkpoint as C
C._free_bytes = lambda path: 1 << 40  # pass the up-front check: the write itself must fail
ckpt = C.Checkpointer(sys.argv[1], max_to_keep=3)
state = {"w": jax.random.normal(jax.random.key(0), (600_000,))}  # 2.4 MB, incompressible
ckpt.save(1, {"w": state["w"][:10]}, {"step": 1})
ckpt.wait()
with open(os.path.join(sys.argv[1], "filler"), "wb") as f:
    f.write(bytes(2_500_000))
ckpt.save(2, state, {"step": 2})
try:
    for _ in range(1000):  # the loop polls after every step
        ckpt.poll()
        time.sleep(0.01)
    ckpt.wait()
except C.DiskFullError as e:
    print("RAISED", e)
print("DIRS", sorted(os.listdir(os.path.join(sys.argv[1], "checkpoints"))))
ckpt.close()
"""


@needs_tmpfs
def test_full_disk_inside_the_async_write_is_reported_at_that_save(env, tmp_path):
    mnt, code = tmp_path / "mnt", tmp_path / "child.py"
    mnt.mkdir()
    code.write_text(ASYNC_DISK_FULL)
    script = f"mount -t tmpfs -o size=4m tmpfs {mnt} && {sys.executable} {code} {mnt}"
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "RAISED checkpoint at step 2 not saved: no space left in" in proc.stdout, proc.stdout
    assert "DIRS ['1']" in proc.stdout  # the half-written step 2 is gone; step 1 is intact
    assert "Traceback" not in proc.stderr  # orbax's tracebacks went to checkpoint_errors.log


# ---- two trainers on one run directory ---------------------------------------------------------
def test_a_second_trainer_on_the_same_run_directory_is_refused_at_once(store, env, tmp_path):
    run_dir = tmp_path / "run"
    long_run = {"train.tokens": 50_000 * 256, "checkpoint.interval_steps": 100_000,
                "data.max_epochs": 100}  # stopped by SIGTERM long before its end
    first = subprocess.Popen(command(store, run_dir, **long_run), env=env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (run_dir / "metrics.jsonl").exists() and time.monotonic() < deadline:
            assert first.poll() is None, first.communicate()[1][-3000:]
            time.sleep(0.05)
        t0 = time.monotonic()
        second = train_cli(store, run_dir, env, **long_run)
        refused_in = time.monotonic() - t0
        assert first.poll() is None, "the first run ended before the second was refused"
        line = one_line(second.stderr)
        assert second.returncode == 2 and "is in use by another training process" in line
        assert f"pid {first.pid}" in line and "started" in line, line
        assert refused_in < 60
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 75, err[-3000:]
    steps = sorted(train_losses(run_dir))
    assert steps == list(range(1, steps[-1] + 1))  # the first run's rows, whole and in order
    assert ckpt_steps(run_dir) == [steps[-1]]
    assert not (run_dir / "train.lock").exists()


# ---- NaN after a resume -----------------------------------------------------------------------
def test_nan_soon_after_a_resume_names_the_checkpoint_and_going_back_one_works(store, tmp_path):
    from hybrid_jax.train import NonFiniteError, train

    run_dir = tmp_path / "run"
    cfg = dict(EIGHT_STEPS, **{"checkpoint.interval_steps": 2})

    def train_nan_at_7(cfg):
        return train(cfg, source=NanAtStep(cfg, 7), verbose=False)

    with pytest.raises(NonFiniteError, match=r"at step 7 .*last checkpoint \(step 6\) is kept$"):
        train_nan_at_7(tiny_config(store, run_dir, **cfg))
    with pytest.raises(NonFiniteError, match=r"resumed from the checkpoint at step 6 .* 1 step\(s\) "
                                             r"earlier; .*checkpoint.resume_step=4"):
        train_nan_at_7(tiny_config(store, run_dir, **cfg))
    with pytest.raises(NonFiniteError, match=r"resumed from the checkpoint at step 4 .*"
                                             r"checkpoint.resume_step=2"):
        train_nan_at_7(tiny_config(store, run_dir, **cfg, **{"checkpoint.resume_step": 4}))
    # the old step 6 was moved aside; the new history saved its own step 6 before the NaN
    assert ckpt_steps(run_dir) == [2, 4, 6]
    assert ckpt_steps(run_dir, "superseded_checkpoints") == [6]
    assert checkpoints_lost([2, 4, 6], run_dir) == 0


def test_nan_before_any_checkpoint_says_so(store, tmp_path):
    from hybrid_jax.train import NonFiniteError, train

    cfg = tiny_config(store, tmp_path / "run", **EIGHT_STEPS)
    with pytest.raises(NonFiniteError, match="no checkpoint was saved before it"):
        train(cfg, source=NanAtStep(cfg, 1), verbose=False)


# ---- a corrupt token store -------------------------------------------------------------------
def test_corrupt_store_shard_is_refused_in_one_line(store, env, tmp_path):
    bad_store = tmp_path / "store"
    shutil.copytree(store, bad_store)
    shard = max((p for p in bad_store.rglob("*.bin")), key=lambda p: p.stat().st_size)
    blob = bytearray(shard.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    shard.write_bytes(bytes(blob))
    proc = train_cli(bad_store, tmp_path / "run", env)
    line = one_line(proc.stderr)
    assert proc.returncode == 2 and line.startswith("hybrid-jax train: data refused: ")
    assert shard.name in line, line
