"""Which kernels pallas_gpu's "auto" choices run (prep="auto", state_pass="auto"), by shape and
precision, with the measurements behind each choice."""

from __future__ import annotations


def auto_state_pass(precision, interpret, C, Kp, V):
    """What state_pass="auto" runs: the Mosaic forward with the split backward whose sequential
    kernel is Mosaic GPU too ("mosaic_dh") where the Mosaic kernels take the shape (bf16
    operands; C = 64, Kp 64 or 128, V a multiple of 64: `pallas_mgpu_common.takes_shape`), else
    "splitbwd". On an H200 (eleventh session, one call, fwd+bwd ms, the Triton prep)
    mosaic_dh against mosaic_splitbwd (the ninth session's choice): B4 T4096 H16 2.012 / 2.174,
    7B layer 2.188 / 2.582, B1 T8192 H32 2.027 / 2.261 (experiments/LOG.md). Interpret mode
    keeps "splitbwd": the Mosaic GPU interpreter is about 200x slower than Pallas' (CPU tests;
    the Mosaic passes have their own)."""
    if precision != "default" or interpret:
        return "splitbwd"
    from kernels.gated_delta_rule.pallas_mgpu_common import takes_shape  # imports Mosaic GPU
    return "mosaic_dh" if takes_shape(C, Kp, V) else "splitbwd"


def auto_prep(precision, interpret, decays, C, Kp, Vp):
    """What prep="auto" runs: the Mosaic GPU prep forward (with the Triton split backward)
    where it takes the shape (precision "default", the outer-difference decays, C = 64, Kp 64
    or 128, Vp a multiple of 64 up to 256: `pallas_mgpu_prep.takes_shape`), else
    "pallas_splitbwd". On an H200 (eleventh session, one call, fwd+bwd ms, the ninth session's
    state pass) prep="mosaic" against "pallas_splitbwd": B4 T4096 H16 2.024 / 2.174, 7B layer
    2.436 / 2.582, B1 T8192 H32 2.167 / 2.261; its forward alone 0.315 against 0.416 ms at the
    first. Interpret mode keeps "pallas_splitbwd", as `auto_state_pass` does."""
    if precision != "default" or interpret or decays == "exact":
        return "pallas_splitbwd"
    from kernels.gated_delta_rule.pallas_mgpu_prep import takes_shape  # imports Mosaic GPU
    return "mosaic" if takes_shape(C, Kp, Vp) else "pallas_splitbwd"
