"""Train a group of runs of one (task, model) cell at once: every (learning rate, seed) pair of
the LR sweep is one member of a `jax.vmap`-ed AdamW step, so a cell costs one compiled program
and one dispatch per step however many runs it holds (on CPU, per-op overhead dominates these
tiny models; measured here at 2-4x faster than running them one by one).

Run r has peak learning rate lrs[r] and seed seeds[r]; the seed fixes both the model init and
the training data stream, so runs that share a seed but differ in LR see identical batches.
Schedule: linear warmup over the first 10% of steps, then cosine decay to 10% of the peak.
Gradients are clipped at global norm 1.0 per run.

A run whose loss becomes non-finite is recorded as diverged (accuracy 0), not raised: a high
learning rate that diverges is an ordinary outcome of the LR sweep.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from hybrid_jax.config import ModelConfig
from hybrid_jax.expressivity.tasks import Batch, sample
from hybrid_jax.expressivity.models import init_model


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 500
    batch_size: int = 32
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.98
    warmup_frac: float = 0.1
    clip_norm: float = 1.0
    # Train sizes are drawn uniformly from [max(1, min_length_frac * L), L].
    min_length_frac: float = 0.0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, "
                                 f"got {getattr(self, name)!r}")


def _tx(cfg: TrainConfig) -> optax.GradientTransformation:
    return _tx_cached(cfg.clip_norm, cfg.b1, cfg.b2, cfg.weight_decay)


@functools.lru_cache(maxsize=None)
def _tx_cached(clip_norm, b1, b2, weight_decay) -> optax.GradientTransformation:
    # The optimizer is a static jit argument hashed by identity: one object per setting, so
    # every cell of a model reuses the compiled step. The learning rate is applied outside it.
    return optax.chain(optax.clip_by_global_norm(clip_norm), optax.scale_by_adam(b1=b1, b2=b2),
                       optax.add_decayed_weights(weight_decay))


def lr_at(step, total, peak, warmup_frac):
    warm = jnp.maximum(1.0, jnp.floor(warmup_frac * total))
    frac = jnp.clip((step - warm) / jnp.maximum(1.0, total - warm), 0.0, 1.0)
    cosine = 0.1 + 0.9 * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
    return peak * jnp.where(step < warm, (step + 1) / warm, cosine)


def _loss(graphdef, params, inputs_BT, targets_BT, mask_BT):
    logits_BTV = nnx.merge(graphdef, params)(inputs_BT)
    ce_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, targets_BT)
    m = mask_BT.astype(jnp.float32)
    return jnp.sum(ce_BT * m) / jnp.maximum(1.0, jnp.sum(m))


def _one_step(graphdef, tx, params, opt_state, inputs_BT, targets_BT, mask_BT, peak_lr, step,
              total, warmup_frac):
    loss, grads = jax.value_and_grad(_loss, argnums=1)(graphdef, params, inputs_BT, targets_BT,
                                                       mask_BT)
    updates, opt_state = tx.update(grads, opt_state, params)
    lr = lr_at(step, total, peak_lr, warmup_frac)
    params = jax.tree.map(lambda p, u: p - lr * u, params, updates)
    return params, opt_state, loss


@functools.partial(jax.jit, static_argnums=(0, 1), donate_argnums=(2, 3))
def _train_step(graphdef, tx, params_R, opt_state_R, inputs_SBT, targets_SBT, mask_SBT, run_seed_R,
                peak_lr_R, step, total, warmup_frac):
    """One step of every run; run r reads the data of its seed slot run_seed_R[r]."""
    step_fn = functools.partial(_one_step, graphdef, tx)
    return jax.vmap(step_fn, in_axes=(0, 0, 0, 0, 0, 0, None, None, None))(
        params_R, opt_state_R, inputs_SBT[run_seed_R], targets_SBT[run_seed_R],
        mask_SBT[run_seed_R], peak_lr_R, step, total, warmup_frac)


@functools.partial(jax.jit, static_argnums=0)
def _eval_step(graphdef, params_R, inputs_BT, targets_BT, mask_BT):
    def one(params):
        logits_BTV = nnx.merge(graphdef, params)(inputs_BT)
        ok_BT = (jnp.argmax(logits_BTV, axis=-1) == targets_BT) | ~mask_BT
        ce_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, targets_BT)
        m = mask_BT.astype(jnp.float32)
        return jnp.stack([jnp.sum(jnp.all(ok_BT, axis=1)), jnp.sum(ok_BT * m), jnp.sum(m),
                          jnp.sum(ce_BT * m)])
    return jax.vmap(one)(params_R)


@dataclasses.dataclass
class TrainedGroup:
    graphdef: object
    params_R: object          # every leaf has a leading run axis
    lrs: tuple[float, ...]
    seeds: tuple[int, ...]
    final_loss_R: np.ndarray  # mean of the last 10 steps' losses
    diverged_R: np.ndarray
    seconds: float


def pad_batch(b: Batch, T: int | None) -> Batch:
    """Right-pad the token axis (the last) to T with PAD / target 0 / mask False. A causal model's
    outputs at the real positions do not depend on what follows them, so padding changes no
    result; it lets tasks and lengths of different T share one compiled program."""
    if T is None or T == b.inputs.shape[-1]:
        return b
    if T < b.inputs.shape[-1]:
        raise ValueError(f"cannot pad {b.inputs.shape[-1]} tokens down to {T}")
    w = [(0, 0)] * (b.inputs.ndim - 1) + [(0, T - b.inputs.shape[-1])]
    return Batch(np.pad(b.inputs, w), np.pad(b.targets, w), np.pad(b.mask, w))


def make_train_data(task, length: int, cfg: TrainConfig, seeds: tuple[int, ...], *,
                    pad_to: int | None = None) -> Batch:
    """Every training batch of every seed, stacked [steps, S, B, T]. It depends on the task,
    length, train config and seeds only, so the suite builds it once per task and reuses it for
    every model (data generation is numpy on the host; this keeps it off the critical path)."""
    rngs = [np.random.default_rng([s, 0x7EA1]) for s in seeds]
    lo = max(1, math.floor(cfg.min_length_frac * length))
    steps = [[sample(task, r, cfg.batch_size, length, min_length=lo) for r in rngs]
             for _ in range(cfg.steps)]
    return pad_batch(Batch(*(np.array([[getattr(b, f) for b in bs] for bs in steps])
                             for f in ("inputs", "targets", "mask"))), pad_to)


def train_group(model_cfg: ModelConfig, task, length: int, cfg: TrainConfig, *,
                lrs: tuple[float, ...], seeds: tuple[int, ...], embed_std: float,
                data: Batch | None = None, log_every: int = 0) -> TrainedGroup:
    """Train len(lrs) x len(seeds) runs of one model on batches of sizes <= length; `data` is
    make_train_data(task, length, cfg, seeds), built here when not given. Token embeddings are
    drawn with std `embed_std` (models.init_model)."""
    if not lrs or not seeds or any(not lr > 0 for lr in lrs):
        raise ValueError(f"need >= 1 positive learning rate and >= 1 seed, got {lrs}, {seeds}")
    if data is None:
        data = make_train_data(task, length, cfg, seeds)
    if data.inputs.shape[:3] != (cfg.steps, len(seeds), cfg.batch_size):
        raise ValueError(f"data of shape {data.inputs.shape} does not match steps={cfg.steps}, "
                         f"{len(seeds)} seeds, batch {cfg.batch_size}")
    t0 = time.perf_counter()
    runs = [(lr, s) for lr in lrs for s in range(len(seeds))]
    graphdef, _ = nnx.split(init_model(model_cfg, embed_std, seed=0))
    per_seed = [nnx.split(init_model(model_cfg, embed_std, seed=s))[1] for s in seeds]
    params_R = jax.tree.map(lambda *xs: jnp.stack(xs), *[per_seed[s] for _, s in runs])
    tx = _tx(cfg)
    opt_state_R = jax.vmap(tx.init)(params_R)
    run_seed_R = np.array([s for _, s in runs], np.int32)
    peak_lr_R = np.array([lr for lr, _ in runs], np.float32)
    losses = []
    for step in range(cfg.steps):
        params_R, opt_state_R, loss_R = _train_step(
            graphdef, tx, params_R, opt_state_R, data.inputs[step], data.targets[step],
            data.mask[step], run_seed_R, peak_lr_R, np.float32(step), np.float32(cfg.steps),
            np.float32(cfg.warmup_frac))
        losses.append(loss_R)
        if log_every and (step % log_every == 0 or step == cfg.steps - 1):
            print(f"    step {step:5d} loss " + " ".join(f"{v:.3f}" for v in np.asarray(loss_R)),
                  flush=True)
    loss_SR = np.asarray(jax.device_get(losses))
    return TrainedGroup(graphdef, params_R, tuple(lr for lr, _ in runs),
                        tuple(seeds[s] for _, s in runs), loss_SR[-10:].mean(axis=0),
                        ~np.all(np.isfinite(loss_SR), axis=0), time.perf_counter() - t0)


def eval_batches(task, length: int, n_examples: int, *, seed: int, batch: int = 128,
                 pad_to: int | None = None) -> list[Batch]:
    """A fixed evaluation set: every example has size exactly `length`, tokens right-padded to
    `pad_to` (see pad_batch)."""
    rng = np.random.default_rng([seed, length, 0xE7A1])
    out, left = [], n_examples
    while left > 0:
        out.append(pad_batch(sample(task, rng, min(batch, left), length), pad_to))
        left -= batch
    return out


def evaluate(group: TrainedGroup, batches: list[Batch]) -> list[dict]:
    """Per run: sequence accuracy (every masked position right), token accuracy, masked CE."""
    tot = np.zeros((len(group.lrs), 4))
    n = 0
    for b in batches:
        tot += np.asarray(jax.device_get(_eval_step(group.graphdef, group.params_R, b.inputs,
                                                    b.targets, b.mask)), np.float64)
        n += len(b.inputs)
    out = []
    for r, (seq, tok, cnt, ce) in enumerate(tot):
        if group.diverged_R[r] or not np.isfinite(ce):
            out.append({"seq_acc": 0.0, "token_acc": 0.0, "loss": None, "n": n, "diverged": True})
        else:
            out.append({"seq_acc": seq / n, "token_acc": tok / cnt, "loss": ce / cnt, "n": n,
                        "diverged": False})
    return out
