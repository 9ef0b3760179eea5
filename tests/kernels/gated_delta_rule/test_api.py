"""Gated delta rule: both references against a float64 NumPy recurrence, forward and gradients.

Errors are relative: max|a - b| / max|b| (taken as the absolute error when b is all zero).
The forward oracle is the NumPy loop `np_gated_delta_rule` (tests/helpers/gdr.py). The gradient oracle is jax.grad of the
`recurrent` definition run in float64 (after checking that its forward equals NumPy).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import chunk_gated_delta_rule, gated_delta_rule_step, resolve_implementation
from kernels.gated_delta_rule import reference

from tests.helpers.gdr import make_inputs, np_gated_delta_rule, rel_err

FP32_TOL = 1e-5


def _loss(fn, weights, q, k, v, g, beta, S0, **kw):
    """A random linear functional of (o, final_state); (o, final_state) ride along as aux."""
    o, S = fn(q, k, v, g, beta, initial_state=S0, **kw)
    w_o, w_S = weights
    return jnp.sum(o * w_o) + jnp.sum(S * w_S), (o, S)


def _forward_and_grads(fn, weights, args, **kw):
    """((o, final_state), grads w.r.t. every argument that is not None), in one compile."""
    argnums = tuple(i for i, a in enumerate(args) if a is not None)
    loss = functools.partial(_loss, fn, weights, **kw)
    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=argnums, has_aux=True))(*args)
    return out, grads


# (B, T, H, HV, K, V, initial state, decay, chunk_size, use_qk_l2norm, scale): every value
# of T {1, 63, 130}, K {32, 96}, V {48, 192}, HV = 2H, decay {zero, mild, strong}, with
# and without an initial state, chunk sizes that T is not a multiple of.
CASES = {
    "T1-K32-V48-strong": (1, 1, 2, 2, 32, 48, False, "strong", 64, False, None),
    "T63-K32-V192-gqa-zero-init": (2, 63, 1, 2, 32, 192, True, "zero", 64, False, None),
    "T130-K96-V48-gqa-strong-init-l2": (1, 130, 2, 4, 96, 48, True, "strong", 64, True, None),
    "T130-K96-V192-zero-c16": (2, 130, 1, 1, 96, 192, False, "zero", 16, False, None),
    "T63-K96-V48-mild-init-c16-scale": (1, 63, 2, 2, 96, 48, True, "mild", 16, False, 0.3),
    "T130-K32-V48-gqa-mild-l2": (1, 130, 1, 2, 32, 48, False, "mild", 64, True, None),
    "T1-K96-V192-gqa-zero-init-c16": (2, 1, 1, 2, 96, 192, True, "zero", 16, False, None),
    "T63-K32-V48-strong-c16": (1, 63, 1, 1, 32, 48, False, "strong", 16, False, None),
}


@functools.lru_cache(maxsize=None)
def _oracle(case):
    B, T, H, HV, K, V, init, decay, _, l2, scale = CASES[case]
    args = make_inputs(list(CASES).index(case), B, T, H, HV, K, V, decay=decay, init=init,
                       unit_k=not l2)
    rng = np.random.default_rng(1)
    weights = (rng.normal(size=(B, T, HV, V)), rng.normal(size=(B, HV, K, V)))
    o_np, S_np = np_gated_delta_rule(*args[:5], scale=scale, initial_state=args[5],
                                     use_qk_l2norm=l2)
    with jax.enable_x64(True):
        args64 = tuple(None if a is None else jnp.asarray(a, jnp.float64) for a in args)
        w64 = tuple(jnp.asarray(w, jnp.float64) for w in weights)
        (o64, S64), grads64 = _forward_and_grads(reference.recurrent, w64, args64,
                                                 scale=scale, use_qk_l2norm=l2)
        assert rel_err(o64, o_np) < 1e-12 and rel_err(S64, S_np) < 1e-12
        grads64 = [np.asarray(x) for x in grads64]
    return args, weights, o_np, S_np, grads64


@pytest.mark.parametrize("implementation", ["recurrent", "chunked"])
@pytest.mark.parametrize("case", list(CASES))
def test_forward_and_grads_match_float64(case, implementation):
    _, _, _, _, _, _, _, _, chunk, l2, scale = CASES[case]
    args, weights, o_np, S_np, grads64 = _oracle(case)
    kw = dict(scale=scale, use_qk_l2norm=l2, chunk_size=chunk, implementation=implementation)

    def fn(q, k, v, g, beta, initial_state, **kw):
        return chunk_gated_delta_rule(q, k, v, g, beta, initial_state=initial_state,
                                      output_final_state=True, **kw)

    w32 = tuple(jnp.asarray(w, jnp.float32) for w in weights)
    (o, S), grads = _forward_and_grads(fn, w32, args, **kw)
    assert o.dtype == jnp.float32 and S.dtype == jnp.float32
    assert rel_err(o, o_np) < FP32_TOL
    assert rel_err(S, S_np) < FP32_TOL
    names = [n for n, a in zip(("q", "k", "v", "g", "beta", "initial_state"), args)
             if a is not None]
    errs = {n: rel_err(a, b) for n, a, b in zip(names, grads, grads64)}
    assert max(errs.values()) < FP32_TOL, errs


def test_chunk_sizes_agree_with_recurrent():
    args = make_inputs(3, 1, 75, 2, 2, 32, 40, decay="mild")
    ref, S_ref = chunk_gated_delta_rule(*args[:5], initial_state=args[5],
                                        output_final_state=True, implementation="recurrent")
    for C in (1, 7, 128):  # 16 and 64 are in CASES; 128 > T is a single padded chunk
        o, S = chunk_gated_delta_rule(*args[:5], initial_state=args[5], output_final_state=True,
                                      chunk_size=C, implementation="chunked")
        assert rel_err(o, ref) < FP32_TOL and rel_err(S, S_ref) < FP32_TOL, C


def test_bf16_inputs_error_within_twice_the_recurrent_error():
    q, k, v, g, beta, S0 = make_inputs(4, 2, 130, 2, 4, 32, 48, decay="mild", unit_k=False)
    o_np, S_np = np_gated_delta_rule(q, k, v, g, beta, initial_state=S0, use_qk_l2norm=True)
    bf = [jnp.asarray(x, jnp.bfloat16) for x in (q, k, v, g, beta)]
    errs = {}
    for impl in ("recurrent", "chunked"):
        o, S = chunk_gated_delta_rule(*bf, initial_state=jnp.asarray(S0), use_qk_l2norm=True,
                                      output_final_state=True, implementation=impl)
        assert o.dtype == jnp.bfloat16 and S.dtype == jnp.float32
        errs[impl] = (rel_err(o, o_np), rel_err(S, S_np))
    for i, what in enumerate(("o", "state")):
        assert errs["chunked"][i] <= 2 * errs["recurrent"][i] + 1e-3, (what, errs)
    assert errs["recurrent"][0] < 3e-2, errs


def test_decoding_steps_equal_the_sequence_op():
    q, k, v, g, beta, S0 = make_inputs(5, 2, 20, 1, 2, 32, 48, unit_k=False)
    o_seq, S_seq = chunk_gated_delta_rule(q, k, v, g, beta, initial_state=S0, use_qk_l2norm=True,
                                          output_final_state=True, implementation="recurrent")
    step = jax.jit(functools.partial(gated_delta_rule_step, use_qk_l2norm=True))
    S, outs = jnp.asarray(S0), []
    for t in range(q.shape[1]):
        o_t, S = step(q[:, t], k[:, t], v[:, t], g[:, t], beta[:, t], S)
        outs.append(o_t)
    np.testing.assert_allclose(np.stack(outs, axis=1), o_seq, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(S, S_seq, rtol=1e-6, atol=1e-6)


def test_strong_decay_long_sequence_stays_finite():
    """g = -20 everywhere: in-chunk decay exponents reach +-1260, which must be masked before exp."""
    q, k, v, _, beta, S0 = make_inputs(6, 1, 2048, 1, 1, 32, 32)
    g = np.full(beta.shape, -20.0, np.float32)

    def loss(q, k, v, g, beta, S0):
        o, S = chunk_gated_delta_rule(q, k, v, g, beta, initial_state=S0,
                                      output_final_state=True, implementation="chunked")
        return jnp.sum(o) + jnp.sum(S), o

    (val, o), grads = jax.jit(jax.value_and_grad(loss, argnums=range(6), has_aux=True))(
        q, k, v, g, beta, S0)
    assert np.isfinite(val)
    for name, gr in zip(("q", "k", "v", "g", "beta", "S0"), grads):
        assert np.all(np.isfinite(gr)), name
    # With decay exp(-20) the state is, to fp32, just the last write.
    last = (beta[:, -1, :, None, None] * k[:, -1, :, :, None] * v[:, -1, :, None, :])
    np.testing.assert_allclose(o[:, -1], np.einsum("bhkv,bhk->bhv", last, q[:, -1]) * 32 ** -0.5,
                               rtol=1e-5, atol=1e-6)


def test_final_state_is_none_unless_requested():
    args = make_inputs(7, 1, 5, 1, 1, 8, 8)
    o, S = chunk_gated_delta_rule(*args[:5])
    assert S is None and o.shape == (1, 5, 1, 8)


def test_auto_resolves_to_chunked():
    assert resolve_implementation("auto") == "chunked"
    assert resolve_implementation("recurrent") == "recurrent"


def test_auto_on_a_gpu_picks_the_kernel_at_default_precision_where_it_fits(monkeypatch):
    """The backend is faked (`target_platform` reads jax.default_backend): a GPU at precision
    "default" gets pallas_gpu for head dims it takes, `chunked` otherwise and at "highest"."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert resolve_implementation("auto", "default") == "pallas_gpu"
    assert resolve_implementation("auto", "default", (96, 192)) == "pallas_gpu"
    assert resolve_implementation("auto", "highest", (96, 192)) == "chunked"
    assert resolve_implementation("auto", "default", (64, 40)) == "chunked"  # V % 16
    assert resolve_implementation("auto", "default", (512, 64)) == "chunked"  # K > 256
    assert resolve_implementation("auto", "default", (64, 64), 48) == "chunked"  # chunk size
    with pytest.raises(ValueError, match="precision"):
        resolve_implementation("auto", "tf32")
    assert resolve_implementation("auto", "default", (64, 64), 64, jnp.float64) == "chunked"
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert resolve_implementation("auto", "default", (96, 192)) == "chunked"


def test_auto_precision_is_default_on_a_gpu_and_highest_elsewhere(monkeypatch):
    """The models' default: precision "auto" with implementation "auto" runs the Pallas
    kernel at "default" on a GPU, XLA chunked at "highest" on CPU and TPU."""
    from kernels.gated_delta_rule.api import resolve_precision

    for backend, precision, impl in (("gpu", "default", "pallas_gpu"), ("cpu", "highest", "chunked"),
                                     ("tpu", "highest", "chunked")):
        monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
        assert resolve_precision("auto") == precision
        assert resolve_implementation("auto", "auto", (128, 128)) == impl
    assert resolve_precision("highest") == "highest"
    with pytest.raises(ValueError, match="expected 'auto' or one of"):
        resolve_precision("tf32")


@pytest.mark.parametrize("platform, name, call, match", [
    ("gpu", "pallas_gpu", dict(dims=(64, 40)), "pallas_gpu' takes K <= 256 and V <= 256 a "
                                               "multiple of 16; got K=64, V=40"),
    ("gpu", "pallas_gpu", dict(dims=(64, 64), chunk_size=48), "power of two >= 16; got 48"),
    ("gpu", "pallas_gpu", dict(dtype=jnp.float64), "computes in float32 only"),
    ("tpu", "pallas_tpu", dict(precision="default"), "has precision='highest' only"),
    ("tpu", "pallas_tpu", dict(chunk_size=12), "multiple of 8"),
])
def test_a_named_pallas_implementation_that_cannot_take_the_call_raises(monkeypatch, platform,
                                                                         name, call, match):
    """On its platform (faked), before anything is traced: one line naming the limit."""
    monkeypatch.setattr(jax, "default_backend", lambda: platform)
    call = dict(dict(precision="highest", dims=(64, 64), chunk_size=64, dtype=None), **call)
    with pytest.raises(ValueError, match=match):
        resolve_implementation(name, call["precision"], call["dims"], call["chunk_size"],
                               call["dtype"])
    assert resolve_implementation(name, "default" if platform == "gpu" else "highest",
                                  (64, 64)) == name


def test_precision_choice():
    args = make_inputs(9, 1, 20, 1, 2, 16, 16)
    hi = chunk_gated_delta_rule(*args[:5], implementation="chunked")[0]
    lo = chunk_gated_delta_rule(*args[:5], implementation="chunked", precision="default")[0]
    assert rel_err(lo, hi) < 1e-2  # on CPU DEFAULT is fp32 too; on GPU it is TF32
    with pytest.raises(ValueError, match="precision"):
        chunk_gated_delta_rule(*args[:5], precision="bf16")


_SHARD_SCRIPT = """
import functools, jax, numpy as np
from hybrid_jax.sharding import make_mesh
from kernels.gated_delta_rule import api, reference
from tests.helpers.gdr import make_inputs
q, k, v, g, b, S0 = make_inputs(0, 2, 20, 2, 4, 16, 16)
fn = lambda q, k, v, g, b, S0: reference.chunked(q, k, v, g, b, initial_state=S0, chunk_size=16,
                                                use_qk_l2norm=True)
for S0_, final in ((None, False), (S0, True)):
    ref = api.per_shard(fn, q, k, v, g, b, S0_, final)
    with jax.set_mesh(make_mesh((1, 2, 2), jax.devices())):
        o, S = jax.jit(lambda *a: api.per_shard(fn, *a, final))(q, k, v, g, b, S0_)
    assert float(np.abs(o - ref[0]).max()) < 1e-6, np.abs(o - ref[0]).max()
    assert "fsdp" in str(o.sharding.spec) and "tensor" in str(o.sharding.spec), o.sharding
    assert (S is None) == (not final)
    if final:
        assert float(np.abs(S - ref[1]).max()) < 1e-6 and "tensor" in str(S.sharding.spec)
print("ok")
"""


def test_pallas_calls_run_per_shard_of_batch_and_heads():
    """The API's shard_map around a Pallas call (`api.per_shard`), exercised with the XLA
    reference on 4 host devices (mesh data=1, fsdp=2, tensor=2), with and without an initial
    and a final state: same values, sharded outputs."""
    import os
    import subprocess
    import sys
    from tests.helpers import REPO as root, xla_flags

    env = dict(os.environ, XLA_FLAGS=xla_flags(4),
               JAX_PLATFORMS="cpu", PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, "-c", _SHARD_SCRIPT], cwd=root, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


@pytest.mark.parametrize("name, platform", [("pallas_gpu", "gpu"), ("pallas_tpu", "tpu")])
def test_pallas_off_its_platform_raises(name, platform):
    if jax.default_backend() == platform:
        assert resolve_implementation(name) == name
        return
    args = make_inputs(8, 1, 4, 1, 1, 8, 8)
    with pytest.raises(RuntimeError, match=f"compiles only for a {platform} backend"):
        chunk_gated_delta_rule(*args[:5], implementation=name)


def _bad(**over):
    q, k, v, g, beta, S0 = make_inputs(9, 2, 6, 2, 4, 8, 8)
    kw = dict(q=q, k=k, v=v, g=g, beta=beta, initial_state=S0)
    kw.update(over)
    return kw


@pytest.mark.parametrize("kw, extra, error, match", [
    (_bad(v=np.zeros((2, 6, 3, 8), np.float32), g=np.zeros((2, 6, 3), np.float32),
          beta=np.zeros((2, 6, 3), np.float32), initial_state=None), {}, ValueError,
     "not a multiple"),
    (_bad(), {"implementation": "triton"}, ValueError, "unknown"),
    (_bad(), {"chunk_size": 0}, ValueError, "chunk_size"),
    (_bad(v=np.zeros((2, 5, 4, 8), np.float32)), {}, ValueError, "v leading dims"),
    (_bad(k=np.zeros((1, 6, 2, 8), np.float32)), {}, ValueError, "q and k"),
    (_bad(g=np.zeros((2, 6, 2), np.float32)), {}, ValueError, "^g must"),
    (_bad(beta=np.zeros((2, 6), np.float32)), {}, ValueError, "^beta must have 3 dims"),
    (_bad(initial_state=np.zeros((2, 4, 8, 7), np.float32)), {}, ValueError, "initial_state"),
    (_bad(initial_state=np.zeros((2, 4, 8, 8), jnp.bfloat16)), {}, TypeError, "float32"),
    (_bad(q=np.zeros((2, 6, 2, 8), np.int32)), {}, TypeError, "^q must be a floating"),
])
def test_bad_inputs_raise_naming_the_argument(kw, extra, error, match):
    with pytest.raises(error, match=match):
        chunk_gated_delta_rule(kw.pop("q"), kw.pop("k"), kw.pop("v"), kw.pop("g"),
                               kw.pop("beta"), **kw, **extra)


def test_step_rejects_a_missing_state():
    q, k, v, g, beta, _ = make_inputs(10, 1, 1, 1, 1, 8, 8)
    with pytest.raises(ValueError, match="state is required"):
        gated_delta_rule_step(q[:, 0], k[:, 0], v[:, 0], g[:, 0], beta[:, 0], None)


@pytest.mark.parametrize("C", [1, 5, 16])
def test_unit_lower_inverse_matches_numpy(C):
    A = np.tril(np.random.default_rng(C).normal(size=(3, C, C)), -1).astype(np.float32)
    want = np.linalg.inv(np.eye(C) + A.astype(np.float64))
    np.testing.assert_allclose(reference.unit_lower_inverse(jnp.asarray(A)), want, rtol=1e-5,
                               atol=1e-5)
