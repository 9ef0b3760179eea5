"""The Ray executor on real Ray clusters on loopback (the [cluster] extra):

* a local Ray instance started by the driver, with the sweep's root on gs:// (the emulator),
  gives the local executor's rows, bit for bit;
* a cluster of two fake TPU v4 "slices" of two hosts each (Ray nodes whose environment says
  TPU_NAME / TPU_WORKER_ID, with the TPU and slice-head resources a TPU VM registers): every
  run takes a whole slice through Ray's SlicePlacementGroup and is two processes joined by
  jax.distributed on CPU; one host's process is killed mid-run, the attempt fails as a whole,
  is retried and resumes from its checkpoint; the driver is killed and rerun; the rows are
  complete, unique, and those of one two-device process (to float rounding).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from hybrid_jax.storage.paths import read_text_or_none
from tests.helpers import REPO, xla_flags
from tests.helpers.gcs import EMULATOR_ENV, gcs_emulator, gs_prefix  # noqa: F401 (fixture)
from tests.helpers.sweeps import rows, run_dirs, run_sweep, sweep_cmd, sweep_env
from tests.helpers.training import build_tiny_store, cache_dir

ray = pytest.importorskip("ray", reason="needs the [cluster] extra: pip install -e .[cluster]")


@pytest.mark.parametrize("argv, message", [
    (["--tpu", "v4:2x2x2"], "--tpu need --executor ray"),
    (["--executor", "ray", "--tpu", "v4-16"], "expected VERSION:TOPOLOGY"),
    (["--executor", "ray", "--tpu", "v4:2x2x2", "--gpus-per-run", "2"], "takes a whole slice"),
    (["--executor", "ray", "--ray-address", "127.0.0.1:1"], "cannot start or join the Ray"),
    (["--executor", "ray", "--gpus-per-run", "0"], "--gpus-per-run must be a positive"),
])
def test_bad_executor_arguments_are_refused_in_one_line(tmp_path, store, argv, message):
    ladder = smoke_ladder(tmp_path / "smoke.yaml", store)
    proc = run_sweep({**os.environ, "JAX_PLATFORMS": "cpu", "RAY_ADDRESS": ""}, "run", ladder,
                     "--root", tmp_path / "root", *argv, check=False, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "root").exists()  # refused before anything was written


def smoke_ladder(path: Path, store: Path, checkpoint_every: int | None = None) -> Path:
    """The shipped smoke ladder on the tiny test store, its model at 2 layers rather than 4:
    the executors do not care about the model, and a run then compiles in less time and has
    half the steps (the recipe ties D to N: 41 steps, not 82)."""
    ladder = yaml.safe_load((REPO / "experiments/ladders/smoke.yaml").read_text())
    ladder["run"]["data"]["store"] = str(store)
    for size in ladder["sizes"].values():
        size["n_layers"] = 2
    if checkpoint_every is not None:
        ladder["run"]["checkpoint"]["interval_steps"] = checkpoint_every
    path.write_text(yaml.safe_dump(ladder, sort_keys=False))
    return path


def by_key(root) -> dict:
    return {(r["run_id"], r["tokens"]): r for r in rows(root)}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_tiny_store(tmp_path_factory.mktemp("data") / "store")


@pytest.mark.slow
def test_local_ray_instance_on_a_gs_root_gives_the_local_executors_rows(
        tmp_path, tmp_path_factory, store, gcs_emulator):
    """The Ray run keeps its whole sweep in a bucket (the emulator): rows, markers, run
    directories with checkpoints and metrics, the workers' logs; status and a second runner
    (the local executor) read it there."""
    ladder = smoke_ladder(tmp_path / "smoke.yaml", store)
    env = {**sweep_env(cache_dir(tmp_path_factory)),
           **{k: os.environ[k] for k in EMULATOR_ENV}}
    only = ["--only", "transformer"]
    # the local executor's run trains while the Ray driver starts its instance
    local_run = start_sweep(env, tmp_path / "local.log", "run", ladder, "--root",
                            tmp_path / "local", *only)
    root = gs_prefix(gcs_emulator.bucket, "ray-sweep")
    try:
        out = run_sweep(env, "run", ladder, "--root", root, *only, "--executor", "ray")
        finish(local_run, tmp_path / "local.log")
    finally:
        if local_run.poll() is None:
            local_run.kill()
    assert "ray: 1 CPU" in out.stdout
    local, remote = by_key(tmp_path / "local"), by_key(root)
    assert len(local) == 2 and local.keys() == remote.keys()
    for key in local:
        assert local[key]["val"] == remote[key]["val"]
    exported = read_text_or_none(f"{root}/results.jsonl").splitlines()
    assert sorted(json.loads(x)["tokens"] for x in exported) == sorted(t for _, t in local)
    (run,) = run_dirs(root)
    assert "[sweep] run" in read_text_or_none(run / "worker.log")  # moved by the Ray task
    assert read_text_or_none(run / "done.json") and list((run / "checkpoints").iterdir())
    status = run_sweep(env, "status", ladder, "--root", root, *only).stdout
    assert "1 runs: 1 done; 2/2 result rows" in status
    assert "0 to do" in run_sweep(env, "run", ladder, "--root", root, *only).stdout


def _fake_tpu_cluster(env: dict):
    """Head (no TPU) plus 2 slices x 2 hosts, each host a Ray node with TPU: 4."""
    from ray.cluster_utils import Cluster

    saved = dict(os.environ)
    try:
        os.environ.update(env)
        cluster = Cluster(initialize_head=True, connect=False,
                          head_node_args={"num_cpus": 1, "include_dashboard": False})
        for name in ("slice-a", "slice-b"):
            for worker in range(2):
                os.environ.update(TPU_NAME=name, TPU_WORKER_ID=str(worker))
                resources = {"TPU": 4, **({"TPU-v4-16-head": 1} if worker == 0 else {})}
                labels = {"ray.io/tpu-slice-name": name, "ray.io/tpu-worker-id": str(worker),
                          "ray.io/tpu-pod-type": "v4-16"}
                cluster.add_node(num_cpus=1, resources=resources, labels=labels)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return cluster


def start_sweep(env, log: Path, *args) -> subprocess.Popen:
    """The sweep command line in a child process that this test does not wait for yet; its
    output goes to `log`."""
    with open(log, "w") as out:
        return subprocess.Popen(sweep_cmd(*args), env=env, cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    """Wait for a start_sweep process; it must succeed."""
    proc.wait(timeout=timeout)
    assert proc.returncode == 0, f"sweep exited {proc.returncode}:\n{log.read_text()[-4000:]}"


def _process(run_dir: Path, rank: int) -> int | None:
    """pid of the worker process `rank` of the run in `run_dir`, if it is running."""
    out = subprocess.run(["pgrep", "-f", f"{run_dir}/spec.json.*--process-id {rank}"],
                         capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else None


def _wait(predicate, timeout: float, what: str):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.slow
def test_tpu_slices_run_two_processes_and_survive_a_lost_host_and_driver(
        tmp_path, tmp_path_factory, store):
    # a checkpoint early in the run (step 5 of 41), so that a kill after it lands well before
    # the run ends
    ladder = smoke_ladder(tmp_path / "smoke.yaml", store, checkpoint_every=5)
    # one run (2 processes on a 2-core CI machine already); the transformer compiles in a
    # fraction of the GDN models' time, and the executor does not care which family it runs
    only = ["--only", "transformer"]
    env = sweep_env(cache_dir(tmp_path_factory))
    # reference: each run as one process of two CPU devices (data parallel 2, like 2 x 1),
    # trained while the cluster starts (which mostly waits) and the driver's run begins
    reference = start_sweep({**env, "XLA_FLAGS": xla_flags(2)}, tmp_path / "ref.log", "run",
                            ladder, "--root", tmp_path / "ref", *only)

    node_env = {k: env[k] for k in ("JAX_PLATFORMS", "PYTHONPATH", "XLA_FLAGS",
                                    "CUDA_VISIBLE_DEVICES") if k in env}
    node_env.update({k: v for k, v in env.items() if k.startswith("JAX_")},
                    HYBRID_JAX_SWEEP_STOP_GRACE_S="5")
    root = tmp_path / "ray"
    cluster = driver = None
    try:
        cluster = _fake_tpu_cluster(node_env)
        args = sweep_cmd("run", ladder, "--root", root, *only, "--executor", "ray",
                         "--ray-address", cluster.address, "--tpu", "v4:2x2x2")
        driver = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        # Kill host 1 of the run once it has a checkpoint to resume from.
        run = _wait(lambda: next((root / "runs").glob("transformer-*"), None)
                    if (root / "runs").exists() else None, 60, "the run directory")
        _wait(lambda: list(run.glob("checkpoints/*/checksums.json")), 400,
              "a finished checkpoint")
        os.kill(_wait(lambda: _process(run, 1), 30, "host 1 of the run"), signal.SIGKILL)
        # Then kill the driver while the retry is under way, and run it again.
        _wait(lambda: '"attempt": 2' in (run / "attempts.jsonl").read_text(), 300,
              "the run's second attempt")
        driver.send_signal(signal.SIGKILL)
        first_out = driver.communicate(timeout=60)[0]
        again = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True,
                               timeout=600)
        assert again.returncode == 0, first_out[-3000:] + again.stdout[-3000:] + again.stderr[
            -3000:]
        finish(reference, tmp_path / "ref.log")
    finally:
        for proc in (driver, reference):
            if proc is not None and proc.poll() is None:
                proc.kill()
        if cluster is not None:
            cluster.shutdown()

    ref, got = by_key(tmp_path / "ref"), by_key(root)
    lines = (root / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(got) == len(ref) == 2  # complete and unique
    for key in ref:
        for name, val in ref[key]["val"].items():
            np.testing.assert_allclose(got[key]["val"][name]["loss"], val["loss"], rtol=1e-4)
    events = [json.loads(x) for x in (run / "attempts.jsonl").read_text().splitlines()]
    outcomes = [e["outcome"] for e in events if e["event"] == "exit"]
    assert outcomes[0] == "failed", events
    trained = [e for e in events if e["event"] == "train"]
    assert trained and trained[-1]["resumed_from_step"], events  # resumed, not restarted
    meta = json.loads((run / "run_meta.json").read_text())
    assert meta["devices"]["process_count"] == 2
