"""The Ray executor: each attempt at a run is one unit of a Ray cluster's resources.

    hybrid-jax sweep run LADDER --executor ray [--ray-address ADDR] [--gpus-per-run G]
        [--hosts-per-run N | --tpu VERSION:TOPOLOGY]

Without an address (nor RAY_ADDRESS) Ray starts a local instance on this host; with one it
joins that cluster. The unit of an attempt:
  * one host (default): one Ray task holding G GPUs (default 1 where the cluster has GPUs),
    else one CPU;
  * N hosts: a placement group of N bundles on distinct nodes (STRICT_SPREAD), G GPUs each;
  * a TPU slice: Ray's own slice reservation, `ray.util.tpu.SlicePlacementGroup`, which takes
    the slice's `TPU-<pod type>-head` resource and then one bundle per host of that slice.
Every host of a multi-host unit runs the same worker command (worker.py), joined by
jax.distributed: the process ids are the TPU worker ids on a slice (JAX's device order needs
them), else the bundle order; the coordinator is process 0's node at a port free there. When
one host's process fails, the others are stopped and the attempt fails as a whole.

Faults. Ray retries nothing itself (max_retries=0): a lost node, a killed process or a failed
step is a failed attempt, which the runner retries up to --max-retries times, resuming from the
run's latest checkpoint. The claims and rows stay the runner's (state.py), so a killed driver
loses no row and a second driver on the same root trains no run twice. Tasks belong to their
driver: when it dies Ray ends them, and each worker gets SIGTERM (PR_SET_PDEATHSIG) and saves
a checkpoint, as under the local executor.

The workers read and write the sweep root and the token store at the same paths as the
driver: on a cluster these are a shared filesystem.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from hybrid_jax.sweep import worker as W
from hybrid_jax.sweep.local import ExecutorBusy, move_log, spawn_worker


class RayExecutorError(ValueError):
    """The cluster cannot run the requested unit; the message says why."""


@dataclasses.dataclass(frozen=True)
class Unit:
    """What one attempt holds. gpus: per host; tpu: (accelerator version, topology)."""

    gpus: int = 0
    hosts: int = 1
    tpu: tuple[str, str] | None = None

    def describe(self) -> str:
        if self.tpu:
            return f"TPU {self.tpu[0]} slice {self.tpu[1]}"
        per_host = f"{self.gpus} GPU" if self.gpus else "1 CPU"
        return per_host if self.hosts == 1 else f"{self.hosts} hosts x {per_host}"


def parse_tpu(text: str) -> tuple[str, str]:
    """'v4:2x2x2' -> ('v4', '2x2x2')."""
    m = re.fullmatch(r"(v\d+[a-z]*):(\d+(?:x\d+)+)", text.strip().lower())
    if not m:
        raise RayExecutorError(f"--tpu {text!r}: expected VERSION:TOPOLOGY, e.g. v5p:2x2x2 or "
                               "v6e:4x4")
    return m.group(1), m.group(2)


# Seconds a stopped worker gets to save its checkpoint before it is killed. The local runner
# waits as long as it takes; a multi-host worker whose peer died can wait forever in a
# collective (jax.distributed notices a dead peer only after its heartbeat timeout).
STOP_GRACE_ENV = "HYBRID_JAX_SWEEP_STOP_GRACE_S"
DEFAULT_STOP_GRACE_S = 300.0
# How long a multi-host attempt waits for its placement before the runner tries again later:
# well under the claims' stale_after, since the runner's loop (and its heartbeats) waits too.
RESERVE_TIMEOUT_S = 60.0


def _worker_task(args: list[str], env: dict[str, str], log: str, upload_to: str | None) -> int:
    """Runs on a cluster node: the worker process, as the local executor starts it; its exit
    status is the task's result. With `upload_to` (a gs:// run directory's log object) the log,
    written on this node, is appended there when the worker ends."""
    grace = float(env.get(STOP_GRACE_ENV, os.environ.get(STOP_GRACE_ENV,
                                                         DEFAULT_STOP_GRACE_S)))
    proc = spawn_worker(args, env, log)
    try:
        # Polled, not proc.wait(): ray.cancel interrupts this thread only between bytecodes,
        # which a blocking wait never reaches.
        while proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:  # ray.cancel: stop the worker as the local runner does
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    rc = proc.wait()
    if upload_to is not None:
        move_log(Path(log), upload_to)
    return rc


def _probe_task() -> tuple[str, int | None, int]:
    """(node address, TPU worker id or None, a port free on that node)."""
    import ray
    from ray._private.accelerators.tpu import TPUAcceleratorManager

    worker_id = None
    if os.environ.get("TPU_WORKER_ID") or os.environ.get("TPU_NAME"):
        worker_id = TPUAcceleratorManager.get_current_node_tpu_worker_id()
    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return ray.util.get_node_ip_address(), worker_id, port


class RayAttempt:
    """One attempt: a task per host. `pid` is None: no process of it is on the driver's host."""

    pid = None

    def __init__(self, refs: list, placement: Any = None):
        self.refs, self.placement = refs, placement
        self.error: str | None = None
        self._rc: int | None = None

    def _outcome(self, ref) -> int:
        import ray

        try:
            return int(ray.get(ref))
        except ray.exceptions.TaskCancelledError:
            return W.EXIT_INTERRUPTED
        except ray.exceptions.RayError as e:  # a lost node, a killed task process, ...
            self.error = self.error or f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            return W.EXIT_FAILED

    def poll(self) -> int | None:
        import ray

        if self._rc is not None:
            return self._rc
        done, running = ray.wait(self.refs, num_returns=len(self.refs), timeout=0)
        codes = [self._outcome(r) for r in done]
        if running and not any(codes):
            return None
        if running:  # one host failed: the others would wait for it in a collective forever
            self.terminate()
            codes += [self._outcome(r) for r in running]
        # process 0 reports the run; any failure elsewhere fails the attempt
        failed = [c for c in codes if c not in (W.EXIT_OK, W.EXIT_INTERRUPTED)]
        self._rc = failed[0] if failed else max(codes)
        self._release()
        return self._rc

    def terminate(self) -> None:
        import ray

        for ref in self.refs:
            ray.cancel(ref, force=False)  # the task sends its worker SIGTERM

    def wait(self) -> int:
        import ray

        ray.wait(self.refs, num_returns=len(self.refs))
        return self.poll()

    def _release(self) -> None:
        if self.placement is not None:
            self.placement()
            self.placement = None


class RayExecutor:
    def __init__(self, unit: Unit, *, address: str | None = None, parallel: int | None = None):
        try:
            import ray
        except ImportError:
            raise RayExecutorError("the Ray executor needs Ray: pip install -e '.[cluster]'"
                                   ) from None
        if parallel is not None and parallel < 1:
            raise RayExecutorError(f"parallel must be a positive integer, got {parallel}")
        self.unit = unit
        self._own = not ray.is_initialized()
        if self._own:
            address = address or os.environ.get("RAY_ADDRESS") or None
            _check_reachable(address)
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = f"the Ray cluster at {address}" if address else "a local Ray instance"
                raise RayExecutorError(f"cannot start or join {where}: "
                                       f"{str(e).splitlines()[0]}") from None
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if unit.tpu is None and unit.gpus == 0 and gpus:
            self.unit = unit = dataclasses.replace(unit, gpus=1)
        capacity = self._capacity(unit, resources)
        if capacity < 1:
            raise RayExecutorError(f"the cluster ({_summary(resources)}) has no room for one "
                                   f"run of {unit.describe()}")
        # CPU-only clusters default to one run at a time, as the local executor does: a run
        # uses every core of its host.
        self.slots = parallel or (capacity if unit.gpus or unit.tpu or unit.hosts > 1 else 1)
        self._task = ray.remote(_worker_task)
        self._probe = ray.remote(num_cpus=0)(_probe_task)

    @staticmethod
    def _capacity(unit: Unit, resources: dict) -> int:
        if unit.tpu is not None:
            from ray._private.accelerators.tpu import infer_tpu_pod_type_from_topology

            pod = infer_tpu_pod_type_from_topology(unit.tpu[1], "TPU-" + unit.tpu[0].upper())
            if pod is None:
                raise RayExecutorError(f"--tpu {unit.tpu[0]}:{unit.tpu[1]}: Ray knows no pod "
                                       "type of that version and topology")
            return int(resources.get(f"TPU-{pod}-head", 0))
        if unit.gpus:
            return int(resources.get("GPU", 0)) // (unit.gpus * unit.hosts)
        return int(resources.get("CPU", 0)) // unit.hosts

    def where(self, slot: int) -> str:
        return f"ray: {self.unit.describe()}"

    def start(self, args: list[str], env: dict[str, str], slot: int, log: Path,
              upload_dir: str | None = None) -> RayAttempt:
        u = self.unit

        def upload(path: Path) -> str | None:
            return None if upload_dir is None else f"{upload_dir}/{path.name}"

        if u.tpu is None and u.hosts == 1:
            opts = {"num_gpus": u.gpus} if u.gpus else {"num_cpus": 1}
            return RayAttempt([self._task.options(max_retries=0, **opts)
                               .remote(args, env, str(log), upload(log))])
        bundles, pg, release = self._reserve()
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        def on(i: int):
            return PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i)

        import ray

        probes = ray.get([self._probe.options(scheduling_strategy=on(i)).remote()
                          for i in range(len(bundles))])
        # process ids: TPU worker ids where the nodes have them, else bundle order
        order = (sorted(range(len(probes)), key=lambda i: probes[i][1])
                 if all(p[1] is not None for p in probes) else list(range(len(probes))))
        ip, _, port = probes[order[0]]
        refs = []
        for rank, i in enumerate(order):
            cpus = bundles[i].get("CPU", 0)
            resources = {k: v for k, v in bundles[i].items() if k not in ("CPU", "GPU")}
            dist = ["--coordinator", f"{ip}:{port}", "--num-processes", str(len(order)),
                    "--process-id", str(rank)]
            host_log = log if rank == 0 else log.with_name(f"{log.stem}.p{rank}{log.suffix}")
            refs.append(self._task.options(
                max_retries=0, num_cpus=cpus, num_gpus=bundles[i].get("GPU", 0),
                resources=resources, scheduling_strategy=on(i))
                .remote(args + dist, env, str(host_log), upload(host_log)))
        return RayAttempt(refs, release)

    def _reserve(self):
        """(bundles, placement group, release function) for one multi-host attempt."""
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group

        u = self.unit
        if u.tpu is not None:
            from ray.util.tpu import SlicePlacementGroup

            try:
                handle = SlicePlacementGroup(topology=u.tpu[1], accelerator_version=u.tpu[0],
                                             head_reservation_timeout_s=RESERVE_TIMEOUT_S)
            except TimeoutError:  # every slice is busy (another driver's runs, say)
                raise ExecutorBusy(f"no free {u.describe()} within {RESERVE_TIMEOUT_S:.0f} s"
                                   ) from None
            pg = handle.placement_group
            ray.get(pg.ready())
            return [dict(handle.bundle_resources)] * handle.num_hosts, pg, handle.shutdown
        bundle = {"CPU": 1, **({"GPU": u.gpus} if u.gpus else {})}
        pg = placement_group([dict(bundle) for _ in range(u.hosts)], strategy="STRICT_SPREAD")
        ready, _ = ray.wait([pg.ready()], timeout=RESERVE_TIMEOUT_S)
        if not ready:
            remove_placement_group(pg)
            raise ExecutorBusy(f"no {u.describe()} free within {RESERVE_TIMEOUT_S:.0f} s")
        return [dict(bundle)] * u.hosts, pg, lambda: remove_placement_group(pg)

    def close(self) -> None:
        import ray

        if self._own and ray.is_initialized():
            ray.shutdown()


def _check_reachable(address: str | None) -> None:
    """A HOST:PORT that nothing answers on is refused at once: ray.init retries it for minutes."""
    m = re.fullmatch(r"([^:/]+):(\d+)", address or "")
    if not m:
        return  # a local instance, "auto" or a ray:// client address: Ray checks those itself
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=10).close()
    except OSError as e:
        raise RayExecutorError(f"cannot start or join the Ray cluster at {address}: "
                               f"{e.strerror or e}") from None


def _summary(resources: dict) -> str:
    keys = ("CPU", "GPU", "TPU")
    parts = [f"{int(resources[k])} {k}" for k in keys if resources.get(k)]
    parts += [k for k in resources if k.startswith("TPU-") and k.endswith("-head")]
    return ", ".join(parts) or "no resources"
