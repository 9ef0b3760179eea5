"""The API's pallas_gpu on top of the kernels: which implementation runs where (backend,
precision, "auto" and its state pass), the GDN layer's shard_map around a Pallas call, and,
on a GPU, the API's dispatch against XLA's chunked path. Split out of
tests/test_kernels_gdr_pallas_gpu.py (whose helpers it uses) in the ninth session."""

import functools

import jax
import jax.numpy as jnp
import pytest

from kernels import chunk_gated_delta_rule, resolve_implementation
from tests.test_kernels_gdr import make_inputs, rel_err
from tests.test_kernels_gdr_pallas_gpu import FP32_TOL, _forward_and_grads, _weights


def test_api_pallas_gpu_runs_only_on_a_gpu_backend():
    if jax.default_backend() == "gpu":
        assert resolve_implementation("pallas_gpu") == "pallas_gpu"
        return
    args = make_inputs(8, 1, 4, 1, 1, 16, 16)
    with pytest.raises(RuntimeError, match="gpu backend"):
        chunk_gated_delta_rule(*args[:5], implementation="pallas_gpu")
    assert resolve_implementation("auto") == "chunked"


def test_api_precision_choice():
    args = make_inputs(9, 1, 20, 1, 2, 16, 16)
    hi = chunk_gated_delta_rule(*args[:5], implementation="chunked")[0]
    lo = chunk_gated_delta_rule(*args[:5], implementation="chunked", precision="default")[0]
    assert rel_err(lo, hi) < 1e-2  # on CPU DEFAULT is fp32 too; on GPU it is TF32
    with pytest.raises(ValueError, match="precision"):
        chunk_gated_delta_rule(*args[:5], precision="bf16")


_SHARD_SCRIPT = """
import jax, numpy as np
from hybrid_jax.models.gdn import _sharded_pallas_gdr
from hybrid_jax.sharding import make_mesh
from kernels import chunk_gated_delta_rule, resolve_implementation
from tests.test_kernels_gdr import make_inputs
q, k, v, g, b, _ = make_inputs(0, 2, 20, 2, 4, 16, 16)
ref = chunk_gated_delta_rule(q, k, v, g, b, use_qk_l2norm=True, chunk_size=16,
                             implementation="chunked")[0]
with jax.set_mesh(make_mesh((1, 2, 2), jax.devices())):
    o = jax.jit(lambda *a: _sharded_pallas_gdr(*a, impl="chunked", chunk_size=16,
                                                     precision="highest"))(q, k, v, g, b)
assert float(np.abs(o - ref).max()) < 1e-6, np.abs(o - ref).max()
assert "fsdp" in str(o.sharding.spec) and "tensor" in str(o.sharding.spec), o.sharding
print("ok")
"""


def test_gdn_layer_shard_map_wrapper_splits_batch_and_heads():
    """The GDN layer's shard_map around a Pallas call, exercised with the XLA implementation
    on 4 host devices (mesh data=1, fsdp=2, tensor=2): same values, sharded output."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu", PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, "-c", _SHARD_SCRIPT], cwd=root, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


@pytest.mark.gpu
def test_gpu_api_dispatch_matches_chunked():
    args = make_inputs(12, 2, 150, 2, 4, 96, 192, decay="mild")
    o, S = chunk_gated_delta_rule(*args[:5], initial_state=args[5], output_final_state=True,
                                  implementation="pallas_gpu")
    o_ref, S_ref = chunk_gated_delta_rule(*args[:5], initial_state=args[5],
                                          output_final_state=True, implementation="chunked")
    assert rel_err(o, o_ref) < FP32_TOL and rel_err(S, S_ref) < FP32_TOL


@pytest.mark.gpu
@pytest.mark.parametrize("K,V", [(96, 192), (48, 96)])
def test_gpu_api_default_precision_runs_theauto_state_pass(K, V):
    """At "default" the API's pallas_gpu resolves prep="auto", state_pass="auto" and
    caller_layout=None: at the 7B layer's head dims (K=96 -> 128, V=192) the Mosaic prep
    forward, the Mosaic forward state pass and the split backward with both kernels in Mosaic
    GPU, all in the caller's layout; at the 370M model's (K=48 -> 64, V=96 -> 128 for the
    prep) the Mosaic prep in the caller's layout with the Triton state pass. Output, state and
    gradients against XLA's chunked at "highest", to bf16-level error."""
    args = make_inputs(13, 1, 300, 2, 4, K, V, decay="mild")
    w32 = tuple(jnp.asarray(w, jnp.float32) for w in _weights(3, 1, 300, 4, K, V))
    runs = {impl: _forward_and_grads(
        functools.partial(chunk_gated_delta_rule, implementation=impl, precision=p,
                          output_final_state=True), w32, args)
        for impl, p in (("pallas_gpu", "default"), ("chunked", "highest"))}
    (o, S), grads = runs["pallas_gpu"]
    (o_ref, S_ref), grads_ref = runs["chunked"]
    errs = {"o": rel_err(o, o_ref), "state": rel_err(S, S_ref)}
    errs.update({f"d{n}": rel_err(grads[n], grads_ref[n]) for n in grads})
    assert max(errs.values()) < 2e-2, errs
