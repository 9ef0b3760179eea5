"""Two real processes on loopback (jax.distributed with CPU devices and gloo collectives) train
the same run as one process does, each reading only its half of every batch."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO, xla_flags
from tests.helpers.training import (CHILD_TRAIN, build_tiny_store, cache_dir, child_train,
                                    jax_cache_env, tiny_overrides, train_losses)

STEPS = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path_factory, tmp_path):
    store = build_tiny_store(tmp_path_factory.mktemp("data") / "store")
    cache = jax_cache_env(cache_dir(tmp_path_factory))
    extra = {"train.tokens": STEPS * 256, "checkpoint.interval_steps": 2}
    child_train([("transformer", tiny_overrides(store, tmp_path / "single", **extra), None)],
                devices=2, env=cache)

    port, procs = free_port(), []
    for rank in range(2):
        overrides = tiny_overrides(store, tmp_path / "pair", **extra) + [
            f"distributed.coordinator=127.0.0.1:{port}", "distributed.num_processes=2",
            f"distributed.process_id={rank}"]
        env = {**os.environ, **cache, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
               "XLA_FLAGS": xla_flags(1)}
        procs.append(subprocess.Popen(
            [sys.executable, "-c", CHILD_TRAIN, json.dumps([["transformer", overrides, None]])],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=300))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-5000:]
    summaries = [json.loads(next(ln for ln in out.splitlines() if ln.startswith("SUMMARY "))[8:])
                 for out, _ in outputs]
    assert all(s["status"] == "completed" and s["steps"] == STEPS for s in summaries)

    meta = json.loads((tmp_path / "pair" / "run_meta.json").read_text())
    assert meta["devices"]["process_count"] == 2 and meta["distributed"]["mode"] == "explicit"
    assert meta["mesh"] == {"data": 2, "fsdp": 1, "tensor": 1}
    single, pair = train_losses(tmp_path / "single"), train_losses(tmp_path / "pair")
    assert sorted(pair) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([pair[s] for s in sorted(pair)],
                               [single[s] for s in sorted(single)], rtol=2e-5)
    # both processes agree on the scaling-point evaluation
    assert summaries[0]["scaling_points"] == summaries[1]["scaling_points"]
