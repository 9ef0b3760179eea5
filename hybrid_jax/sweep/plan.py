"""`sweep plan`: every run's N, decay points, FLOPs, steps, batch, lr, epochs and time estimate.

Time estimate per run = training FLOPs / achieved FLOP/s + a fixed per-run overhead (process
start-up, compilation, evaluations, checkpoints). Achieved FLOP/s is, in order:

1. `--calibrate`: measured here, per (family, size), by training the run's own model for a
   few steps on random tokens (hybrid_jax.train.train on a throw-away run directory) at the
   run's batch capped to `--calibrate-batch` sequences; the overhead is the measured first
   step (compilation) plus the default below. Smaller batches only underestimate throughput.
2. Otherwise the ladder's measured MFU for the family (ladder key `plan_mfu`, from an earlier
   run of that ladder), else an assumption: DEFAULT_MFU x the device's peak bf16 FLOP/s
   (hybrid_jax.train.metrics.peak_flops), or, for a device without a known peak (CPU),
   DEFAULT_CPU_FLOPS per worker. Which one is stated in the output.

Small models run far below large-model MFU (kernel launch and optimizer overheads dominate),
so the default MFU is deliberately modest; calibrate before trusting a plan for tiny models.
The sweep's wall time is estimated as max(longest run, sum of training times / devices + sum of
overheads / workers): workers on one accelerator share its FLOP/s but overlap their start-up
and compilation; on CPU each worker is assumed to get its own share (DEFAULT_CPU_FLOPS is per
worker). Workers default to what `sweep run` would start here (--parallel to change).
With --devices-per-run D (a TPU slice or a GPU node per run, as the Ray executor schedules),
each worker is a unit of D devices of its own: a run's FLOP/s are D times one device's at the
same MFU (linear scaling: optimistic for the small sizes), and the wall time is the longest
run or the total over the workers, whichever is larger.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from hybrid_jax.sweep.root import Sweep
from hybrid_jax.sweep.status import duration
from hybrid_jax.flops import train_flops

DEFAULT_MFU = 0.2
DEFAULT_CPU_FLOPS = 1.0e10     # per worker; measured ~0.9e10 for hybrid_tiny on a 2-core VM
DEFAULT_OVERHEAD_S = {"cpu": 20.0, "accelerator": 45.0}


@dataclasses.dataclass(frozen=True)
class Speed:
    flops_per_s: float
    overhead_s: float
    source: str                 # how it was obtained, printed with the plan


def assumed_speed(device_kind: str, mfu: float | None = None,
                  how: str = "the ladder's measured") -> Speed:
    """`mfu`: the ladder's measured MFU for the family (ladder key `plan_mfu`) or the user's
    (say which in `how`), else DEFAULT_MFU."""
    from hybrid_jax.train.metrics import peak_flops

    peak = peak_flops(device_kind)
    if peak is None:
        return Speed(DEFAULT_CPU_FLOPS, DEFAULT_OVERHEAD_S["cpu"],
                     f"assumed {DEFAULT_CPU_FLOPS / 1e9:.0f} GFLOP/s per worker on "
                     f"{device_kind!r} (no known peak) + {DEFAULT_OVERHEAD_S['cpu']:.0f} s/run")
    how = "assumed" if mfu is None else how
    mfu = DEFAULT_MFU if mfu is None else mfu
    return Speed(mfu * peak, DEFAULT_OVERHEAD_S["accelerator"],
                 f"{how} MFU {mfu:.1%} of {peak / 1e12:.0f} TFLOP/s peak on "
                 f"{device_kind!r} + {DEFAULT_OVERHEAD_S['accelerator']:.0f} s/run")


def local_device_kind() -> str:
    import jax

    return jax.devices()[0].device_kind


# ---- calibration ------------------------------------------------------------------------------
class RandomSource:
    """A BatchSource of uniform random tokens (hybrid_jax.train.source): throughput only."""

    validation_set_names = ("random",)
    n_train_tokens = 10**15

    def __init__(self, vocab_size: int, seq_len: int):
        self.vocab_size, self.seq_len = vocab_size, seq_len

    def _rows(self, seed: int, n: int) -> dict[str, np.ndarray]:
        tokens = np.random.default_rng(seed).integers(0, self.vocab_size, (n, self.seq_len + 1))
        return {"inputs": tokens[:, :-1].astype(np.int32),
                "targets": tokens[:, 1:].astype(np.int32),
                "loss_mask": np.ones((n, self.seq_len), np.float32)}

    def batch(self, step, dp_rank, dp_size):
        return self._rows(step, self.global_batch // dp_size)

    def validation_batches(self, name, *, batch_size, max_tokens) -> Iterator[dict]:
        yield self._rows(-1 % 2**32, batch_size)

    def validation_bytes(self, name, max_tokens) -> int:
        return 1

    def check_epochs(self, tokens_needed, max_epochs) -> float:
        return 0.0

    def describe(self) -> dict:
        return {"kind": "random", "vocab_size": self.vocab_size}


def calibrate(spec, *, steps: int = 6, max_batch: int = 8) -> Speed:
    import jax

    from hybrid_jax.train import load_config, train
    from hybrid_jax.train.metrics import read_metrics

    cfg, n_dev = spec.config, jax.device_count()
    batch = max(n_dev, min(cfg.train.global_batch, max_batch) // n_dev * n_dev)
    tmp = Path(tempfile.mkdtemp(prefix="sweep-calibrate-"))
    try:
        ccfg = load_config(cfg.to_dict(), [
            f"train.global_batch={batch}", "train.micro_batches=1",
            f"train.tokens={steps * batch * cfg.train.seq_len}", "schedule.kind=constant",
            "schedule.warmup_tokens=0", "schedule.decay_tokens=[]", f"train.run_dir={tmp}",
            "checkpoint.interval_steps=1000000", "checkpoint.async_save=false",
            "log.tensorboard=false", "eval.sets=[]", "eval.max_tokens=null",
            "eval.interval_tokens=0", "eval.batch_size=null", "data.store=random"])
        source = RandomSource(cfg.model.vocab_size, cfg.train.seq_len)
        source.global_batch = batch
        train(ccfg, source=source, verbose=False)
        times = [r["step_time_s"] for r in read_metrics(tmp)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    step_s = statistics.median(times[2:]) if len(times) > 2 else times[-1]
    fps = train_flops(cfg.model, cfg.train.seq_len, batch * cfg.train.seq_len) / step_s
    overhead = times[0] + DEFAULT_OVERHEAD_S["cpu" if jax.default_backend() == "cpu"
                                             else "accelerator"]
    return Speed(fps, overhead, f"calibrated: {batch}x{cfg.train.seq_len} tokens/step, "
                                f"{step_s * 1e3:.1f} ms/step, first step {times[0]:.1f} s")


# ---- the plan ---------------------------------------------------------------------------------
def store_info(path: str) -> tuple[object | None, str]:
    from hybrid_jax.data import StoreError, open_store

    if not path:
        return None, "no data.store in the ladder"
    try:
        return open_store(path, verify=False), ""
    except (StoreError, FileNotFoundError, OSError) as e:
        return None, f"store {path} is not built ({type(e).__name__}: {str(e)[:160]})"


def data_source(cfg, opened: dict):
    """The run's batch source, opened unverified, once per data config (`opened` holds them);
    None where a store is not built (store_info says why)."""
    import json

    from hybrid_jax.train.source import make_source

    key = (json.dumps(cfg.to_dict()["data"], sort_keys=True), cfg.train.global_batch,
           cfg.train.seq_len)
    if key not in opened:
        opened[key] = None
        if all(store_info(p)[0] is not None for p in cfg.data.store_paths):
            opened[key] = make_source(dataclasses.replace(cfg.data, verify=False),
                                      global_batch=cfg.train.global_batch,
                                      seq_len=cfg.train.seq_len)
    return opened[key]


def plan_rows(sweep: Sweep, speeds: dict[tuple[str, str], Speed], devices_per_run: int = 1
              ) -> list[dict]:
    from hybrid_jax.data import EpochLimitError

    rows, opened = [], {}
    for spec in sweep.runs:
        cfg, h = spec.config, spec.hyper
        source = data_source(cfg, opened)
        epochs, refused = None, None
        if source is not None:
            epochs = max(source.epochs(cfg.total_tokens).values())
            try:
                source.check_epochs(cfg.total_tokens, cfg.data.max_epochs)
            except EpochLimitError as e:
                refused = str(e)
        speed = speeds[(spec.family, spec.size)]
        if devices_per_run > 1:
            speed = dataclasses.replace(speed, flops_per_s=speed.flops_per_s * devices_per_run,
                                        source=f"{speed.source}, x {devices_per_run} devices a run")
        flops = train_flops(cfg.model, cfg.train.seq_len, cfg.total_tokens)
        points = [{"ratio": r, "tokens": d, "steps": d // h.batch_tokens,
                   "flops": train_flops(cfg.model, cfg.train.seq_len, d),
                   "est_s": speed.overhead_s
                   + train_flops(cfg.model, cfg.train.seq_len, d) / speed.flops_per_s}
                  for r, d in zip(h.ratios, h.decay_tokens)]
        rows.append({"run_id": spec.run_id, "family": spec.family, "size": spec.size,
                     "n_params": spec.n_params, "n_params_total": spec.n_params_total,
                     "batch_sequences": h.batch_sequences, "batch_tokens": h.batch_tokens,
                     "seq_len": h.seq_len, "lr": cfg.optim.lr, "b2": cfg.optim.b2,
                     "warmup_tokens": cfg.schedule.warmup_tokens, "points": points,
                     "tokens": cfg.total_tokens, "steps": cfg.total_steps, "flops": flops,
                     "epochs": epochs, "refused": refused,
                     "est_s": flops / speed.flops_per_s + speed.overhead_s,
                     "flops_per_s": speed.flops_per_s, "overhead_s": speed.overhead_s,
                     "speed": speed.source})
    return rows


def _si(x: float) -> str:
    """3 significant digits with an SI suffix: 53.8k, 1.71M, 2.57T, 5.24E."""
    if x == 0:
        return "0"
    exp = max(0, min(int(math.floor(math.log10(abs(x)) / 3)), 8))
    return f"{x / 10 ** (3 * exp):.3g}{' kMGTPEZY'[exp].strip()}"


def device_hours(rows: list[dict], devices_per_run: int) -> float:
    """Chip-hours (GPU-hours) the ladder holds: each run's time times the devices it holds."""
    return sum(r["est_s"] for r in rows) * max(devices_per_run, 1) / 3600


def format_plan(sweep: Sweep, rows: list[dict], workers: int, devices: int, store_note: str,
                devices_per_run: int = 1) -> str:
    head = (f"{'run':<34}{'N':>9}{'N tot':>9}{'D/N':>6}{'D tokens':>10}{'steps':>8}{'FLOPs':>9}"
            f"{'batch':>11}{'lr':>9}{'b2':>5}{'epochs':>7}{'est':>10}")
    out = [f"ladder {sweep.ladder.name} ({sweep.ladder.path})  root {sweep.root}", head,
           "-" * len(head)]
    for r in rows:
        run_cols = [r["run_id"], _si(r["n_params"]), _si(r["n_params_total"]),
                    f"{r['batch_sequences']}x{r['seq_len']}", f"{r['lr']:.3g}", f"{r['b2']:g}"]
        for i, p in enumerate(r["points"]):
            run_id, n, n_tot, batch, lr, b2 = run_cols if i == 0 else [""] * 6
            ep = "-" if r["epochs"] is None else f"{r['epochs'] * p['tokens'] / r['tokens']:.2f}"
            out.append(f"{run_id:<34}{n:>9}{n_tot:>9}{p['ratio']:>6g}{_si(p['tokens']):>10}"
                       f"{p['steps']:>8}{_si(p['flops']):>9}{batch:>11}{lr:>9}{b2:>5}{ep:>7}"
                       f"{duration(p['est_s']):>10}")
        if r["refused"]:
            out.append(f"  REFUSED: {r['refused']}")
    for bad in sweep.invalid:
        out.append(f"{bad.family + '-' + bad.size:<34}INVALID: {bad.error[:200]}")
    total_s = sum(r["est_s"] for r in rows)
    overhead = sum(r["overhead_s"] for r in rows)
    wall = max([(total_s - overhead) / max(devices, 1) + overhead / max(workers, 1)]
               + [r["est_s"] for r in rows])
    fam = {}
    for r in rows:
        fam[r["family"]] = fam.get(r["family"], 0.0) + r["flops"]
    out.append(f"{len(rows)} runs, {sum(len(r['points']) for r in rows)} scaling points; "
               f"training FLOPs {_si(sum(r['flops'] for r in rows))} ("
               + ", ".join(f"{f} {_si(v)}" for f, v in fam.items()) + ")")
    speeds = sorted({r["speed"] for r in rows})
    if len(speeds) > 1 and any(s.startswith("calibrated") for s in speeds):
        fps = [r["flops_per_s"] for r in rows]  # one measurement per run; summarise them
        speeds = [f"calibrated per run on this device, {_si(min(fps))}-{_si(max(fps))} FLOP/s "
                  f"achieved, {min(r['overhead_s'] for r in rows):.0f}-"
                  f"{max(r['overhead_s'] for r in rows):.0f} s overhead per run (--json: each)"]
    where = (f"{workers} worker(s) of {devices_per_run} devices each" if devices_per_run > 1
             else f"{workers} worker(s) on {devices} device(s)")
    out.append(f"estimated time: {duration(total_s)} of run time, {duration(wall)} wall with "
               f"{where}; {device_hours(rows, devices_per_run):,.0f} device-hours; speed: "
               + "; ".join(speeds))
    out.append(f"epochs: {store_note or 'of the training tokens in ' + sweep.ladder.store}")
    return "\n".join(out)
