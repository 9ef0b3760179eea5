"""Softmax attention with one dispatch over cuDNN (GPU), XLA (any platform) and splash (TPU)."""

from kernels.attention.api import attention, resolve_attention_implementation

__all__ = ["attention", "resolve_attention_implementation"]
