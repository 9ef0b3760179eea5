from hybrid_jax.hf.cli import export_main as main  # noqa: F401
