"""Helpers shared by test files (no tests here); import them as `from tests.helpers.X import ...`.

training       a tiny real token store, tiny run configs, training in child processes
sweeps         micro ladders and the sweep command line in child processes
data           a text corpus from stdlib sources, fake distribution metadata
gdr            the gated delta rule's float64 oracle, inputs and the relative error
gdr_gpu_prep   the Triton prep kernels' keyword arguments in interpret mode
gdr_gpu_state  the GPU state pass's operands and plain-jnp references
attention      attention inputs
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
