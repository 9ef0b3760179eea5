"""The Triton chunk prep kernels' keyword arguments in Pallas interpret mode, shared by the Triton
and the Mosaic GPU prep tests (no tests here)."""

import jax.numpy as jnp
import numpy as np

from kernels.gated_delta_rule.gpu import chunk_math
from kernels.gated_delta_rule.gpu import prep_triton as pt
from kernels.gated_delta_rule.gpu.triton_common import dot_fn


def triton_prep_kw(precision, decays, *, C, block_d=16):
    """`prep_triton.prep_fwd`/`prep_bwd` keywords at chunk size C in interpret mode."""
    return dict(C=C, block_d=block_d, dot=dot_fn(precision, True),
                dot_inv=dot_fn("highest" if precision == "highest" else "tf32", True),
                interpret=True, compiler_params=None, decays=decays)


def prep_operands(Kp, Vp, decay, *, C, BH, TP):
    """Random q, k, v [BH, TP, Kp | Vp] (bf16), gs (`chunk_math.decay_input`'s "xla" array of
    g in (-decay, 0)) and beta in (0, 2): the Mosaic prep kernels' inputs; and the generator,
    for more operands."""
    rng = np.random.default_rng(Kp + Vp)
    bf = jnp.bfloat16
    q, k = (jnp.asarray(rng.normal(size=(BH, TP, Kp)) / 8, bf) for _ in range(2))
    v = jnp.asarray(rng.normal(size=(BH, TP, Vp)), bf)
    g = jnp.asarray(-rng.uniform(0, decay, (BH, TP)), jnp.float32)
    beta = jnp.asarray(rng.uniform(0, 2, (BH, TP)), jnp.float32)
    return (q, k, v, chunk_math.decay_input(g, C, "xla"), beta), rng
