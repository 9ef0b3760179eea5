"""The GPU op's `pad_o` (kernels/gated_delta_rule/gpu/chunk.py): o handed over in the kernels'
value width, zero past V, in Pallas' interpreters on CPU and compiled on a GPU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.gated_delta_rule.gpu.chunk import chunk_gated_delta_rule_pallas_gpu

from tests.helpers.gdr import make_inputs
from tests.helpers.interpret_child import in_child


def check_pad_o(interpret: bool):
    """At K 128, V 96 (V in the kernels' 128) pad_o returns o 128 wide: its first 96 columns
    are the plain call's, the rest zero; with a cotangent zero past V the gradients are the
    plain call's, bitwise (the pad of dO that pad_o saves adds exact zeros). (At the ladder's
    K 48 the kernels take V = 96 unpadded, so there o is 96 wide either way.)"""
    args = make_inputs(21, 1, 64, 1, 1, 128, 96, decay="mild")[:5]
    args = tuple(jnp.asarray(x, jnp.bfloat16) for x in args[:3]) + args[3:]
    dO = jnp.asarray(np.random.default_rng(1).normal(size=(1, 64, 1, 96)), jnp.bfloat16)
    run = lambda pad: jax.jit(lambda *a: jax.vjp(lambda *a: chunk_gated_delta_rule_pallas_gpu(
        *a, use_qk_l2norm=True, precision="default", interpret=interpret, pad_o=pad)[0],
        *a))(*args)
    (o, vjp), (o_pad, vjp_pad) = run(False), run(True)
    assert o.shape == (1, 64, 1, 96) and o_pad.shape == (1, 64, 1, 128)
    assert bool(jnp.all(o_pad[..., :96] == o)) and bool(jnp.all(o_pad[..., 96:] == 0))
    dO_pad = jnp.pad(dO, [(0, 0)] * 3 + [(0, 32)])
    for a, b in zip(vjp(dO), vjp_pad(dO_pad)):
        assert bool(jnp.all(a == b))


@in_child
def test_interpret_pad_o_hands_over_the_kernels_width_zero_past_v():
    check_pad_o(interpret=True)


@pytest.mark.gpu
def test_gpu_pad_o_hands_over_the_kernels_width_zero_past_v():
    check_pad_o(interpret=False)
