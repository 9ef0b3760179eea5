"""The gated delta rule on a TPU: `chunk.py` (XLA glue and the custom_vjp) over the Mosaic
kernels of `kernels.py`."""
