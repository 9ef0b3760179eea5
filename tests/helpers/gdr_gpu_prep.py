"""The Triton chunk prep kernels' keyword arguments in Pallas interpret mode, shared by the Triton
and the Mosaic GPU prep tests (no tests here)."""

from kernels.gated_delta_rule.gpu.triton_common import dot_fn


def triton_prep_kw(precision, decays, *, C, block_d=16):
    """`prep_triton.prep_fwd`/`prep_bwd` keywords at chunk size C in interpret mode."""
    return dict(C=C, block_d=block_d, dot=dot_fn(precision, True),
                dot_inv=dot_fn("highest" if precision == "highest" else "tf32", True),
                interpret=True, compiler_params=None, decays=decays)
