"""Learning-rate schedules as optax-compatible functions of the step.

`lr(s)` is the learning rate of update s (0-based: update s takes the model from step s to s+1
and consumes batch s). Every schedule is written so that a table is easy to compute by hand:

  warmup (W steps)      lr(s) = peak * (s + 1) / W            s < W   (no wasted lr-0 update)
  linear decay ending   lr(s) = floor + (peak - floor) * (E - 1 - s) / Dd   E - Dd <= s < E
    at step E over Dd   (the update that brings the model to step E runs at the floor)
  cosine over [W, S)    lr(s) = floor + (peak - floor) * (1 + cos(pi * (s + 1 - W) / (S - W))) / 2

WSD-S (OLMo-core's schedule for the scaling ladder): after the warmup, phase i runs at the peak
and ends in a linear decay of Dd_i = round(decay_fraction * (E_i - E_{i-1})) steps that bottoms
out at step E_i (the i-th of `decay_tokens`, in steps); lr(E_i) is the peak again. The last
decay ends the run. The checkpoints at E_i are the scaling points.

Token counts are converted to steps with round(tokens / tokens_per_step).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from hybrid_jax.config import ConfigError
from hybrid_jax.train.config import RunConfig, ScheduleConfig


def tokens_to_steps(tokens: int, tokens_per_step: int) -> int:
    return round(tokens / tokens_per_step)


class Schedule:
    """lr(step) for one run; call it with a Python int or a traced int32 scalar."""

    def __init__(self, cfg: ScheduleConfig, *, peak_lr: float, tokens_per_step: int,
                 total_steps: int):
        self.cfg, self.peak, self.total_steps = cfg, float(peak_lr), int(total_steps)
        self.floor = cfg.final_lr_ratio * self.peak
        self.warmup_steps = tokens_to_steps(cfg.warmup_tokens, tokens_per_step)
        if cfg.kind == "wsds":
            self.decay_ends = tuple(tokens_to_steps(t, tokens_per_step) for t in cfg.decay_tokens)
            if any(b <= a for a, b in zip((0,) + self.decay_ends, self.decay_ends)):
                raise ConfigError(f"schedule.decay_tokens: {list(cfg.decay_tokens)} are "
                                  f"{list(self.decay_ends)} steps of {tokens_per_step} tokens; "
                                  "two points fall on the same step")
            if self.decay_ends[-1] != self.total_steps:
                raise ConfigError(f"schedule.decay_tokens: the last point is step "
                                  f"{self.decay_ends[-1]}, the run has {self.total_steps}")
        else:
            self.decay_ends = (self.total_steps,)
        self.decay_lengths = self._decay_lengths()
        self._check_warmup()
        if cfg.kind in ("wsd", "wsds"):
            self._xp, self._fp = self._knots()

    # ---- construction -----------------------------------------------------------------------
    def _decay_lengths(self) -> tuple[int, ...]:
        if self.cfg.kind == "wsd":
            return (max(1, round(self.cfg.decay_fraction * self.total_steps)),)
        if self.cfg.kind == "wsds":
            starts = (0,) + self.decay_ends[:-1]
            return tuple(max(1, round(self.cfg.decay_fraction * (e - s)))
                         for s, e in zip(starts, self.decay_ends))
        return ()

    def _check_warmup(self) -> None:
        first_decay = (self.decay_ends[0] - self.decay_lengths[0] if self.decay_lengths
                       else self.total_steps)
        if self.warmup_steps > first_decay:
            raise ConfigError(f"schedule.warmup_tokens: the warmup ({self.warmup_steps} steps) "
                              f"runs past the start of the first decay (step {first_decay})")

    def _knots(self) -> tuple[np.ndarray, np.ndarray]:
        """Piecewise-linear knots (x = update index) for wsd/wsds; steps are integers, so a
        segment from (E-1, floor) to (E, peak) is a jump that no step falls inside."""
        W = self.warmup_steps
        xs, ys = ([-1.0, W - 1.0], [0.0, self.peak]) if W else ([-1.0], [self.peak])
        for i, (end, length) in enumerate(zip(self.decay_ends, self.decay_lengths)):
            xs += [end - length - 1.0, end - 1.0]
            ys += [self.peak, self.floor]
            if i + 1 < len(self.decay_ends):
                xs.append(float(end))
                ys.append(self.peak)
        return np.asarray(xs, np.float32), np.asarray(ys, np.float32)

    # ---- evaluation ---------------------------------------------------------------------------
    def __call__(self, step):
        s = jnp.asarray(step, jnp.float32)
        kind, W, peak, floor = self.cfg.kind, self.warmup_steps, self.peak, self.floor
        if kind in ("wsd", "wsds"):
            return jnp.interp(s, jnp.asarray(self._xp), jnp.asarray(self._fp))
        warm = peak * (s + 1.0) / max(W, 1)
        if kind == "constant":
            after = jnp.asarray(peak, jnp.float32)
        else:
            span = max(self.total_steps - W, 1)
            progress = jnp.clip((s + 1.0 - W) / span, 0.0, 1.0)
            after = floor + (peak - floor) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
        return jnp.where(s < W, warm, after).astype(jnp.float32)

    def decay_end_steps(self) -> tuple[int, ...]:
        """Steps at which a decay bottoms out: the scaling points (the run's end for cosine,
        wsd and constant)."""
        return self.decay_ends

    def table(self, steps: int | None = None) -> np.ndarray:
        return np.asarray([float(self(s)) for s in range(self.total_steps if steps is None
                                                          else steps)])


def build_schedule(cfg: RunConfig) -> Schedule:
    return Schedule(cfg.schedule, peak_lr=cfg.optim.lr, tokens_per_step=cfg.train.tokens_per_step,
                    total_steps=cfg.total_steps)
