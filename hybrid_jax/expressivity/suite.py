"""Suite definitions and the resumable cell runner.

A *cell* is one (task, model) pair. It trains every (learning rate, seed) run of the LR sweep
together (see train.py), picks the learning rate with the best mean in-distribution validation
sequence accuracy over seeds (ties: lower mean validation loss), and evaluates every run on a
fixed test set at L, 2L and 4L. Its result is written once, atomically, to
OUT/cells/<task>__<model>.json; a rerun skips cells whose file exists with the same cell
config, and refuses to mix in a file written under a different config.

Validation and test sets are fixed per (suite, task, length) and shared by all models and seeds;
the training stream of seed s is shared by all models and learning rates. Validation and test
evaluation run in batches of 128 (or n_val/n_test if smaller). Training batches are right-padded
to the suite's longest training T and evaluation batches to its longest evaluation T, so each
model compiles one training and one evaluation program for the whole suite (padding cannot
change a causal model's outputs; tests check this). The padded T is not part of a cell's config.

Each suite lists positive controls (controls.py), one per task; `run_controls` trains each as a
one-cell suite of its own, through the same `run_cell`, into OUT/controls/.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from hybrid_jax.expressivity.controls import Control, ci_controls, full_controls, verdict
from hybrid_jax.expressivity.models import MODELS, ModelShape, model_config
from hybrid_jax.expressivity.tasks import TASKS, Batch, get_task
from hybrid_jax.expressivity.train import (TrainConfig, eval_batches, evaluate, make_train_data,
                                           train_group)
from hybrid_jax.flops import param_count

VAL_SEED, TEST_SEED = 1_000_003, 2_000_003


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str
    train_length: int  # L, in the task's own size unit
    steps: int | None = None  # overrides the suite's TrainConfig.steps for this task

    def __post_init__(self) -> None:
        get_task(self.name)
        if not isinstance(self.train_length, int) or self.train_length <= 0:
            raise ValueError(f"TaskSpec({self.name!r}).train_length must be a positive integer, "
                             f"got {self.train_length!r}")


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    tasks: tuple[TaskSpec, ...]
    shape: ModelShape
    train: TrainConfig
    lrs: tuple[float, ...]
    n_seeds: int = 3
    models: tuple[str, ...] = MODELS
    eval_multipliers: tuple[int, ...] = (1, 2, 4)
    n_val: int = 256
    n_test: int = 512
    estimate: str = ""  # the documented wall-time expectation
    # Every training / evaluation batch is right-padded to these T, so each model compiles one
    # program of each kind for the whole suite. None: the longest T of the suite's tasks, fixed
    # when the suite is defined, so that `select` (--tasks) does not change them: padding changes
    # no output mathematically, but a different T changes floating-point rounding, which 150+
    # training steps amplify into visibly different runs.
    train_tokens: int | None = None
    eval_tokens: int | None = None
    controls: tuple[Control, ...] = ()

    def __post_init__(self) -> None:
        for m in self.models:
            model_config(m, self.shape)  # raises on an unknown model
        if self.n_seeds < 1:
            raise ValueError(f"n_seeds must be >= 1, got {self.n_seeds}")
        if not self.lrs:
            raise ValueError("need at least one learning rate")
        if not self.tasks:
            raise ValueError("need at least one task")
        names = [t.name for t in self.tasks]
        stray = [c.task for c in self.controls if c.task not in names]
        if stray or len({c.task for c in self.controls}) != len(self.controls):
            raise ValueError(f"suite {self.name!r}: controls must name distinct tasks of the "
                             f"suite; got {[c.task for c in self.controls]} for tasks {names}")
        need_train = max(get_task(t.name).token_length(t.train_length) for t in self.tasks)
        need_eval = max(get_task(t.name).token_length(m * t.train_length)
                        for t in self.tasks for m in self.eval_multipliers)
        for name, need in (("train_tokens", need_train), ("eval_tokens", need_eval)):
            have = getattr(self, name)
            if have is None:
                object.__setattr__(self, name, need)
            elif have < need:
                raise ValueError(f"{name}={have} is shorter than the suite needs ({need})")

    def select(self, tasks=None, n_seeds=None) -> "Suite":
        out = self
        if tasks:
            known = {t.name: t for t in self.tasks}
            for t in tasks:
                if t not in known:
                    close = difflib.get_close_matches(t, list(known), n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise ValueError(f"task {t!r} is not in suite {self.name!r}{hint}; "
                                     f"it has {list(known)}")
            out = dataclasses.replace(out, tasks=tuple(known[t] for t in tasks),
                                      controls=tuple(c for c in out.controls if c.task in tasks))
        if n_seeds is not None:
            out = dataclasses.replace(out, n_seeds=n_seeds)
        return out

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SUITES: dict[str, Suite] = {
    # Runs end to end on 2 shared CPU cores in minutes: the cheapest clean separation (parity)
    # and recall (MQAR) at tiny width and few steps. Every run of a cell trains in one vmap.
    "ci": Suite(
        name="ci",
        tasks=(TaskSpec("parity", 16), TaskSpec("mqar", 6)),
        shape=ModelShape(d_model=32, n_heads=2, n_layers=2, hybrid_pattern="GA"),
        train=TrainConfig(steps=150, batch_size=16),
        lrs=(3e-3, 1e-2), n_seeds=3, n_val=128, n_test=256,
        controls=ci_controls(ModelShape(d_model=32, n_heads=2, n_layers=2, hybrid_pattern="GA")),
        estimate="about 6-8 min on 2 shared CPU cores, controls included (measured in LOG)"),
    # Every task, 4 layers, d_model 128: one H100/H200. See LOG for the estimate.
    "full": Suite(
        name="full",
        tasks=(TaskSpec("parity", 32), TaskSpec("mod3", 32), TaskSpec("mod5", 32),
               TaskSpec("s3", 32), TaskSpec("s5", 32), TaskSpec("mqar", 16),
               TaskSpec("state_recall", 32), TaskSpec("code", 12)),
        shape=ModelShape(d_model=128, n_heads=4, n_layers=4, hybrid_pattern="GGGA"),
        train=TrainConfig(steps=2000, batch_size=64),
        lrs=(1e-3, 3e-3, 1e-2), n_seeds=3, n_val=512, n_test=1024, controls=full_controls(),
        estimate="about 21-25 min on one H200 in one process, controls included (estimated "
                 "from cells and controls run beside others; see LOG)"),
    # Test-sized: what tests/expressivity/test_suite.py runs through the CLI in seconds.
    "smoke": Suite(
        name="smoke", tasks=(TaskSpec("parity", 4), TaskSpec("s3", 3)),
        shape=ModelShape(d_model=16, n_heads=1, n_layers=2, hybrid_pattern="GA"),
        train=TrainConfig(steps=3, batch_size=4), lrs=(1e-2,), n_seeds=1,
        models=("transformer", "gdn02"), eval_multipliers=(1, 2), n_val=16, n_test=16,
        controls=(Control("parity", "gdn02", 4, ModelShape(d_model=16, n_heads=1, n_layers=2,
                                                           hybrid_pattern="GA"),
                          TrainConfig(steps=3, batch_size=4), (1e-2,), 1, "a test of the path"),),
        estimate="seconds plus compilation; for tests only"),
}
assert all(t.name in TASKS for s in SUITES.values() for t in s.tasks)


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        close = difflib.get_close_matches(name, SUITES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown suite {name!r}{hint}; known: {sorted(SUITES)}")
    return SUITES[name]


def cell_config(suite: Suite, spec: TaskSpec, model: str) -> dict:
    cfg = model_config(model, suite.shape)
    train = dataclasses.replace(suite.train, steps=spec.steps or suite.train.steps)
    return {"task": spec.name, "task_params": dataclasses.asdict(get_task(spec.name)),
            "train_length": spec.train_length, "model": model, "model_config": cfg.to_dict(),
            "embed_std": suite.shape.embed_std,
            "train": dataclasses.asdict(train), "lrs": list(suite.lrs),
            "seeds": list(range(suite.n_seeds)),
            "eval_lengths": [m * spec.train_length for m in suite.eval_multipliers],
            "n_val": suite.n_val, "n_test": suite.n_test}


def config_hash(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _pick_lr(lrs, val_runs: list[dict], run_lrs) -> float:
    def score(lr):
        runs = [v for v, l in zip(val_runs, run_lrs) if l == lr]
        acc = np.mean([r["seq_acc"] for r in runs])
        losses = [r["loss"] for r in runs if r["loss"] is not None]
        loss = np.mean(losses) if len(losses) == len(runs) else np.inf
        return (acc, -loss)
    return max(lrs, key=score)


def run_cell(suite: Suite, spec: TaskSpec, model: str, *, data: Batch | None = None,
             log_every: int = 0) -> dict:
    cell = cell_config(suite, spec, model)
    task, cfg = get_task(spec.name), model_config(model, suite.shape)
    train_cfg = TrainConfig(**cell["train"])
    if data is None:
        data = make_train_data(task, spec.train_length, train_cfg, tuple(cell["seeds"]),
                               pad_to=suite.train_tokens)
    group = train_group(cfg, task, spec.train_length, train_cfg, lrs=suite.lrs,
                        seeds=tuple(cell["seeds"]), embed_std=suite.shape.embed_std, data=data,
                        log_every=log_every)
    t0 = time.perf_counter()
    T = suite.eval_tokens
    val = evaluate(group, eval_batches(task, spec.train_length, suite.n_val, seed=VAL_SEED,
                                       pad_to=T))
    tests = {L: evaluate(group, eval_batches(task, L, suite.n_test, seed=TEST_SEED, pad_to=T))
             for L in cell["eval_lengths"]}
    runs = [{"lr": lr, "seed": s, "final_train_loss": float(group.final_loss_R[r]),
             "diverged": bool(group.diverged_R[r]), "val": val[r],
             "test": {str(L): tests[L][r] for L in cell["eval_lengths"]}}
            for r, (lr, s) in enumerate(zip(group.lrs, group.seeds))]
    best = _pick_lr(suite.lrs, val, group.lrs)
    summary = {}
    for L in cell["eval_lengths"]:
        accs = np.array([r["test"][str(L)]["seq_acc"] for r in runs if r["lr"] == best])
        summary[str(L)] = {"mean": float(accs.mean()), "std": float(accs.std()),
                           "min": float(accs.min()), "max": float(accs.max()),
                           "per_seed": accs.tolist()}
    return {"cell": cell, "cell_hash": config_hash(cell), "params": param_count(cfg).total,
            "chosen_lr": best, "summary": summary, "runs": runs,
            "train_seconds": group.seconds, "eval_seconds": time.perf_counter() - t0}


def constant_guess(suite: Suite, spec: TaskSpec) -> dict[str, dict]:
    """Chance level per evaluation length: the accuracy of always predicting the most frequent
    scored target of the test set (an untrained model can reach it, e.g. on `code`)."""
    task, out = get_task(spec.name), {}
    for m in suite.eval_multipliers:
        L = m * spec.train_length
        bs = eval_batches(task, L, suite.n_test, seed=TEST_SEED)
        scored = np.concatenate([b.targets[b.mask] for b in bs])
        guess = np.bincount(scored).argmax()
        seq = np.concatenate([np.all((b.targets == guess) | ~b.mask, axis=1) for b in bs])
        out[str(L)] = {"seq_acc": float(seq.mean()), "token_acc": float((scored == guess).mean())}
    return out


def cell_path(out: Path, spec: TaskSpec, model: str) -> Path:
    return Path(out) / "cells" / f"{spec.name}__{model}.json"


def control_suite(suite: Suite, control: Control) -> Suite:
    """The one-cell suite that trains `control` (its own shape, budget and lengths)."""
    return Suite(name=f"{suite.name}:control:{control.task}",
                 tasks=(TaskSpec(control.trained_task, control.train_length),),
                 shape=control.shape, train=control.train, lrs=control.lrs,
                 n_seeds=control.n_seeds, models=(control.model,), eval_multipliers=(1,),
                 n_val=suite.n_val, n_test=suite.n_test)


def _cell(suite: Suite, spec: TaskSpec, model: str, path: Path, data: list, log,
          log_every: int) -> dict:
    """The cell's result: read from `path` when it holds this config, else trained and written.
    `data` is a one-slot cache of the task's training batches, shared by a task's models."""
    want = config_hash(cell_config(suite, spec, model))
    if path.exists():
        done = json.loads(path.read_text())
        if done.get("cell_hash") != want:
            raise RuntimeError(
                f"{path} was written under a different cell config "
                f"(hash {done.get('cell_hash')} != {want}); use a fresh --out directory "
                f"or delete that file")
        log(f"[skip] {spec.name} x {model}: done")
        return done
    log(f"[run ] {spec.name} x {model} (L={spec.train_length}, "
        f"{len(suite.lrs)} lrs x {suite.n_seeds} seeds)")
    if not data:
        t0 = time.perf_counter()
        cell = cell_config(suite, spec, model)
        data.append(make_train_data(get_task(spec.name), spec.train_length,
                                    TrainConfig(**cell["train"]), tuple(cell["seeds"]),
                                    pad_to=suite.train_tokens))
        log(f"       training data {data[0].inputs.shape} built in "
            f"{time.perf_counter() - t0:.1f}s")
    res = run_cell(suite, spec, model, data=data[0], log_every=log_every)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=1))
    os.replace(tmp, path)
    accs = "  ".join(f"{L}: {s['mean']:.2f}±{s['std']:.2f}" for L, s in res["summary"].items())
    log(f"       lr={res['chosen_lr']:g}  {accs}  ({res['train_seconds']:.0f}s train, "
        f"{res['eval_seconds']:.0f}s eval)")
    return res


def run_suite(suite: Suite, out: Path, *, log=print, log_every: int = 0) -> list[dict]:
    """Run every missing cell of `suite` under `out`; return all cell results in suite order."""
    out = Path(out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    results = []
    for spec in suite.tasks:
        data: list = []  # built at the task's first missing cell, shared by its models
        for model in suite.models:
            results.append(_cell(suite, spec, model, cell_path(out, spec, model), data, log,
                                 log_every))
    return results


def run_controls(suite: Suite, out: Path, *, log=print, log_every: int = 0) -> list[dict]:
    """Run every missing positive control of `suite` under OUT/controls/; return each one's
    verdict (controls.verdict) with its cell, in suite order."""
    out = Path(out)
    verdicts = []
    for control in suite.controls:
        csuite = control_suite(suite, control)
        spec = csuite.tasks[0]
        path = out / "controls" / f"{control.task}__{control.model}.json"
        log(f"[ctrl] {control.task}: {control.model} on {control.trained_task} "
            f"(L={control.train_length})")
        cell = _cell(csuite, spec, control.model, path, [], log, log_every)
        v = verdict(control, cell)
        log(f"       best seed {v['best_seed_acc']:.2f} -> "
            f"{'verified' if v['passed'] else 'PIPELINE UNVERIFIED'}")
        verdicts.append({**v, "cell": cell})
    return verdicts
