"""Multi-process start-up: `jax.distributed.initialize` when the run spans several processes.

A run is multi-process when any of these says so (checked in this order):
  1. explicit settings: `distributed.coordinator`, `.num_processes`, `.process_id` (or the
     `--coordinator/--num-processes/--process-id` flags of `hybrid-jax train`), all three;
  2. SLURM with more than one task (SLURM_NTASKS / SLURM_STEP_NUM_TASKS > 1);
  3. a Cloud TPU pod slice with more than one worker (TPU_WORKER_HOSTNAMES lists several, or
     MEGASCALE_NUM_SLICES > 1).
In cases 2 and 3 jax reads the coordinator and ranks from the environment itself. Otherwise the
run is one process and nothing is initialised.

Multi-process on CPU devices (tests, laptops) needs a cross-process collectives backend; jax
0.11's CPU client has none by default, so `jax_cpu_collectives_implementation` is set to
`distributed.cpu_collectives` ("gloo") first, whatever the platform (it only configures
the CPU client). It must happen before any backend is created.
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax

from hybrid_jax.config import ConfigError


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """The `distributed` section of a run config; empty/None fields are taken from the
    environment (SLURM, TPU pods) or mean a single process."""

    coordinator: str = ""             # host:port of process 0
    num_processes: int | None = None
    process_id: int | None = None
    cpu_collectives: str = "gloo"     # for multi-process runs on CPU devices

    def __post_init__(self):
        n = self.num_processes
        if n is not None and (isinstance(n, bool) or not isinstance(n, (int, float))
                              or not 0 < n < math.inf):
            raise ConfigError(f"distributed.num_processes: must be a positive finite number, "
                              f"got {n!r}")
        if self.process_id is not None and self.process_id < 0:
            raise ConfigError(f"distributed.process_id: must be >= 0, got {self.process_id}")


def detect(cfg: DistributedConfig, environ: dict[str, str] | None = None) -> str | None:
    """Why this run is multi-process ("explicit", "slurm", "tpu-pod"), or None."""
    env = os.environ if environ is None else environ
    explicit = (cfg.coordinator, cfg.num_processes, cfg.process_id)
    if any(v not in ("", None) for v in explicit):
        if any(v in ("", None) for v in explicit):
            raise ValueError("distributed: coordinator, num_processes and process_id must be "
                             f"given together, got {explicit}")
        if not 0 <= cfg.process_id < cfg.num_processes:
            raise ValueError(f"distributed.process_id={cfg.process_id} outside "
                             f"[0, num_processes={cfg.num_processes})")
        return "explicit" if cfg.num_processes > 1 else None
    tasks = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS")
    if env.get("SLURM_JOB_ID") and tasks and int(tasks) > 1:
        return "slurm"
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
    if len(hosts) > 1 or int(env.get("MEGASCALE_NUM_SLICES", "1") or 1) > 1:
        return "tpu-pod"
    return None


def initialize(cfg: DistributedConfig) -> dict:
    """Initialise jax.distributed if needed; returns what was done, for the run metadata."""
    if jax.distributed.is_initialized():
        return {"mode": "already-initialized", "process_index": jax.process_index(),
                "process_count": jax.process_count()}
    mode = detect(cfg)
    if mode is None:
        return {"mode": "single-process", "process_index": 0, "process_count": 1}
    # Harmless where the devices are GPUs or TPUs: it configures only the CPU client.
    jax.config.update("jax_cpu_collectives_implementation", cfg.cpu_collectives)
    if mode == "explicit":
        jax.distributed.initialize(coordinator_address=cfg.coordinator,
                                   num_processes=cfg.num_processes, process_id=cfg.process_id)
    else:
        jax.distributed.initialize()
    return {"mode": mode, "process_index": jax.process_index(),
            "process_count": jax.process_count()}

