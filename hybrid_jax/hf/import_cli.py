from hybrid_jax.hf.cli import import_main as main  # noqa: F401
