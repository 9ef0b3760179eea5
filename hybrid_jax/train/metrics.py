"""Metrics out of the loop: metrics.jsonl, TensorBoard scalars, a progress bar or log lines,
and MFU against a small table of device peaks.

Only process 0 writes, to a local or gs:// run directory. metrics.jsonl has one record per step (`"kind": "train"`) and one per
evaluation (`"kind": "eval"`); on resume, records past the restored step are dropped so the file
reads as one uninterrupted run. TensorBoard gets the same numbers (tensorboardX event files in
`run_dir/tensorboard`, one file per attempt); a resumed attempt's file starts with a purge marker
that hides the earlier attempt's steps past the restored one.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from typing import Any

from hybrid_jax.storage import objects
from hybrid_jax.storage.paths import as_path, is_object_store, read_text_or_none, write_text_atomic

# Dense bf16 peak FLOP/s per device, matched by substring of jax's device_kind (lower case,
# first match wins, so the more specific names come first).
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("h100", 989e12),
    ("h200", 989e12),
    ("gh200", 989e12),
    ("a100", 312e12),
    ("tpu v5 lite", 197e12),
    ("tpu v5e", 197e12),
    ("tpu v5p", 459e12),
    ("tpu v5", 459e12),
    ("tpu v6 lite", 918e12),
    ("tpu v6e", 918e12),
    ("tpu v4", 275e12),
)


def peak_flops(device_kind: str) -> float | None:
    """Peak bf16 FLOP/s of one device, or None (CPU, unknown devices: MFU is then null)."""
    kind = device_kind.lower()
    for key, peak in PEAK_BF16_FLOPS:
        if key in kind:
            return peak
    return None


def mfu(flops_per_token: float, tokens_per_s: float, device_kind: str, n_devices: int
        ) -> float | None:
    peak = peak_flops(device_kind)
    if peak is None or not tokens_per_s:
        return None
    return flops_per_token * tokens_per_s / (peak * n_devices)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no NaN/Infinity
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


class MetricsLog:
    """metrics.jsonl (+ TensorBoard) writer; a no-op on processes other than 0.

    Records are flushed to the run directory every `flush_every` seconds, at every `flush()`
    (the loop flushes before each checkpoint save, so every record up to a checkpoint's step is
    stored before the checkpoint is) and at close. A local run directory is flushed at every
    record (flush_every 0), so `tail -f` follows the run. On gs:// an append rewrites the whole
    object (storage.objects.append), so records are flushed every REMOTE_FLUSH_EVERY seconds;
    a run killed between flushes loses only records past its last checkpoint, which the resumed
    attempt writes again.
    """

    REMOTE_FLUSH_EVERY = 30.0

    def __init__(self, run_dir: str | os.PathLike, *, enabled: bool, tensorboard: bool,
                 resume_step: int):
        self.enabled = enabled
        self.path = as_path(run_dir) / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        self.flush_every = self.REMOTE_FLUSH_EVERY if is_object_store(run_dir) else 0.0
        self._pending: list[str] = []
        self._flushed_at = time.monotonic()
        self._truncate(resume_step)
        if tensorboard:
            # As in _truncate: the earlier attempt logged this step (train and eval) before
            # saving its checkpoint, and this attempt starts at the next one.
            self.tb = TensorBoardEvents(as_path(run_dir) / "tensorboard",
                                        purge_step=resume_step + 1)

    def _truncate(self, resume_step: int) -> None:
        text = read_text_or_none(self.path)
        if text is None:
            return
        keep = []
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if record.get("step", 0) <= resume_step:
                keep.append(line)
        write_text_atomic(self.path, "".join(line + "\n" for line in keep))

    def write(self, record: dict[str, Any], *, tb_prefix: str) -> None:
        if not self.enabled:
            return
        self._pending.append(json.dumps(_clean(record)) + "\n")
        if self.tb is not None:
            scalars = {f"{tb_prefix}/{k}": v for k, v in _flatten(record).items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)
                       and k not in ("step", "tokens")}
            self.tb.scalars(int(record["step"]), scalars)
        if time.monotonic() - self._flushed_at >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self.enabled:
            return
        if self._pending:
            # no fsync per step: a resume drops records past its checkpoint and writes them
            # again, and the loop flushes before every checkpoint save
            objects.append(self.path, "".join(self._pending).encode(), sync=False)
            self._pending = []
        if self.tb is not None:
            self.tb.flush()
        self._flushed_at = time.monotonic()

    def close(self) -> None:
        if self.enabled:
            self.flush()
            if self.tb is not None:
                self.tb.close()


class TensorBoardEvents:
    """Scalars to a new event file in `logdir`, one event per record, written at every flush().

    The writer is tensorboardX's synchronous EventsWriter on a local file. Its SummaryWriter,
    FileWriter and EventFileWriter hand events to a thread that flushes every flush_secs (120 s
    by default), and their flush() leaves events still queued unwritten, so a killed run would
    lose its last steps, including steps up to the checkpoint it resumes from, which are never
    logged again. Flushing (tensorboardX also fsyncs) costs about 0.2 ms on a local disk.

    A gs:// logdir: the events go to a local temporary file, uploaded whole at every flush()
    (GCS objects cannot be appended to). tensorboardX's own gs:// writer would do the same on
    a client of its own, ignoring the suite's credentials and emulator settings.
    """

    def __init__(self, logdir: str | os.PathLike, *, purge_step: int):
        # Imported here: only process 0 of a run with TensorBoard on needs it, and importing
        # tensorboardX imports torch wherever torch is installed.
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.proto.summary_pb2 import Summary

        self._event, self._summary = Event, Summary
        self.logdir = as_path(logdir)
        self._staging = None
        if is_object_store(self.logdir):
            self._staging = tempfile.TemporaryDirectory(prefix="hybrid-jax-tb-")
            local_dir = self._staging.name
        else:
            self.logdir.mkdir(parents=True, exist_ok=True)
            local_dir = os.fspath(self.logdir)
        # The file is events.out.tfevents.<unix seconds>.<host><suffix>, opened with "wb".
        # TensorBoard reads a run's files in name order, which the purge below relies on; the
        # nanoseconds keep two writers started in the same second (a resume inside one test
        # process) from sharing a file, and in order.
        self._writer = EventsWriter(os.path.join(local_dir, "events"), f".{time.time_ns()}")
        # TensorBoard's Python loader drops every event it has read with step >= purge_step
        # when it reads this START. Its Rust data server ignores START but drops a tag's points
        # at steps >= a new point's step, which hides the same ones as this attempt logs again.
        self._writer.write_event(Event(wall_time=time.time(), step=purge_step,
                                       session_log=SessionLog(status=SessionLog.START)))
        self.flush()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if values:
            summary = self._summary(value=[self._summary.Value(tag=tag, simple_value=float(v))
                                           for tag, v in values.items()])
            self._writer.write_event(self._event(wall_time=time.time(), step=step,
                                                 summary=summary))

    def flush(self) -> None:
        self._writer.flush()
        if self._staging is not None:
            local = self._writer._file_name
            with open(local, "rb") as f:
                objects.write_atomic(self.logdir / os.path.basename(local), f.read())

    def close(self) -> None:
        self.flush()
        self._writer.close()
        if self._staging is not None:
            self._staging.cleanup()


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def read_metrics(run_dir: str | os.PathLike, kind: str = "train") -> list[dict]:
    text = read_text_or_none(as_path(run_dir) / "metrics.jsonl")
    if text is None:
        raise FileNotFoundError(f"no metrics.jsonl in {run_dir}")
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [r for r in records if r.get("kind") == kind]


class Progress:
    """A one-line progress bar with ETA on a terminal; plain log lines otherwise."""

    def __init__(self, total_steps: int, start_step: int, *, mode: str, log_every: int,
                 enabled: bool, stream=None):
        self.stream = stream or sys.stdout
        self.total, self.start = total_steps, start_step
        self.enabled = enabled
        self.bar = mode == "bar" or (mode == "auto" and self.stream.isatty())
        self.log_every = log_every
        self.t0 = time.perf_counter()

    def update(self, step: int, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        done = step - self.start
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / done * (self.total - step) if done else float("nan")
        stats = (f"loss {record['loss']:.4f}  gnorm {record['grad_norm']:.3f}  "
                 f"lr {record['lr']:.3g}  {record['tokens_per_s']:.0f} tok/s")
        if record.get("mfu") is not None:
            stats += f"  mfu {100 * record['mfu']:.1f}%"
        if self.bar:
            width = 30
            filled = int(width * step / self.total)
            line = (f"\r[{'#' * filled}{'.' * (width - filled)}] {step}/{self.total}  {stats}  "
                    f"eta {_duration(eta)}")
            self.stream.write(line)
            self.stream.flush()
        elif step % self.log_every == 0 or step == self.total:
            print(f"step {step}/{self.total}  {stats}  eta {_duration(eta)}", file=self.stream,
                  flush=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar:
            self.stream.write("\n")
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.enabled and self.bar:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
