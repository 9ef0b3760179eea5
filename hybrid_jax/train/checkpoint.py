"""Orbax checkpoints of the train state: async saves, retention, verified restores.

Layout: `{run_dir}/checkpoints/{step}/{state,meta,checksums.json}`. `state` is the train state
pytree (step, params, opt_state; the data position is implied by the step, because batches are
a pure function of it). `meta` is JSON: step, tokens, whether the step is a scaling point, and
the evaluation results at that step. `checksums.json` is the sha256 of every file
(hybrid_jax.train.checksums), computed in orbax's background thread after the data is written
and before orbax commits the directory, so a committed checkpoint always has one.

Retention (orbax 0.12 `preservation_policy`): the latest `max_to_keep` checkpoints, plus every
scaling-point step (the bottom of each WSD-S decay), which is never deleted.

Faults, and what each does:
- A save cut by a kill leaves orbax's temporary directory, which is not a step; it is removed
  at start-up.
- A committed checkpoint that fails its checksums (a flipped byte, a truncated or missing
  file) is moved to `{run_dir}/corrupt_checkpoints/` with a one-line warning, and the previous
  one is tried. Only this moves a checkpoint.
- A checkpoint that passes its checksums but does not restore (out of memory on a smaller
  slice, a changed parameter tree, a read error) raises CheckpointRestoreError: the run stops
  and every checkpoint stays where it is.
- A save that fails (a full disk above all) raises CheckpointSaveError at that save: a full
  disk is refused before writing when the free space is visibly short, and otherwise found by
  `poll()` as soon as orbax's background thread gives up (the loop polls after every step).
  The half-written directory is removed. orbax's own tracebacks of the failure go to
  `{run_dir}/checkpoint_errors.log`, not the terminal.

A run directory on gs:// works the same way, with two differences: orbax commits a step there
by writing `commit_success.txt` into it (no rename), and there is no free-space check. Setting
a checkpoint aside is a copy and a delete there, not a rename.
"""

from __future__ import annotations

import errno
import logging
import shutil
import time
import traceback
import os
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies

from hybrid_jax.storage import objects
from hybrid_jax.storage.paths import absolute, is_object_store
from hybrid_jax.train.checksums import verify_checksums, write_checksums

TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax 0.12's name for a step directory being written
_MB = 1 << 20


class CheckpointWarning(UserWarning):
    pass


class CheckpointRestoreError(RuntimeError):
    """A checkpoint that passed its checksums did not restore; nothing was moved."""


class CheckpointSaveError(RuntimeError):
    """A save failed; the half-written checkpoint was removed."""


class DiskFullError(CheckpointSaveError):
    pass


class _OrbaxErrorsToFile(logging.Filter):
    """Sends orbax's error records (each a full traceback, several per failure) to a file; our
    own exception says what happened in one line and names the file."""

    def __init__(self, path: epath.Path):
        super().__init__()
        self.path = path

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or "orbax" not in record.pathname:
            return True
        text = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {record.getMessage()}\n"
        if record.exc_info:
            text += "".join(traceback.format_exception(*record.exc_info))
        try:
            if not is_object_store(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
            objects.append(self.path, text.encode())
        except OSError:
            pass  # a full disk: our own one-line error still says what happened
        return False


class Checkpointer:
    def __init__(self, run_dir: str | os.PathLike, *, max_to_keep: int,
                 keep_steps: tuple[int, ...] = (), async_save: bool = True):
        run_dir = absolute(run_dir)
        self.directory = run_dir / "checkpoints"
        self.quarantine = run_dir / "corrupt_checkpoints"
        self.superseded = run_dir / "superseded_checkpoints"
        self.error_log = run_dir / "checkpoint_errors.log"
        self.keep_steps = tuple(keep_steps)
        self.async_save = async_save
        self._saving: int | None = None  # the step of the save in flight, if any
        self._log_filter = _OrbaxErrorsToFile(self.error_log)
        logging.getLogger("absl").addFilter(self._log_filter)
        preserve = policies.AnyPreservationPolicy(
            [policies.LatestN(max_to_keep), policies.CustomSteps(list(self.keep_steps))])
        # Always orbax's async checkpointer, whose post-finalization hook writes the checksums
        # before the commit; a synchronous save is an async one waited for.
        options = ocp.CheckpointManagerOptions(
            preservation_policy=preserve, enable_async_checkpointing=True, create=True,
            cleanup_tmp_directories=True,
            async_options=ocp.AsyncOptions(post_finalization_callback=self._write_checksums))
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "meta"))

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def step_dir(self, step: int) -> epath.Path:
        return self.directory / str(step)

    # ---- saving -------------------------------------------------------------------------------
    def save(self, step: int, state: Any, meta: dict) -> None:
        """Start saving `state` at `step` (asynchronously if configured)."""
        self.wait()  # the previous save's failure is reported as that save's, not this one's
        self._check_space(step, state)
        self._saving = step
        try:
            self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        except Exception as e:  # noqa: BLE001 - re-raised as one line, with the cause chained
            raise self._save_failed(e) from e
        if not self.async_save:
            self.wait()

    def poll(self) -> None:
        """Raise CheckpointSaveError now if the save in flight has failed (cheap otherwise)."""
        if self._saving is not None and not self.manager.is_saving_in_progress():
            self.wait()

    def wait(self) -> None:
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - re-raised as one line, with the cause chained
            raise self._save_failed(e) from e
        self._saving = None

    def close(self) -> None:
        try:
            self.manager.close()
        finally:
            logging.getLogger("absl").removeFilter(self._log_filter)

    def _write_checksums(self) -> None:
        """orbax's post-finalization hook (primary process, background thread): the data and
        metadata are written, the directory not yet committed (renamed into place)."""
        step = self._saving
        tmp = self.directory / f"{step}{TMP_SUFFIX}"
        write_checksums(tmp if tmp.is_dir() else self.step_dir(step))

    def _check_space(self, step: int, state: Any) -> None:
        """Refuse a save that visibly cannot fit, before writing any of it."""
        need = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)) + _MB
        self.directory.mkdir(parents=True, exist_ok=True)
        free = _free_bytes(self.directory)
        if free is not None and free < need:
            raise DiskFullError(
                f"checkpoint at step {step} not saved: {self.directory} has {free / _MB:.1f} MB "
                f"free and the state needs about {need / _MB:.1f} MB; {self._resume_hint()}")

    def _save_failed(self, error: Exception) -> CheckpointSaveError:
        step, self._saving = self._saving, None
        tmp = self.directory / f"{step}{TMP_SUFFIX}"
        if jax.process_index() == 0 and step is not None and tmp.exists():
            tmp.rmtree()
        free = _free_bytes(self.directory)
        space = "" if free is None else f"{free / _MB:.1f} MB free in {self.directory}; "
        cause = _first_line(error)
        if _is_disk_full(error):
            return DiskFullError(
                f"checkpoint at step {step} not saved: no space left in {self.directory} "
                f"({space}orbax's report: {self.error_log}); {self._resume_hint()}")
        return CheckpointSaveError(
            f"checkpoint at step {step} not saved: {cause} ({space}orbax's report: "
            f"{self.error_log}); {self._resume_hint()}")

    def _resume_hint(self) -> str:
        last = max(self.manager.all_steps(), default=None)
        where = f"step {last}" if last is not None else "step 0 (no checkpoint yet)"
        return f"fix the cause and rerun the same command to resume from {where}"

    # ---- restoring ----------------------------------------------------------------------------
    def restore(self, abstract_state: Any, step: int | None = None
                ) -> tuple[int, Any, dict] | None:
        """(step, state, meta) of the newest checkpoint that passes its checksums (or of
        `step`), placed as the shardings in `abstract_state` (a pytree of
        jax.ShapeDtypeStruct) say; None if there is none. Checkpoints that fail their checksums
        are set aside; any other failure raises CheckpointRestoreError and moves nothing."""
        steps = self.all_steps()
        if step is not None:
            if step not in steps:
                raise CheckpointRestoreError(
                    f"checkpoint.resume_step={step}: no checkpoint at step {step} in "
                    f"{self.directory} (there are: {steps or 'none'})")
            problem = self._verify(step)
            if problem:
                raise CheckpointRestoreError(
                    f"checkpoint.resume_step={step}: the checkpoint at step {step} fails its "
                    f"checksums ({problem})")
            restored = self._restore(step, abstract_state)
            self._supersede([s for s in steps if s > step])
            return restored
        for candidate in reversed(steps):
            problem = self._verify(candidate)
            if problem:
                self._set_aside(candidate, problem)
                continue
            return self._restore(candidate, abstract_state)
        return None

    def _verify(self, step: int) -> str | None:
        problem = verify_checksums(self.step_dir(step)) if jax.process_index() == 0 else None
        if jax.process_count() > 1:  # one reader decides for all, so all take the same branch
            from jax.experimental import multihost_utils

            bad = bool(multihost_utils.broadcast_one_to_all(np.array(problem is not None)))
            problem = problem or ("fails its checksums on process 0" if bad else None)
        return problem

    def _restore(self, step: int, abstract_state: Any) -> tuple[int, Any, dict]:
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
            state, meta = restored["state"], restored["meta"]
            jax.block_until_ready(state)
        except Exception as e:  # noqa: BLE001 - re-raised as one line, with the cause chained
            raise CheckpointRestoreError(
                f"the checkpoint at step {step} in {self.directory} passes its checksums but "
                f"does not restore: {_first_line(e)}. Every checkpoint is kept; if the model, "
                f"mesh or memory changed, restore on the setup that wrote it (details: "
                f"{self.error_log})") from e
        if int(meta.get("step", -1)) != step:
            raise CheckpointRestoreError(f"the checkpoint at step {step} in {self.directory} "
                                         f"says it is step {meta.get('step')}")
        return step, state, meta

    def _set_aside(self, step: int, problem: str) -> None:
        target = self.quarantine / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        warnings.warn(f"checkpoint at step {step} in {self.directory} fails its checksums "
                      f"({problem}); moved to {target}", CheckpointWarning, stacklevel=3)
        self._move(step, target, f"checkpoint-set-aside-{step}")

    def _supersede(self, steps: list[int]) -> None:
        """Checkpoints after a chosen resume step would be overwritten by the new history; they
        are moved, not deleted."""
        for step in steps:
            target = self.superseded / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
            warnings.warn(f"resuming from an earlier step: checkpoint at step {step} moved to "
                          f"{target}", CheckpointWarning, stacklevel=3)
            self._move(step, target, f"checkpoint-supersede-{step}")

    def _move(self, step: int, target: epath.Path, barrier: str) -> None:
        if jax.process_index() == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            self.step_dir(step).rename(target)  # on gs:// a copy, then a delete
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(barrier)
        self.manager.reload()


def _free_bytes(path: epath.Path) -> int | None:
    """Free bytes on the local filesystem holding `path`; None on gs:// (no such limit)."""
    return None if is_object_store(path) else shutil.disk_usage(path).free


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}"


def _is_disk_full(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(seen) or "Disk quota exceeded" in str(seen):
            return True  # tensorstore's errors are ValueErrors that quote strerror
        seen = seen.__cause__ or seen.__context__
    return False
