"""The pure train and eval steps, the optimizer, and the train state.

The train state is a plain pytree, `{"step": int32[], "params": pure dict, "opt_state": optax
state}`, so checkpoints hold arrays only, not flax objects. The model is rebuilt from the graph
definition inside the step (`nnx.merge`); the step itself is jitted once by the loop with
explicit shardings and the state donated.

Loss: mean cross-entropy over loss_mask, plus z_loss * mean(logsumexp^2) (PaLM's z-loss, which
keeps the softmax normaliser near 1). With micro-batches, each micro-batch contributes sums
divided by the *global* mask count, so accumulation changes nothing but the summation order.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from hybrid_jax.config import ModelConfig
from hybrid_jax.models.lm import build_model
from hybrid_jax.train.config import RunConfig

Batch = dict[str, jax.Array]
State = dict[str, Any]


def seed_key_data(seed: int) -> np.ndarray:
    """The raw bits of jax.random.key(seed), as a host array to pass into jitted init."""
    return np.asarray(jax.random.key_data(jax.random.key(seed)))


def abstract_model(cfg: ModelConfig, seed: int = 0):
    """(graphdef, abstract nnx.State with logical-axis metadata); allocates nothing."""
    return nnx.split(nnx.eval_shape(lambda: build_model(cfg, seed=seed)))


def decay_mask(abstract_state) -> dict:
    """True for weights that get weight decay: matrices other than the (un)embedding.
    Norm scales, per-head scalars (A_log, dt_bias) and biases are 1-D, so they are excluded."""

    def one(var):
        axes = var.get_metadata().get("out_sharding") or ()
        return var.get_value().ndim >= 2 and "vocab" not in axes

    mask = jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return nnx.to_pure_dict(mask) if isinstance(mask, nnx.State) else mask


def make_optimizer(cfg: RunConfig, schedule: Callable, mask: dict) -> optax.GradientTransformation:
    o = cfg.optim
    adamw = optax.adamw(learning_rate=schedule, b1=o.b1, b2=o.b2, eps=o.eps,
                        weight_decay=o.weight_decay, mask=mask)
    if o.clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(o.clip_norm), adamw)
    return adamw


def token_losses(logits_BTY: jax.Array, targets_BT: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(nll_BT, logsumexp_BT) in fp32."""
    logits_BTY = logits_BTY.astype(jnp.float32)
    lse_BT = jax.nn.logsumexp(logits_BTY, axis=-1)
    target_logit_BT = jnp.take_along_axis(logits_BTY, targets_BT[..., None], axis=-1)[..., 0]
    return lse_BT - target_logit_BT, lse_BT


def make_train_step(graphdef, tx: optax.GradientTransformation, schedule: Callable,
                    cfg: RunConfig, batch_sharding=None) -> Callable[[State, Batch], tuple]:
    """step(state, batch) -> (new_state, metrics); batch arrays are [global_batch, seq_len]."""
    M = cfg.train.micro_batches
    z_coef = cfg.train.z_loss

    def objective(params, mb: Batch, denom):
        model = nnx.merge(graphdef, params)
        nll_BT, lse_BT = token_losses(model(mb["inputs"]), mb["targets"])
        mask_BT = mb["loss_mask"]
        ce_sum = jnp.sum(nll_BT * mask_BT)
        z_sum = jnp.sum(jnp.square(lse_BT) * mask_BT)
        return (ce_sum + z_coef * z_sum) / denom, (ce_sum, z_sum)

    grad_fn = jax.grad(objective, has_aux=True)

    def step(state: State, batch: Batch):
        params = state["params"]
        denom = jnp.maximum(jnp.sum(batch["loss_mask"]), 1.0)

        # Micro-batch m takes rows m, m+M, m+2M, ...: each stays spread over all data shards.
        def split(x):
            B = x.shape[0]
            x = x.reshape(B // M, M, *x.shape[1:]).swapaxes(0, 1)
            return x

        micro = jax.tree.map(split, batch)

        def accumulate(carry, mb):
            if batch_sharding is not None:
                mb = jax.lax.with_sharding_constraint(mb, batch_sharding)
            grads, ce, z = carry
            g, (ce_m, z_m) = grad_fn(params, mb, denom)
            return (jax.tree.map(jnp.add, grads, g), ce + ce_m, z + z_m), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        (grads, ce_sum, z_sum), _ = jax.lax.scan(accumulate, (zeros, 0.0, 0.0), micro)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)
        ce = ce_sum / denom
        metrics = {"loss": ce + z_coef * z_sum / denom, "ce": ce, "z_loss": z_sum / denom,
                   "grad_norm": grad_norm, "lr": schedule(state["step"]),
                   "tokens": denom}
        new_state = {"step": state["step"] + 1, "params": new_params, "opt_state": opt_state}
        return new_state, metrics

    return step


def make_eval_step(graphdef) -> Callable[[dict, Batch], dict]:
    """eval(params, batch) -> {"nll": sum of masked nll (nats), "count": masked tokens}."""

    def evaluate(params, batch: Batch):
        model = nnx.merge(graphdef, params)
        nll_BT, _ = token_losses(model(batch["inputs"]), batch["targets"])
        return {"nll": jnp.sum(nll_BT * batch["loss_mask"]), "count": jnp.sum(batch["loss_mask"])}

    return evaluate


def init_state(cfg: RunConfig, tx: optax.GradientTransformation, key_data: jax.Array) -> State:
    """The step-0 train state from `seed_key_data(seed)`; jit it with out_shardings to create
    it sharded. The key is an argument, not a constant: XLA would otherwise constant-fold the
    whole random init at compile time (minutes for a 370M model on GPU)."""
    key = jax.random.wrap_key_data(key_data)
    params = nnx.to_pure_dict(nnx.split(build_model(cfg.model, seed=key))[1])
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}
