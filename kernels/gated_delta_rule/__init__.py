"""Gated delta rule (Gated DeltaNet recurrence): the chunked sequence op behind one function
(`api.py`), the decoding step (`step.py`), the plain-jnp references (`reference.py`), and the
Pallas kernels per platform (`gpu/`, `tpu/`)."""

from kernels.gated_delta_rule.api import (IMPLEMENTATIONS, chunk_gated_delta_rule,
                                          resolve_implementation)
from kernels.gated_delta_rule.step import gated_delta_rule_step

__all__ = ["IMPLEMENTATIONS", "chunk_gated_delta_rule", "gated_delta_rule_step",
           "resolve_implementation"]
