"""The GDN layers' short convolution: depthwise causal conv over time, then SiLU. XLA off a GPU;
on a GPU, Pallas (Triton) kernels forward and backward."""

from kernels.causal_conv.api import causal_conv_silu, resolve_conv_implementation

__all__ = ["causal_conv_silu", "resolve_conv_implementation"]
