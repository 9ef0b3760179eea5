"""Helpers shared by the training tests (no tests here): a tiny real token store, tiny run
configs, and running training in a child process with N fake CPU devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from tests.helpers import REPO, xla_flags


# Real English prose shipped with CPython: stable text, no network.
_STDLIB_TEXT = ("textwrap.py", "difflib.py", "argparse.py", "pathlib/__init__.py", "pathlib.py",
                "typing.py", "dataclasses.py")


def tiny_store_inputs() -> list[str]:
    lib = Path(os.__file__).parent
    return [str(lib / name) for name in _STDLIB_TEXT if (lib / name).is_file()]


def build_tiny_store(out: Path, tokenizer=None) -> Path:
    """A store from a few stdlib modules, split on blank lines; byte vocabulary (259) unless
    `tokenizer` is given."""
    from hybrid_jax.data import build_store, load_tokenizer
    from hybrid_jax.data.sources import TextSource

    build_store(TextSource(tiny_store_inputs(), doc_separator="blank-lines"),
                tokenizer or load_tokenizer("byte"), out, val_fraction=0.05, num_threads=1)
    return out


def tiny_overrides(store: Path, run_dir: Path, family: str = "transformer", **extra) -> list[str]:
    """Overrides for a seconds-long CPU run: tiny model, batch 8 x seq 32, fp32."""
    base = {
        "data.store": str(store), "train.run_dir": str(run_dir), "train.global_batch": 8,
        "train.seq_len": 32, "train.tokens": 8 * 32 * 12, "optim.lr": 3e-3,
        "schedule.warmup_tokens": 8 * 32 * 2, "model.n_layers": 2, "model.d_model": 32,
        "model.n_heads": 2, "model.mlp_hidden": 64, "model.vocab_size": 264,
        "eval.max_tokens": 512, "log.tensorboard": False, "checkpoint.async_save": True,
    }
    base.update(extra)
    return [f"{k}={json.dumps(v) if isinstance(v, (list, bool)) or v is None else v}"
            for k, v in base.items()]


def tiny_config(store: Path, run_dir: Path, family: str = "transformer", **extra):
    from hybrid_jax.train.config import load_config

    return load_config(f"{family}_tiny", tiny_overrides(store, run_dir, family, **extra))


class NanAtStep:
    """The run's token store, with the loss mask of the batch that produces step `step` (1-based,
    as logged) all NaN: that step's loss and gradients are NaN, as in a diverging run."""

    def __init__(self, cfg, step: int):
        from hybrid_jax.train.source import StoreSource

        self.store = StoreSource(cfg.data.store, seed=cfg.data.seed,
                                 global_batch=cfg.train.global_batch, seq_len=cfg.train.seq_len)
        self.step = step

    def __getattr__(self, name):
        return getattr(self.store, name)

    def batch(self, step: int, dp_rank: int, dp_size: int) -> dict[str, np.ndarray]:
        batch = self.store.batch(step, dp_rank, dp_size)
        if step + 1 == self.step:
            batch = {**batch, "loss_mask": np.full_like(batch["loss_mask"], np.nan)}
        return batch


def run_python(code: str, *args: str, devices: int = 1, timeout: float = 300,
               env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run `code` (with sys.argv[1:] = args) in a fresh interpreter with `devices` fake CPU
    devices."""
    full_env = {**os.environ, "JAX_PLATFORMS": "cpu",
                "XLA_FLAGS": xla_flags(devices),
                "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=REPO)
    if check and proc.returncode:
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc


def train_losses(run_dir: Path) -> dict[int, float]:
    from hybrid_jax.train.metrics import read_metrics

    return {r["step"]: r["loss"] for r in read_metrics(run_dir)}


def final_params(run_dir: Path) -> dict[str, np.ndarray]:
    """The latest checkpoint's params, flattened to {path: array}, read on one CPU device."""
    import jax
    import orbax.checkpoint as ocp

    steps = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    with ocp.StandardCheckpointer() as ckptr:
        state = ckptr.restore(run_dir / "checkpoints" / str(steps[-1]) / "state")
    flat = jax.tree_util.tree_flatten_with_path(state["params"])[0]
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}


def jax_cache_env(cache_dir: Path) -> dict[str, str]:
    """A persistent compilation cache shared by the child processes of one test session: the
    same program (a resumed run, the other process of a pair) compiles once."""
    return {"JAX_COMPILATION_CACHE_DIR": str(cache_dir),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


# Trains in a child process: argv[1] is a JSON list of runs [family, overrides, sigterm_at_batch],
# trained one after the other. With sigterm_at_batch = k the child sends itself SIGTERM while
# fetching batch k: a deterministic "preemption" that stops the run at step k + 1.
CHILD_TRAIN = """
import json, os, signal, sys
from hybrid_jax.train import load_config, train
from hybrid_jax.train.source import StoreSource

for family, overrides, sigterm_at in json.loads(sys.argv[1]):
    cfg = load_config(f"{family}_tiny", overrides)
    source = StoreSource(cfg.data.store, seed=cfg.data.seed, global_batch=cfg.train.global_batch,
                         seq_len=cfg.train.seq_len)
    if sigterm_at is not None:
        def preempting_batch(step, dp_rank, dp_size, batch=source.batch, at=sigterm_at):
            if step == at:
                os.kill(os.getpid(), signal.SIGTERM)
            return batch(step, dp_rank, dp_size)
        source.batch = preempting_batch
    summary = train(cfg, source=source, verbose=False)
    print("SUMMARY " + json.dumps(summary), flush=True)
"""


def child_train(runs: list[tuple[str, list[str], int | None]], *, devices: int = 1,
                env: dict | None = None, timeout: float = 400, with_stderr: bool = False):
    """Train `runs` (family, overrides, sigterm_at_batch) in one child process with `devices`
    fake CPU devices; returns their summaries (and the child's stderr if with_stderr)."""
    full_env = {**os.environ, "JAX_PLATFORMS": "cpu",
                "XLA_FLAGS": xla_flags(devices),
                "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.run([sys.executable, "-c", CHILD_TRAIN, json.dumps(runs)],
                          capture_output=True, text=True, timeout=timeout, env=full_env, cwd=REPO)
    if proc.returncode:
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-6000:]}")
    summaries = [json.loads(line[len("SUMMARY "):]) for line in proc.stdout.splitlines()
                 if line.startswith("SUMMARY ")]
    return (summaries, proc.stderr) if with_stderr else summaries


def cache_dir(tmp_path_factory) -> Path:
    """One compilation cache for all xdist workers of a session: conftest.py's, which in-process
    compiles use too, where it set one."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "jax-cache"


def child_env(tmp_path_factory) -> dict[str, str]:
    """The environment of a training child process: one fake CPU device, this checkout on the
    path, the session's shared compilation cache."""
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
            "XLA_FLAGS": xla_flags(1),
            **jax_cache_env(cache_dir(tmp_path_factory))}
