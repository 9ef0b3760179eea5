"""One run's compiled pieces: mesh, shardings of the train state, and the jitted init, train
and eval functions. The loop and benchmarks/train_throughput.py build them the same way.

Nothing here compiles until a function is called: `jax.jit` is lazy.
"""

from __future__ import annotations

import dataclasses
import functools
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hybrid_jax import sharding
from hybrid_jax.train.config import RunConfig
from hybrid_jax.train.schedule import Schedule, build_schedule
from hybrid_jax.train.step import (abstract_model, decay_mask, init_state, make_eval_step,
                                   make_optimizer, make_train_step, seed_key_data)


@dataclasses.dataclass
class Program:
    mesh: Mesh
    schedule: Schedule
    plan: sharding.ShardingPlan
    graphdef: Any
    tx: optax.GradientTransformation
    state_shardings: dict
    batch_sharding: NamedSharding
    abstract_state: Any           # ShapeDtypeStructs carrying the target shardings (for restore)
    init: Callable[[], dict]      # the step-0 state, created sharded by a jitted function
    init_with: Callable[[dict], dict]  # the step-0 state around given (placed) parameters
    step: Callable                # jitted: (state, batch) -> (state, metrics); state donated
    eval_step: Callable           # pure (params, batch) -> sums; Evaluator jits it


def build_program(cfg: RunConfig, mesh_shape: tuple[int, int, int],
                  devices: list | None = None) -> Program:
    mesh = sharding.make_mesh(mesh_shape, devices)
    schedule = build_schedule(cfg)
    graphdef, abstract = abstract_model(cfg.model, cfg.train.seed)
    plan = sharding.param_plan(abstract, mesh)
    tx = make_optimizer(cfg, schedule, decay_mask(abstract))
    rep = NamedSharding(mesh, P())
    abstract_opt = jax.eval_shape(tx.init, nnx.to_pure_dict(abstract))
    opt_shardings = optax.tree_map_params(
        tx, lambda _, s: s, abstract_opt, plan.shardings, transform_non_params=lambda _: rep,
        is_leaf=lambda x: isinstance(x, NamedSharding))
    state_sh = {"step": rep, "params": plan.shardings, "opt_state": opt_shardings}
    batch_sh = sharding.batch_sharding(mesh)
    init_fn = partial(init_state, cfg, tx)
    key_data = seed_key_data(cfg.train.seed)
    abstract_state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                  jax.eval_shape(init_fn, key_data), state_sh)
    init_jit = jax.jit(init_fn, in_shardings=rep, out_shardings=state_sh)
    init_with = jax.jit(lambda params: {"step": jnp.zeros((), jnp.int32), "params": params,
                                        "opt_state": tx.init(params)},
                        in_shardings=(plan.shardings,), out_shardings=state_sh)
    step = jax.jit(_under_mesh(mesh, make_train_step(graphdef, tx, schedule, cfg, batch_sh)),
                   in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, rep),
                   donate_argnums=(0,))
    return Program(mesh=mesh, schedule=schedule, plan=plan, graphdef=graphdef, tx=tx,
                   state_shardings=state_sh, batch_sharding=batch_sh,
                   abstract_state=abstract_state,
                   init=lambda: init_jit(key_data), init_with=init_with, step=step,
                   eval_step=_under_mesh(mesh, make_eval_step(graphdef)))


def _under_mesh(mesh: Mesh, fn: Callable) -> Callable:
    """fn traced with the mesh in context: Pallas TPU kernels (splash, the gated delta rule)
    find it there to wrap themselves in shard_map, since XLA cannot partition Mosaic calls;
    the abstract mesh also tells the attention dispatch which platform it compiles for."""

    @functools.wraps(fn)
    def wrapped(*args):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return fn(*args)

    return wrapped
