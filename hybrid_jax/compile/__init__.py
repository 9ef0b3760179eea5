"""Ahead-of-time compilation of the sharded train step for a TPU topology, on any host."""

from hybrid_jax.compile.aot import TOPOLOGIES, CompileReport, TopologyError, compile_train_step

__all__ = ["TOPOLOGIES", "CompileReport", "TopologyError", "compile_train_step"]
