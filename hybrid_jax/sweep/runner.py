"""The sweep runner: claim runs, train each in a worker process, retry, record, go on.

One runner is one single-threaded loop over "slots" (a GPU or group of GPUs each, or N CPU
workers): it starts a worker (hybrid_jax/sweep/worker.py) in each free slot for the next run
it can claim (longest first: with several slots the last to finish is then a short run), and
polls. Runs already done or failed are skipped; a run whose lock another live runner holds is
waited for (and taken over if that runner dies), so any number of runners may work on one root
at once. A failed attempt is retried up to `max_retries` times, then the run gets failed.json
with the last traceback and the sweep goes on. A run past data.max_epochs is refused before it
starts (failed.json, kind "refused", the missing-token message; checked again by every new
runner, since the store may have grown). Retries and resumes reuse a persistent JAX
compilation cache in {root}/jax_cache (JAX_COMPILATION_CACHE_DIR, unless already set).

SIGTERM / SIGINT: the workers get SIGTERM, save a checkpoint and exit; the runner releases its
locks and exits 75. SIGKILL: the workers get SIGTERM from the kernel (PR_SET_PDEATHSIG) and do
the same; their locks go stale once both processes are gone, and the next runner resumes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from etils import epath

from hybrid_jax.flops import train_flops
from hybrid_jax.storage import objects, results
from hybrid_jax.storage.claims import Claim
from hybrid_jax.storage.paths import absolute
from hybrid_jax.sweep import worker as W
from hybrid_jax.sweep.ladder import InvalidRun, RunSpec
from hybrid_jax.sweep.local import (ExecutorBusy, LocalExecutor, device_slots, local_gpus,
                                    move_log)
from hybrid_jax.sweep.root import Sweep
from hybrid_jax.sweep.state import HOST, append_line, read_json, read_lines, write_json

REPO = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class _Active:
    spec: RunSpec
    proc: Any  # subprocess.Popen, or the Ray executor's attempt: pid, poll, terminate, wait
    lock: Claim
    attempt: int
    slot: int
    t0: float
    lost: bool = False  # the claim was taken by another runner
    beat: float = 0.0   # when the claim was last rewritten


class Runner:
    """`executor`: where attempts run (local.LocalExecutor, the default with `parallel` slots,
    or ray_executor.RayExecutor)."""

    def __init__(self, sweep: Sweep, *, max_retries: int = 2, parallel: int | None = None,
                 poll_s: float = 1.0, retry_failed: bool = False, say=print, executor=None,
                 report=None, report_every: float = 60.0):
        if max_retries < 0 or not poll_s > 0:
            raise ValueError(f"max_retries must be >= 0 and poll_s > 0, got {max_retries}, "
                             f"{poll_s}")
        self.sweep, self.max_retries, self.poll_s = sweep, max_retries, poll_s
        self.executor = executor if executor is not None else LocalExecutor(parallel)
        self.retry_failed = retry_failed
        self.say = say
        # `report()`: a line on the whole sweep (status.overview), said every report_every s
        self.report, self.report_every, self._reported = report, report_every, time.time()
        self.stopping: int | None = None
        self.active: dict[int, _Active] = {}
        self._epochs_cache: dict = {}

    # ---- the loop -----------------------------------------------------------------------------
    def run(self) -> int:
        sw = self.sweep
        if not sw.remote:
            sw.root.mkdir(parents=True, exist_ok=True)
        sw.prepare()
        for bad in sw.invalid:
            self.say(f"[sweep] invalid run {bad.family}/{bad.size}: {bad.error}")
        self._reset_failures()
        # Longest first (by training FLOPs): the sweep's wall time is then close to work / slots.
        queue = sorted((s for s in sw.runs if sw.state(s) not in ("done", "failed", "refused")),
                       key=lambda s: -train_flops(s.config.model, s.config.train.seq_len,
                                                  s.config.total_tokens))
        self.say(f"[sweep] {sw.ladder.name}: {len(sw.runs)} runs, {len(queue)} to do, "
                 f"{self.executor.slots} slot(s), root {sw.root}")
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        waiting_said = False
        try:
            while True:
                self._reap(queue)
                if self.stopping is not None:
                    return self._stop()
                started = self._fill(queue)
                self._heartbeats()
                if self.report is not None and time.time() - self._reported >= self.report_every:
                    self._reported = time.time()
                    self.say(self.report())
                if not self.active and not queue:
                    break
                if not self.active and not started and not waiting_said:
                    self.say(f"[sweep] waiting for {len(queue)} run(s) held by other runners")
                    waiting_said = True
                time.sleep(self.poll_s)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.executor.close()
        return self._summary()

    def _heartbeats(self) -> None:
        """Rewrite each held claim every stale_after / 20 seconds (at most every 10 s), not every
        poll: a heartbeat is a durable write, and on GCS an object takes about one a second."""
        every = min(10.0, self.sweep.stale_after / 20)
        now = time.time()
        for a in self.active.values():
            if a.lost or now - a.beat < every:
                continue
            a.beat = now
            if not a.lock.heartbeat():
                # judged stale and taken by another runner (heartbeats were late): say so
                # once; this attempt's outcome is still recorded
                a.lost = True
                self.say(f"[sweep] lost the claim on {a.spec.run_id} to another runner")

    def _on_signal(self, signum, frame) -> None:
        self.stopping = signum

    def _fill(self, queue: list[RunSpec]) -> bool:
        started = False
        for slot in range(self.executor.slots):
            if slot in self.active:
                continue
            for spec in list(queue):
                if any(a.spec.run_id == spec.run_id for a in self.active.values()):
                    continue
                state = self.sweep.state(spec)
                if state in ("done", "failed", "refused"):
                    queue.remove(spec)
                    continue
                if state == "running":
                    continue
                if not self._fits_data(spec):
                    queue.remove(spec)
                    continue
                lock = self.sweep.lock(spec)
                if not lock.try_acquire():
                    continue
                if self.sweep.state(spec) in ("done", "failed", "refused"):  # just finished
                    lock.release()
                    queue.remove(spec)
                    continue
                if not self._start(spec, lock, slot):  # no room on the cluster now: later
                    return started
                queue.remove(spec)
                started = True
                break
        return started

    def _fits_data(self, spec: RunSpec) -> bool:
        """Refuse a run past data.max_epochs before training (failed.json, kind refused)."""
        from hybrid_jax.config import ConfigError
        from hybrid_jax.data import EpochLimitError, StoreError
        from hybrid_jax.train.source import make_source

        cfg = spec.config
        key = (json.dumps(cfg.to_dict()["data"], sort_keys=True), cfg.total_tokens,
               cfg.train.seq_len, cfg.train.global_batch)
        if key not in self._epochs_cache:
            try:
                make_source(dataclasses.replace(cfg.data, verify=False),
                            global_batch=cfg.train.global_batch, seq_len=cfg.train.seq_len
                            ).check_epochs(cfg.total_tokens, cfg.data.max_epochs)
                self._epochs_cache[key] = None
            except (EpochLimitError, StoreError, FileNotFoundError, ConfigError) as e:
                self._epochs_cache[key] = f"{type(e).__name__}: {e}"
        error = self._epochs_cache[key]
        if error is not None and not (spec.run_dir / "failed.json").exists():
            self.say(f"[sweep] refused {spec.run_id}: {error}")
            write_json(spec.run_dir / "failed.json", {"run_id": spec.run_id, "kind": "refused",
                                                      "error": error, "time": time.time()})
        return error is None

    def _start(self, spec: RunSpec, lock: Claim, slot: int) -> bool:
        attempt = attempts_started(spec.run_dir) + 1
        # Recorded before the worker exists: a runner killed with SIGKILL writes no "exit"
        # event, and the next runner must still count this attempt.
        append_line(spec.run_dir / "attempts.jsonl", {
            "event": "start", "attempt": attempt, "host": HOST, "runner_pid": os.getpid(),
            "slot": slot, "time": time.time()})
        env = {W.ATTEMPT_ENV: str(attempt), "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                             if p)}
        for key, value in (("JAX_COMPILATION_CACHE_DIR",
                            str(absolute(self.sweep.local_dir / "jax_cache"))),
                           ("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0"),
                           ("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")):
            if key not in os.environ:
                env[key] = value
        # absolute: a worker may run in another directory, or on another host
        args = ["-m", "hybrid_jax.sweep.worker", str(absolute(self.sweep.spec_path(spec))),
                str(absolute(self.sweep.root))]
        log = self.sweep.log_path(spec)
        log.parent.mkdir(parents=True, exist_ok=True)
        try:
            proc = self.executor.start(args, env, slot, log,
                                       str(spec.run_dir) if self.sweep.remote else None)
        except ExecutorBusy as e:  # nothing started: not a failure of the run
            append_line(spec.run_dir / "attempts.jsonl", {
                "event": "exit", "attempt": attempt, "outcome": "unplaced", "host": HOST,
                "runner_pid": os.getpid(), "error": str(e)})
            lock.release()
            self.say(f"[sweep] {spec.run_id} waits for resources: {e}")
            return False
        if proc.pid is not None:  # a process on this host: the lock names it (staleness)
            lock.set_worker(proc.pid)
        where = self.executor.where(slot)
        self.say(f"[sweep] start {spec.run_id} (attempt {attempt}"
                 f"{f', pid {proc.pid}' if proc.pid is not None else ''}"
                 f"{', ' + where if where else ''})")
        self.active[slot] = _Active(spec, proc, lock, attempt, slot, time.time())
        return True

    def _reap(self, queue: list[RunSpec]) -> None:
        for slot, a in list(self.active.items()):
            rc = a.proc.poll()
            if rc is None:
                continue
            del self.active[slot]
            self._finish(a, rc, queue)

    def _finish(self, a: _Active, rc: int, queue: list[RunSpec]) -> None:
        run_dir, wall = a.spec.run_dir, time.time() - a.t0
        error = read_json(run_dir / "last_error.json")
        if rc == W.EXIT_OK and (run_dir / "done.json").exists():
            outcome = "completed"
        elif rc == W.EXIT_REFUSED:
            outcome = "refused"
        elif self.stopping is not None:  # stopped by us (or by the same Ctrl-C): not a failure
            outcome = "interrupted"
        else:
            outcome = "failed"
            if error is None:  # no traceback: killed, or (Ray) its node or task process was lost
                error = {"kind": "error",
                         "message": getattr(a.proc, "error", None) or _exit_message(rc),
                         "traceback": _log_tail(self.sweep.log_path(a.spec))}
        if self.sweep.remote:
            self._upload_log(a.spec)
        append_line(run_dir / "attempts.jsonl", {
            "event": "exit", "attempt": a.attempt, "outcome": outcome, "rc": rc,
            "host": HOST, "runner_pid": os.getpid(), "worker_pid": a.proc.pid,
            "wall_s": round(wall, 3), "error": error and error.get("message")})
        failures = self._failures(a.spec)
        if outcome == "completed":
            self.sweep.export_results()
            self.say(f"[sweep] done {a.spec.run_id} in {wall:.0f} s")
        elif outcome == "interrupted":
            queue.insert(0, a.spec)
        elif outcome == "refused" or failures > self.max_retries:
            write_json(run_dir / "failed.json", {
                "run_id": a.spec.run_id, "kind": "refused" if outcome == "refused" else "error",
                "attempts": a.attempt, "failures": failures, "time": time.time(), **(error or {})})
            self.say(f"[sweep] FAILED {a.spec.run_id} after {failures} failure(s): "
                     f"{(error or {}).get('message', '')[:300]}")
        else:
            self.say(f"[sweep] attempt {a.attempt} of {a.spec.run_id} failed "
                     f"({(error or {}).get('message', '')[:200]}); retrying "
                     f"({failures}/{self.max_retries})")
            queue.append(a.spec)
        a.lock.release()

    def _upload_log(self, spec: RunSpec) -> None:
        """Append this attempt's logs written on this host to the run's worker.log objects (a
        Ray task on another node moves its own)."""
        log = self.sweep.log_path(spec)
        for local in sorted(log.parent.glob(f"{log.stem}*{log.suffix}")):
            move_log(local, str(spec.run_dir / local.name))

    def _failures(self, spec: RunSpec) -> int:
        """Failed attempts since the last reset (--retry-failed), over all runners."""
        n = 0
        for r in read_lines(spec.run_dir / "attempts.jsonl"):
            if r.get("event") == "reset":
                n = 0
            elif r.get("event") == "exit" and r.get("outcome") == "failed":
                n += 1
        return n

    def _reset_failures(self) -> None:
        """Refused runs are checked again (the store may have grown); failed runs are retried
        only with --retry-failed."""
        for spec in self.sweep.runs:
            failed = read_json(spec.run_dir / "failed.json")
            if failed and (failed.get("kind") == "refused" or self.retry_failed):
                append_line(spec.run_dir / "attempts.jsonl",
                            {"event": "reset", "time": time.time()})
                objects.delete(spec.run_dir / "failed.json")

    def _stop(self) -> int:
        self.say(f"[sweep] signal {self.stopping}: stopping {len(self.active)} worker(s), which "
                 "save a checkpoint first")
        for a in self.active.values():
            if a.proc.poll() is None:
                a.proc.terminate()
        for slot, a in list(self.active.items()):
            rc = a.proc.wait()
            del self.active[slot]
            self._finish(a, rc, [])
        return W.EXIT_INTERRUPTED

    def _summary(self) -> int:
        sw = self.sweep
        states = [sw.state(s) for s in sw.runs]
        ids = {s.run_id for s in sw.runs}
        sw.export_results()
        rows = sum(1 for r in results.read_rows(sw.root) if r["run_id"] in ids)
        self.say(f"[sweep] {sw.ladder.name}: {states.count('done')}/{len(states)} done, "
                 f"{states.count('failed') + states.count('refused')} failed, "
                 f"{len(sw.invalid)} invalid; {rows} result rows in {sw.results}")
        return 0 if states.count("done") == len(states) and not sw.invalid else 1


def attempts_started(run_dir: epath.Path) -> int:
    """How many attempts at the run were started, by any runner, killed ones included.

    Every attempt writes a "start" event and, unless its runner was killed, an "exit" event,
    each with its number; the highest number of either kind also covers histories written
    before start events were recorded."""
    numbers = [r.get("attempt") for r in read_lines(run_dir / "attempts.jsonl")
               if r.get("event") in ("start", "exit")]
    return max((n for n in numbers if isinstance(n, int) and not isinstance(n, bool)), default=0)


def _exit_message(rc: int) -> str:
    if rc < 0:
        try:
            return f"worker killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"worker killed by signal {-rc}"
    if rc == W.EXIT_INTERRUPTED:
        return "worker stopped by a signal it did not get from this runner"
    return f"worker exited with status {rc}"


def _log_tail(path: Path, n: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - n))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


__all__ = ["InvalidRun", "Runner", "Sweep", "attempts_started", "device_slots", "local_gpus"]
