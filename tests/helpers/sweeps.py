"""Helpers shared by the sweep tests (no tests here): a tiny byte-level text store, micro
ladders in tmp_path, and the sweep command line in a child process (or, where it trains nothing,
in this one)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

import yaml

from tests.helpers import REPO, xla_flags
from tests.helpers.training import cache_dir, jax_cache_env  # noqa: F401  (cache_dir re-exported)

# Real prose that every Python has: a few tens of KB, split into documents on blank lines.
_TEXT = ("textwrap.py", "difflib.py")


def build_micro_store(out: Path) -> Path:
    from hybrid_jax.data import build_store, load_tokenizer
    from hybrid_jax.data.sources import TextSource

    lib = Path(os.__file__).parent
    build_store(TextSource([str(lib / n) for n in _TEXT], doc_separator="blank-lines"),
                load_tokenizer("byte"), out, val_fraction=0.05, num_threads=1)
    return out


def micro_ladder(path: Path, store: Path, *, sizes: dict | None = None, ratios=(2, 4),
                 **top) -> Path:
    """A transformer-only ladder of ~5k-parameter models: each run is a few seconds."""
    ladder = {
        "name": "micro", "families": ["transformer"],
        "sizes": sizes or {"a": {"d_model": 16, "n_layers": 2, "n_heads": 2, "mlp_hidden": 32},
                           "b": {"d_model": 16, "n_layers": 2, "n_heads": 2, "mlp_hidden": 48}},
        "decay_ratios": list(ratios), "seq_len": 32,
        "model": {"vocab_size": 264, "sliding_window": 8, "compute_dtype": "float32"},
        "recipe": {"lr": 0.003, "batch_tokens": 256},
        # a checkpoint every 50 steps: a few per run (at 5, saving took most of a run's time)
        "run": {"data": {"store": str(store)}, "eval": {"max_tokens": 256},
                "checkpoint": {"interval_steps": 50}, "log": {"tensorboard": False}},
        **top}
    path.write_text(yaml.safe_dump(ladder, sort_keys=False))
    return path


def sweep_env(cache: Path) -> dict[str, str]:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
            "XLA_FLAGS": xla_flags(1),
            "CUDA_VISIBLE_DEVICES": "", **jax_cache_env(cache)}


def sweep_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "hybrid_jax.sweep.cli", *map(str, args)]


def run_sweep(env, *args, timeout=240, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(sweep_cmd(*args), env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"sweep {args} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-4000:]}")
    return proc


def sweep_here(env, *args, check=True) -> subprocess.CompletedProcess:
    """`run_sweep` in this process, with `env` as the environment for the call: for commands
    that train nothing (status, a runner with nothing to do), where a child process would spend
    about 2 s importing the CLI. A worker that such a command did start would still be a child
    process, with `env`."""
    from hybrid_jax.sweep import cli

    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ, env, clear=True), redirect_stdout(out), \
            redirect_stderr(err):
        code = cli.main([str(a) for a in args])
    if check and code != 0:
        raise AssertionError(f"sweep {args} exited {code}:\n{out.getvalue()[-4000:]}\n"
                             f"{err.getvalue()[-4000:]}")
    return subprocess.CompletedProcess(sweep_cmd(*args), code, out.getvalue(), err.getvalue())


def rows(root) -> list[dict]:
    """The sweep's rows (results.d), on a local or gs:// root."""
    from hybrid_jax.storage.results import read_rows

    return read_rows(root)


def run_dirs(root) -> list:
    from hybrid_jax.storage.paths import as_path

    return sorted(p for p in (as_path(root) / "runs").iterdir() if p.is_dir())


def lines(path) -> list[dict]:
    from hybrid_jax.storage.paths import read_text_or_none

    return [json.loads(line) for line in read_text_or_none(path).splitlines() if line.strip()]


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            out = proc.communicate()[0] if proc.stdout else ""
            raise AssertionError(f"process exited ({proc.returncode}) before {what}:\n"
                                 f"{out[-4000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")

