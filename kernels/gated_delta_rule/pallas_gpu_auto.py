"""Which kernels pallas_gpu's "auto" choices run (prep="auto", state_pass="auto"), by shape and
precision, with the measurements behind each choice."""

from __future__ import annotations


def auto_state_pass(precision, interpret, C, Kp, V):
    """What state_pass="auto" runs: the Mosaic forward with the split backward whose two
    kernels are Mosaic GPU too ("mosaic_dqk") where all of them take the shape (bf16
    operands; C = 64, Kp 64 or 128, V a multiple of 64 up to 192: `pallas_mgpu_dqk.takes_shape`);
    "mosaic_dh" (its parallel kernel in Triton) where only V > 192 rules that out; else
    "splitbwd". On an H200 (twelfth session, one call, fwd+bwd ms, the Mosaic prep, caller
    layout) mosaic_dqk against mosaic_dh: B4 T4096 H16 1.571 / 1.693, 7B layer 1.823 / 1.899,
    B1 T8192 H32 1.699 / 1.755; the dqk kernel alone 0.189 against Triton's 0.283 ms at the
    first (a trace). Eleventh session, mosaic_dh against mosaic_splitbwd (the ninth session's
    choice, Triton prep): 2.012 / 2.174, 2.188 / 2.582, 2.027 / 2.261 (experiments/LOG.md).
    Interpret mode keeps "splitbwd": the Mosaic GPU interpreter is about 200x slower than
    Pallas' (CPU tests; the Mosaic passes have their own)."""
    if precision != "default" or interpret:
        return "splitbwd"
    from kernels.gated_delta_rule import pallas_mgpu_common, pallas_mgpu_dqk  # Mosaic GPU
    if pallas_mgpu_dqk.takes_shape(C, Kp, V):
        return "mosaic_dqk"
    return "mosaic_dh" if pallas_mgpu_common.takes_shape(C, Kp, V) else "splitbwd"


def auto_caller_layout(prep):
    """What caller_layout=None runs: the caller's layout wherever the prep is the Mosaic one
    (with a Mosaic forward state pass, o and dO too), which is where it was timed. On an H200
    (twelfth session, one call, fwd+bwd ms, state_pass "mosaic_dh") with and without:
    B4 T4096 H16 1.693 / 1.848, 7B layer 1.899 / 2.077, B1 T8192 H32 1.755 / 1.981; a trace
    at the first shows the seven XLA transposes (0.27 ms) gone. The Triton prep with it is
    bitwise the same but untimed, so it stays off there."""
    return prep == "mosaic"


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
