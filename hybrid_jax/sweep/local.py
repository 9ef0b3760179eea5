"""The local executor: each attempt is a worker process on this host, in a device slot.

A slot is a set of environment additions (which GPUs, what share of their memory); the runner
keeps at most one worker per slot. The Ray executor (ray_executor.py) has the same interface:
`slots`, `start(args, env, slot, log)` returning an attempt with `pid`, `poll()`,
`terminate()` and `wait()` (or raising ExecutorBusy), `where(slot)` and `close()`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from hybrid_jax.sweep import worker as W


class ExecutorBusy(RuntimeError):
    """An executor has no room for an attempt right now; nothing was started."""


def local_gpus() -> list[str]:
    """Local CUDA device ids: CUDA_VISIBLE_DEVICES if set, else `nvidia-smi -L`."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def device_slots(parallel: int | None) -> list[dict[str, str]]:
    """Environment additions per worker slot.

    GPUs: by default one worker per GPU. Fewer workers get disjoint groups of GPUs (data
    parallel inside each run); more workers share GPUs round-robin, each limited to its share
    of GPU memory (XLA_PYTHON_CLIENT_MEM_FRACTION): small models leave a GPU idle during their
    compilation and evaluations, which another worker's training fills. No GPU: `parallel`
    workers (default 1) sharing the host (TPU hosts: keep 1; a run uses every local chip)."""
    gpus = local_gpus()
    if not gpus:
        return [{} for _ in range(parallel or 1)]
    n = parallel or len(gpus)
    if n > len(gpus):
        share = 0.9 / -(-n // len(gpus))
        return [{"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)],
                 "XLA_PYTHON_CLIENT_MEM_FRACTION": f"{share:.2f}"} for i in range(n)]
    per = len(gpus) // n
    return [{"CUDA_VISIBLE_DEVICES": ",".join(gpus[i * per:(i + 1) * per])} for i in range(n)]


def spawn_worker(args: list[str], env: dict[str, str], log: str | Path) -> subprocess.Popen:
    """The worker `python ARGS` with `env` over this process's environment, its output appended
    to `log`; it gets SIGTERM if this process dies (worker.py: RUNNER_PID_ENV)."""
    env = {**os.environ, **env, W.RUNNER_PID_ENV: str(os.getpid())}
    Path(log).parent.mkdir(parents=True, exist_ok=True)  # on a Ray node too
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, *args], stdout=f, stderr=subprocess.STDOUT,
                                env=env)


def move_log(log: Path, target: str) -> None:
    """Append the local `log` to the object `target` (a gs:// run directory's log), then empty
    it, so that moving it again adds nothing."""
    from hybrid_jax.storage import objects

    try:
        data = log.read_bytes()
    except FileNotFoundError:
        return
    if data:
        objects.append(target, data)
        log.write_bytes(b"")


class LocalExecutor:
    def __init__(self, parallel: int | None = None):
        # No slot (parallel < 1) would leave the loop waiting forever for nothing.
        if parallel is not None and parallel < 1:
            raise ValueError(f"parallel must be a positive integer, got {parallel}")
        self.slot_envs = device_slots(parallel)
        self.slots = len(self.slot_envs)

    def start(self, args: list[str], env: dict[str, str], slot: int, log: Path,
              upload_dir: str | None = None) -> subprocess.Popen:
        """`upload_dir` is for executors whose workers run elsewhere; here the runner, on this
        host, moves the log when the attempt ends (move_log)."""
        return spawn_worker(args, {**self.slot_envs[slot], **env}, log)

    def where(self, slot: int) -> str:
        gpus = self.slot_envs[slot].get("CUDA_VISIBLE_DEVICES")
        return f"GPU {gpus}" if gpus else ""

    def close(self) -> None:
        pass
