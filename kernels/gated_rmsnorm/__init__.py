"""The GDN layers' output normalisation: per-head RMSNorm of the delta rule's output, gated by
SiLU. XLA off a GPU; on a GPU a Pallas (Triton) forward and backward."""

from kernels.gated_rmsnorm.api import gated_rmsnorm, resolve_norm_implementation

__all__ = ["gated_rmsnorm", "resolve_norm_implementation"]
