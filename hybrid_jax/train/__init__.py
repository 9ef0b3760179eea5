"""Training: one sharded loop for every family, with exact resume and orbax checkpoints.

    from hybrid_jax.train import load_config, train
    cfg = load_config("experiments/configs/hybrid_tiny.yaml", ["optim.lr=1e-3"])
    summary = train(cfg)   # {"status", "steps", "tokens", "scaling_points": [...], ...}

Modules: config (RunConfig), schedule, step (the pure train/eval steps), loop (train),
checkpoint, evaluate, metrics (+ tb, a TensorBoard writer), source (BatchSource), cli.
"""

from hybrid_jax.train.config import RunConfig, load_config
from hybrid_jax.train.loop import ConfigMismatchError, NonFiniteError, check_fits, train

__all__ = ["ConfigMismatchError", "NonFiniteError", "RunConfig", "check_fits", "load_config",
           "train"]
