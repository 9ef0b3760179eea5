"""Gated delta rule (Gated DeltaNet recurrence): chunked sequence op, decoding step, references."""

from kernels.gated_delta_rule.api import chunk_gated_delta_rule, resolve_implementation
from kernels.gated_delta_rule.step import gated_delta_rule_step

__all__ = ["chunk_gated_delta_rule", "gated_delta_rule_step", "resolve_implementation"]
