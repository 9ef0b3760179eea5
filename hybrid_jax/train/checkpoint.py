"""Orbax checkpoints of the train state: async saves, retention, and resume that survives a bad
latest checkpoint.

Layout: `{run_dir}/checkpoints/{step}/{state,meta}`. `state` is the train state pytree (step,
params, opt_state; the data position is implied by the step, because batches are a pure
function of it). `meta` is JSON: step, tokens, whether the step is a scaling point, and the
evaluation results at that step.

Retention (orbax 0.12 `preservation_policy`): the latest `max_to_keep` checkpoints, plus every
scaling-point step (the bottom of each WSD-S decay), which is never deleted.

A save in progress lives in a temporary directory that orbax renames when it completes; one
left by a killed process is not a step and is removed at start-up. A completed checkpoint that
fails to restore (a truncated or corrupt file) is moved to `{run_dir}/corrupt_checkpoints/`
with a warning, and the previous one is tried.
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies


class CheckpointWarning(UserWarning):
    pass


class Checkpointer:
    def __init__(self, run_dir: Path, *, max_to_keep: int, keep_steps: tuple[int, ...] = (),
                 async_save: bool = True):
        self.directory = Path(run_dir).absolute() / "checkpoints"
        self.quarantine = Path(run_dir).absolute() / "corrupt_checkpoints"
        self.keep_steps = tuple(keep_steps)
        preserve = policies.AnyPreservationPolicy(
            [policies.LatestN(max_to_keep), policies.CustomSteps(list(self.keep_steps))])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=preserve, enable_async_checkpointing=async_save, create=True,
            cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "meta"))

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Start saving `state` at `step` (asynchronously if configured)."""
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(meta)), force=True)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()

    def read_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
        """(step, state, meta) of the newest checkpoint that restores, placed as the shardings
        in `abstract_state` (a pytree of jax.ShapeDtypeStruct) say; None if there is none."""
        for step in reversed(self.all_steps()):
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
                state, meta = restored["state"], restored["meta"]
                jax.block_until_ready(state)
                if int(meta.get("step", -1)) != step:
                    raise ValueError(f"metadata says step {meta.get('step')}")
            except Exception as e:  # noqa: BLE001 - any failure means this checkpoint is unusable
                self._set_aside(step, e)
                continue
            return step, state, meta
        return None

    def _set_aside(self, step: int, error: Exception) -> None:
        message = (f"checkpoint at step {step} in {self.directory} does not restore "
                   f"({type(error).__name__}: {str(error)[:300]}); moving it to {self.quarantine} "
                   "and trying the previous one")
        warnings.warn(message, CheckpointWarning, stacklevel=3)
        if jax.process_index() == 0:
            self.quarantine.mkdir(parents=True, exist_ok=True)
            target = self.quarantine / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
            shutil.move(str(self.directory / str(step)), str(target))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"checkpoint-set-aside-{step}")
        self.manager.reload()
