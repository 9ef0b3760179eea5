"""The training loop: check the config against the devices, build or restore the sharded state,
then dispatch steps, log, evaluate, checkpoint; nothing else.

`train(cfg) -> summary` is the programmatic entry point (the sweep runner calls it). Everything
that can be refused is refused before anything compiles. Step n+1 is dispatched before step n's
metrics are read, so the host never waits on the device except at evaluations and checkpoints;
there, the pending metrics are read first so that a non-finite step is never saved.

Step numbers: "step n" is the state after n updates, which consumed batches 0..n-1 and
n * tokens_per_step tokens; metrics logged at step n describe the update that produced it.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from typing import Any

import jax
import numpy as np
from etils import epath

from hybrid_jax import distributed, sharding
from hybrid_jax.config import ConfigError
from hybrid_jax.flops import param_count, train_flops_per_token
from hybrid_jax.sharding import MeshError, NamedSharding
from hybrid_jax.storage.paths import read_text_or_none, write_text_atomic
from hybrid_jax.train import runinfo
from hybrid_jax.train.checkpoint import CheckpointSaveError, Checkpointer
from hybrid_jax.train.config import RunConfig
from hybrid_jax.train.evaluate import Evaluator
from hybrid_jax.train.metrics import MetricsLog, Progress, mfu
from hybrid_jax.train.program import build_program
from hybrid_jax.train.run_lock import RunLock, RunLockedError
from hybrid_jax.train.schedule import Schedule, build_schedule
from hybrid_jax.train.source import BatchSource, make_source
from hybrid_jax.train.stop_flag import StopFlag


class NonFiniteError(FloatingPointError):
    """A step produced a NaN or Inf loss or gradient norm; the run stops, nothing is saved."""


# A non-finite step this soon after a resume may come from the checkpoint itself: the message
# then names it and says how to go back one.
RECENT_RESUME_STEPS = 10


class ConfigMismatchError(ValueError):
    """The run directory holds a run with a different config."""


def check_fits(cfg: RunConfig, n_devices: int) -> tuple[int, int, int]:
    """The resolved mesh shape, or MeshError; needs only the device count."""
    shape = sharding.resolve_mesh_shape(cfg.mesh.shape, n_devices)
    dp = shape[0] * shape[1]
    t = cfg.train
    micro = t.global_batch // t.micro_batches
    if micro % dp:
        raise MeshError(f"train.global_batch={t.global_batch} / train.micro_batches="
                        f"{t.micro_batches} = {micro} sequences per micro-batch, which the "
                        f"data x fsdp = {shape[0]} x {shape[1]} = {dp} batch shards do not divide")
    if cfg.eval_batch_size % dp:
        raise MeshError(f"eval batch size {cfg.eval_batch_size} is not divisible by data x fsdp"
                        f" = {dp}; set eval.batch_size")
    return shape


def _process_rows(sharding_: NamedSharding, global_shape: tuple[int, ...]) -> tuple[int, int]:
    """(dp_rank, dp_size) such that this process holds rows [r*B/size, (r+1)*B/size)."""
    B = global_shape[0]
    spans = {(i[0].start or 0, B if i[0].stop is None else i[0].stop)
             for i in sharding_.addressable_devices_indices_map(global_shape).values()}
    lo, hi = min(s for s, _ in spans), max(e for _, e in spans)
    if sum(e - s for s, e in spans) != hi - lo or B % (hi - lo) or lo % (hi - lo):
        raise MeshError(f"this process's batch rows {sorted(spans)} are not one aligned block")
    return lo // (hi - lo), B // (hi - lo)


def _write_json(path: epath.Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def _prepare_run_dir(cfg: RunConfig, run_dir: epath.Path, is_main: bool) -> None:
    config_path = run_dir / "config.json"
    text = read_text_or_none(config_path)
    if text is not None:
        old = json.loads(text)
        if old.get("config_hash") != cfg.config_hash():
            raise ConfigMismatchError(
                f"{run_dir} holds a run with config hash {old.get('config_hash', '?')[:8]}, this "
                f"config is {cfg.config_hash()[:8]}; use another train.run_dir or the same config")
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(config_path, {"config_hash": cfg.config_hash(), "config": cfg.to_dict()})


def train(cfg: RunConfig, *, source: BatchSource | None = None, verbose: bool = True) -> dict:
    """Train (or resume) the run `cfg` describes; returns its summary (also summary.json)."""
    dist_info = distributed.initialize(cfg.distributed)
    t_start = time.perf_counter()
    # ---- everything that can be refused, before anything compiles -------------------------
    mesh_shape = check_fits(cfg, jax.device_count())
    build_schedule(cfg)  # refuses inconsistent schedule points
    impls = runinfo.implementations(cfg.model)
    run_dir = cfg.run_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"train.run_dir={run_dir} is a file, not a directory")
    lock = RunLock(run_dir, enabled=jax.process_index() == 0)
    _acquire(lock, run_dir)  # before the data is verified, which can take minutes
    try:
        return _train(cfg, source, verbose, dist_info, mesh_shape, impls, t_start)
    finally:
        lock.release()


def _acquire(lock: RunLock, run_dir: epath.Path) -> None:
    """Process 0 takes the run directory's lock; every process learns whether it did, so that a
    refused multi-process run stops everywhere instead of hanging in a collective."""
    error = None
    try:
        lock.acquire()
    except RunLockedError as e:
        error = e
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        refused = np.any(multihost_utils.process_allgather(np.array(error is not None)))
        if refused and error is None:
            raise RunLockedError(f"{run_dir} is in use by another training process (process 0 "
                                 "was refused the lock)")
    if error is not None:
        raise error


def _train(cfg: RunConfig, source: BatchSource | None, verbose: bool, dist_info: dict,
           mesh_shape: tuple[int, int, int], impls: dict, t_start: float) -> dict:
    is_main = jax.process_index() == 0
    say = (lambda *a: print(*a, flush=True)) if (verbose and is_main) else (lambda *a: None)
    if source is None:
        source = make_source(cfg.data, global_batch=cfg.train.global_batch,
                             seq_len=cfg.train.seq_len)
    if source.vocab_size > cfg.model.vocab_size:
        raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the data's "
                         f"vocabulary ({source.vocab_size})")
    epochs = source.check_epochs(cfg.total_tokens, cfg.data.max_epochs)
    eval_sets = tuple(cfg.eval.sets) or tuple(source.validation_set_names)
    unknown = sorted(set(eval_sets) - set(source.validation_set_names))
    if unknown:
        raise ConfigError(f"eval.sets: {unknown} not in the data's validation sets "
                         f"{list(source.validation_set_names)}")

    if cfg.train.init_from:  # refused before anything is written
        from hybrid_jax.train.weights import check_architecture
        check_architecture(cfg.train.init_from, None, cfg.model)

    prog = build_program(cfg, mesh_shape)
    schedule, plan, run_dir = prog.schedule, prog.plan, cfg.run_dir
    _prepare_run_dir(cfg, run_dir, is_main)
    say(f"run {run_dir}  config {cfg.config_hash()[:8]}")
    say(json.dumps(cfg.to_dict(), indent=1))
    say(f"mesh {dict(zip(sharding.MESH_AXES, mesh_shape))} on {jax.device_count()} "
        f"{jax.devices()[0].device_kind} device(s), {jax.process_count()} process(es); "
        f"kernels {impls}; {epochs:.2f} epochs of the data")
    for note in plan.notes:
        say(f"  replicated: {note}")

    # ---- state: restore the newest good checkpoint, else initialise; then train ------------
    ckpt = Checkpointer(run_dir, max_to_keep=cfg.checkpoint.max_to_keep,
                        keep_steps=schedule.decay_end_steps(),
                        async_save=cfg.checkpoint.async_save)
    loop = None
    try:
        # installed early: a signal during compilation stops at step 1
        with StopFlag() as stop:
            had_checkpoints = bool(ckpt.all_steps())
            restored = ckpt.restore(prog.abstract_state, cfg.checkpoint.resume_step)
            if restored is None:
                state = _initial_state(cfg, prog, say)
                start, scaling_results = 0, []
                if had_checkpoints and is_main:
                    print(f"no usable checkpoint in {ckpt.directory}; starting from step 0",
                          file=sys.stderr, flush=True)
            else:
                start, state, meta = restored
                scaling_results = list(meta.get("scaling_points", []))
                say(f"resumed from checkpoint at step {start}")
            if is_main:
                _write_json(run_dir / "run_meta.json", _run_meta(
                    cfg, dist_info, mesh_shape, impls, plan, source, epochs, schedule, start))
            evaluator = Evaluator(prog.eval_step, source, eval_sets, mesh=prog.mesh,
                                  param_shardings=plan.shardings, batch_size=cfg.eval_batch_size,
                                  seq_len=cfg.train.seq_len, max_tokens=cfg.eval.max_tokens)
            loop = _Loop(cfg, schedule, ckpt, source, prog.batch_sharding, evaluator,
                         scaling_results,
                         log=MetricsLog(run_dir, enabled=is_main, tensorboard=cfg.log.tensorboard,
                                        resume_step=start),
                         progress=Progress(cfg.total_steps, start, mode=cfg.log.progress,
                                           log_every=cfg.log.log_every_steps,
                                           enabled=verbose and is_main))
            state, status = loop.run(prog.step, state, start, stop)
    except BaseException:
        # In-flight saves are of good states: let them finish. The error already on its way
        # is the one to report.
        with contextlib.suppress(CheckpointSaveError):
            ckpt.wait()
        raise
    else:
        ckpt.wait()
    finally:
        ckpt.close()
        if loop is not None:
            loop.close()
    pc = param_count(cfg.model)
    summary = {
        "status": status, "run_dir": str(run_dir), "config_hash": cfg.config_hash(),
        "name": cfg.train.name, "family": cfg.model.family, "steps": loop.step,
        "tokens": loop.step * cfg.train.tokens_per_step, "total_steps": cfg.total_steps,
        "params": {"total": pc.total, "non_embedding": pc.non_embedding},
        "train_flops": train_flops_per_token(cfg.model, cfg.train.seq_len)
        * loop.step * cfg.train.tokens_per_step,
        "final_train_loss": loop.last_loss, "scaling_points": loop.scaling_results,
        "wall_s": time.perf_counter() - t_start}
    if is_main:
        _write_json(run_dir / "summary.json", summary)
    say(f"{status} at step {loop.step}: {run_dir}")
    return summary


def _initial_state(cfg: RunConfig, prog, say) -> dict:
    """The step-0 state: a random init, or train.init_from's weights with a fresh optimizer
    (refused unless they are weights of this run's architecture)."""
    if not cfg.train.init_from:
        return prog.init()
    from hybrid_jax.train.weights import load_params

    _, params, source = load_params(cfg.train.init_from, target=prog.abstract_state["params"],
                                 expect=cfg.model)
    say(f"initialised from {source}")
    return prog.init_with(params)


def _run_meta(cfg, dist_info, mesh_shape, impls, plan, source, epochs, schedule, start) -> dict:
    pc = param_count(cfg.model)
    return {"config_hash": cfg.config_hash(), "git": runinfo.git_state(),
            "versions": runinfo.versions(), "devices": runinfo.devices(),
            "distributed": dist_info, "mesh": dict(zip(sharding.MESH_AXES, mesh_shape)),
            "implementations": impls, "replicated_dims": plan.notes, "data": source.describe(),
            "epochs": epochs, "params": {"total": pc.total, "non_embedding": pc.non_embedding},
            "train_flops_per_token": train_flops_per_token(cfg.model, cfg.train.seq_len),
            "total_steps": cfg.total_steps, "scaling_steps": list(schedule.decay_end_steps()),
            "resumed_from_step": start}


class _Loop:
    def __init__(self, cfg: RunConfig, schedule: Schedule, ckpt: Checkpointer,
                 source: BatchSource, batch_sh: NamedSharding, evaluator: Evaluator,
                 scaling_results: list, *, log: MetricsLog, progress: Progress):
        self.cfg, self.schedule, self.ckpt, self.source = cfg, schedule, ckpt, source
        self.batch_sh, self.evaluator, self.log, self.progress = batch_sh, evaluator, log, progress
        self.scaling_results = scaling_results
        self.scaling_steps = set(schedule.decay_end_steps())
        tps = cfg.train.tokens_per_step
        self.eval_every = (max(1, round(cfg.eval.interval_tokens / tps))
                           if cfg.eval.interval_tokens else 0)
        shape = (cfg.train.global_batch, cfg.train.seq_len)
        self.global_shape = shape
        self.dp_rank, self.dp_size = _process_rows(batch_sh, shape)
        self.flops_per_token = train_flops_per_token(cfg.model, cfg.train.seq_len)
        self.device_kind, self.n_devices = jax.devices()[0].device_kind, jax.device_count()
        self.step = self.start = 0
        self.last_loss, self.t_last = None, time.perf_counter()

    def batch(self, step: int) -> dict[str, jax.Array]:
        local = self.source.batch(step, self.dp_rank, self.dp_size)
        return {k: jax.make_array_from_process_local_data(self.batch_sh, v, self.global_shape)
                for k, v in local.items()}

    def run(self, step_fn, state, start: int, stop: StopFlag) -> tuple[Any, str]:
        total, pending, self.step, self.start = self.cfg.total_steps, None, start, start
        self.t_last = time.perf_counter()
        while self.step < total:
            state, metrics = step_fn(state, self.batch(self.step))
            self.step += 1
            self.ckpt.poll()  # a failed async save stops the run at once, naming its step
            if pending is not None:
                self.finish(*pending)
            pending = (self.step, metrics)
            step = self.step
            scaling = step in self.scaling_steps
            do_eval = scaling or (self.eval_every and step % self.eval_every == 0)
            do_save = scaling or step % self.cfg.checkpoint.interval_steps == 0 or step == total
            stopping = stop.is_set()
            if do_eval or do_save or stopping:
                self.finish(*pending)
                pending = None
                results = self.evaluate(state, step, scaling) if do_eval else None
                if do_save or stopping:
                    self.save(state, step, scaling, results)
                self.t_last = time.perf_counter()
            if stopping:
                self.ckpt.wait()
                self.progress.message(f"stopped by signal {stop.signum} at step {step}; "
                                      "checkpoint saved; run the same command to resume")
                return state, "interrupted"
        if pending is not None:
            self.finish(*pending)
        self.ckpt.wait()
        return state, "completed"

    def finish(self, step: int, metrics_device) -> None:
        """Read one step's metrics (blocking), refuse non-finite values, log them."""
        m = {k: float(v) for k, v in jax.device_get(metrics_device).items()}
        now = time.perf_counter()
        if not (math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])):
            self.ckpt.wait()  # saves in flight are of earlier, finite steps
            raise NonFiniteError(self.non_finite_message(step, m))
        dt, self.t_last = now - self.t_last, now
        tps = self.cfg.train.tokens_per_step
        record = {"kind": "train", "step": step, "tokens": step * tps, "loss": m["loss"],
                  "ce": m["ce"], "z_loss": m["z_loss"], "grad_norm": m["grad_norm"],
                  "lr": m["lr"], "step_time_s": dt, "tokens_per_s": tps / dt,
                  "mfu": mfu(self.flops_per_token, tps / dt, self.device_kind, self.n_devices)}
        if step == self.start + 1:
            record["includes_compile"] = True  # its time is mostly compilation
        self.last_loss = m["loss"]
        self.log.write(record, tb_prefix="train")
        self.progress.update(step, record)

    def non_finite_message(self, step: int, m: dict) -> str:
        what = "loss" if not math.isfinite(m["loss"]) else "gradient norm"
        text = (f"non-finite {what} at step {step} (loss {m['loss']}, grad norm "
                f"{m['grad_norm']}, lr {m['lr']:.3g}); the run stops")
        steps = self.ckpt.all_steps()
        last = max((s for s in steps if s < step), default=None)
        text += (f", and the last checkpoint (step {last}) is kept" if last is not None
                 else "; no checkpoint was saved before it")
        if self.start and step - self.start <= RECENT_RESUME_STEPS:
            earlier = max((s for s in steps if s < self.start), default=None)
            text += (f". It resumed from the checkpoint at step {self.start} "
                     f"({self.ckpt.step_dir(self.start)}) {step - self.start} step(s) earlier; if "
                     "that checkpoint is bad, " +
                     (f"go back one: rerun once with checkpoint.resume_step={earlier}"
                      if earlier is not None else
                      "there is no earlier one: start over in another train.run_dir"))
        return text

    def evaluate(self, state, step: int, scaling: bool) -> dict:
        t0 = time.perf_counter()
        results = self.evaluator(state["params"])
        tokens = step * self.cfg.train.tokens_per_step
        record = {"kind": "eval", "step": step, "tokens": tokens, "scaling_point": scaling,
                  "eval_time_s": time.perf_counter() - t0, "sets": results}
        self.log.write(record, tb_prefix="eval")
        if scaling:
            self.scaling_results.append({
                "step": step, "tokens": tokens,
                "train_flops": self.flops_per_token * tokens, "eval": results})
        self.progress.message(f"eval at step {step}{' (scaling point)' if scaling else ''}: " +
                              ", ".join(f"{n} loss {r['loss']:.4f} bpb {r['bpb']:.4f}"
                                        for n, r in results.items()))
        return results

    def save(self, state, step: int, scaling: bool, results: dict | None) -> None:
        meta = {"step": step, "tokens": step * self.cfg.train.tokens_per_step,
                "scaling_point": scaling, "eval": results, "config_hash": self.cfg.config_hash(),
                "scaling_points": self.scaling_results}
        self.log.flush()  # every record up to this step is stored before the checkpoint is
        self.ckpt.save(step, state, meta)

    def close(self) -> None:
        self.log.close()
        self.progress.close()

