"""hybrid-jax kernels: the gated delta rule (plain-jnp references and Pallas GPU and TPU kernels,
behind one function) and attention dispatch (XLA, cuDNN, splash).

Not the unrelated PyPI package that is also called `kernels`; tests/kernels/test_package.py
checks which one is imported.
"""

from kernels.attention import attention, resolve_attention_implementation
from kernels.gated_delta_rule import (chunk_gated_delta_rule, gated_delta_rule_step,
                                      resolve_implementation)

__all__ = [
    "attention",
    "chunk_gated_delta_rule",
    "gated_delta_rule_step",
    "resolve_attention_implementation",
    "resolve_implementation",
]
