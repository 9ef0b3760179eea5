"""The gated delta rule on a GPU (kernels/gated_delta_rule/gpu/chunk.py) against float64
oracles: forward, final state and all gradients (the choice table, the launch knobs and
lowering for CUDA without a GPU are in test_plan.py beside this file).

Unmarked tests run the kernels in interpret mode on CPU (tiny shapes: interpretation is slow;
chunk sizes below 64 run every kernel in Triton, the plan at 64 runs the Mosaic GPU kernels in
their interpreter, see test_*mosaic*.py beside this file). Tests marked gpu compile them on a
CUDA GPU, including the 7B hybrid head shape (K=96, V=192), each fallback of the table and a
T=65536 finiteness check. Errors are relative: max|a - b| / max|b| (`rel_err` of
tests/helpers/gdr.py).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import chunk_gated_delta_rule
from kernels.gated_delta_rule import reference
from kernels.gated_delta_rule.gpu.chunk import chunk_gated_delta_rule_pallas_gpu
from kernels.gated_delta_rule.gpu.config import KernelConfig

from tests.helpers.gdr import make_inputs, np_gated_delta_rule, rel_err
from tests.helpers.interpret_child import in_child

FP32_TOL = 1e-4
NAMES = ("q", "k", "v", "g", "beta", "initial_state")


def _loss(fn, weights, q, k, v, g, beta, S0, **kw):
    o, S = fn(q, k, v, g, beta, initial_state=S0, **kw)
    w_o, w_S = weights
    return jnp.sum(o.astype(jnp.float32) * w_o) + jnp.sum(S * w_S), (o, S)


def _forward_and_grads(fn, weights, args, **kw):
    argnums = tuple(i for i, a in enumerate(args) if a is not None)
    loss = functools.partial(_loss, fn, weights, **kw)
    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=argnums, has_aux=True))(*args)
    names = [n for n, a in zip(NAMES, args) if a is not None]
    return out, dict(zip(names, grads))


def _weights(seed, B, T, HV, K, V):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(B, T, HV, V)), rng.normal(size=(B, HV, K, V)))


def _oracle(args, weights, scale, l2):
    """float64 forward (NumPy loop) and gradients (jax.grad of `recurrent` in float64)."""
    o_np, S_np = np_gated_delta_rule(*args[:5], scale=scale, initial_state=args[5],
                                     use_qk_l2norm=l2)
    with jax.enable_x64(True):
        a64 = tuple(None if a is None else jnp.asarray(a, jnp.float64) for a in args)
        w64 = tuple(jnp.asarray(w, jnp.float64) for w in weights)
        (o64, S64), g64 = _forward_and_grads(reference.recurrent, w64, a64, scale=scale,
                                             use_qk_l2norm=l2)
        assert rel_err(o64, o_np) < 1e-12 and rel_err(S64, S_np) < 1e-12
        g64 = {n: np.asarray(x) for n, x in g64.items()}
    return o_np, S_np, g64


@functools.lru_cache(maxsize=None)
def _case_data(case):
    B, T, H, HV, K, V, init, decay, C, l2, scale = case
    args = make_inputs(T * 7 + K, B, T, H, HV, K, V, decay=decay, init=init, unit_k=not l2)
    weights = _weights(1, B, T, HV, K, V)
    return args, weights, _oracle(args, weights, scale, l2)


def check_against_float64(case, *, interpret, precision="highest", tol=FP32_TOL,
                          qkv_dtype=jnp.float32, **kw):
    """The whole op (chunk_gated_delta_rule_pallas_gpu, keywords kw) on `case`, with q, k, v
    in qkv_dtype, against the float64 oracles (of the unrounded inputs): o, the final state
    and every gradient within tol. Returns the errors."""
    B, T, H, HV, K, V, init, decay, C, l2, scale = case
    args, weights, (o_np, S_np, g64) = _case_data(case)
    args = tuple(jnp.asarray(a, qkv_dtype) if i < 3 else a for i, a in enumerate(args))
    fn = functools.partial(chunk_gated_delta_rule_pallas_gpu, interpret=interpret,
                           precision=precision, **kw)
    w32 = tuple(jnp.asarray(w, jnp.float32) for w in weights)
    (o, S), grads = _forward_and_grads(fn, w32, args, scale=scale, use_qk_l2norm=l2,
                                       chunk_size=C)
    assert o.dtype == qkv_dtype and S.dtype == jnp.float32
    errs = {"o": rel_err(o, o_np), "state": rel_err(S, S_np)}
    errs.update({f"d{n}": rel_err(grads[n], g64[n]) for n in grads})
    assert all(np.isfinite(e) for e in errs.values()), errs
    assert max(errs.values()) < tol, errs
    return errs


# (B, T, H, HV, K, V, initial state, decay, chunk_size, use_qk_l2norm, scale). T never a
# multiple of the chunk; K=24 and 96 exercise key padding; V=48 gives three 16-wide V tiles.
CPU_CASES = {
    "T70-K24-V48-gqa-mild-init-c16": (1, 70, 1, 2, 24, 48, True, "mild", 16, False, None),
    "T37-K32-V32-strong-l2-scale-c16": (2, 37, 1, 1, 32, 32, False, "strong", 16, True, 0.4),
}


def test_interpret_matches_float64():
    _check = functools.partial(check_against_float64, interpret=True)
    _check(CPU_CASES["T37-K32-V32-strong-l2-scale-c16"])
    # block_d=16: the prep kernels walk 2 key tiles (K=24 -> 32) and 3 value tiles (V=48)
    _check(CPU_CASES["T70-K24-V48-gqa-mild-init-c16"], config=KernelConfig(block_d=16))


def test_interpret_default_precision_is_bf16_accurate():
    """precision="default": bf16 dot operands and bf16 storage of the chunk operands; the
    in-chunk decays as differences of one cumulative sum ("outer"), here under strong decay,
    where those differences cancel most."""
    check_against_float64((1, 40, 1, 2, 96, 64, True, "mild", 32, True, None), interpret=True,
                          precision="default", tol=2e-2)
    check_against_float64(CPU_CASES["T37-K32-V32-strong-l2-scale-c16"], interpret=True,
                          precision="default", tol=2e-2)


@pytest.mark.parametrize("T, K, V, C", [(40, 16, 32, 16), (100, 64, 64, 64)])
def test_interpret_forward_alone_equals_the_forward_before_a_backward(T, K, V, C):
    """A forward without a backward takes the custom_vjp's primal (no residuals written; at
    C = 64 through the Mosaic GPU kernels, at 16 through the Triton ones): bitwise the o and
    final state of the forward that saves them."""
    args = make_inputs(5, 1, T, 1, 2, K, V, decay="mild")
    fn = functools.partial(chunk_gated_delta_rule_pallas_gpu, chunk_size=C, interpret=True,
                           precision="default")
    alone = jax.jit(lambda *a: fn(*a[:5], initial_state=a[5]))(*args)
    with_residuals, _ = _forward_and_grads(fn, _weights(0, 1, T, 2, K, V), args)
    for a, b in zip(alone, with_residuals):
        assert bool(jnp.all(a == b))


def _bf16_errors(interpret, shape, precision="highest"):
    B, T, H, HV, K, V = shape
    q, k, v, g, beta, S0 = make_inputs(4, B, T, H, HV, K, V, decay="mild", unit_k=False)
    o_np, S_np = np_gated_delta_rule(q, k, v, g, beta, initial_state=S0, use_qk_l2norm=True)
    bf = [jnp.asarray(x, jnp.bfloat16) for x in (q, k, v, g, beta)]
    ref = reference.recurrent(*bf, initial_state=jnp.asarray(S0), use_qk_l2norm=True)
    ours = chunk_gated_delta_rule_pallas_gpu(*bf, initial_state=jnp.asarray(S0),
                                             use_qk_l2norm=True, chunk_size=16,
                                             interpret=interpret, precision=precision)
    assert ours[0].dtype == jnp.bfloat16 and ours[1].dtype == jnp.float32
    return ([rel_err(x, y) for x, y in zip(ours, (o_np, S_np))],
            [rel_err(x, y) for x, y in zip(ref, (o_np, S_np))])


def test_interpret_bf16_within_twice_the_recurrent_error():
    ours, ref = _bf16_errors(True, (1, 40, 1, 2, 32, 32))
    for what, e, r in zip(("o", "state"), ours, ref):
        assert e <= 2 * r + 1e-3, (what, ours, ref)


def test_interpret_bf16_inputs_at_default_precision():
    """bf16 q, k, v at "default" reach the prep kernels in bf16 (fp32 inputs in fp32): output
    and gradients in bf16, within bf16 rounding of the same inputs run in fp32."""
    B, T, H, HV, K, V = 1, 40, 1, 2, 32, 32
    args = make_inputs(5, B, T, H, HV, K, V, decay="mild")
    bf = tuple(jnp.asarray(x, jnp.bfloat16) for x in args[:5]) + (jnp.asarray(args[5]),)
    f32 = tuple(x.astype(jnp.float32) for x in bf)
    fn = functools.partial(chunk_gated_delta_rule_pallas_gpu, precision="default", chunk_size=16,
                           interpret=True, use_qk_l2norm=True)
    w = tuple(jnp.asarray(x, jnp.float32) for x in _weights(6, B, T, HV, K, V))
    (o, S), grads = _forward_and_grads(fn, w, bf)
    (o32, S32), grads32 = _forward_and_grads(fn, w, f32)
    assert o.dtype == jnp.bfloat16 and S.dtype == jnp.float32
    errs = {"o": rel_err(o, o32), "state": rel_err(S, S32)}
    for n in grads:
        assert grads[n].dtype == bf[NAMES.index(n)].dtype, n
        errs[f"d{n}"] = rel_err(grads[n], grads32[n])
    assert max(errs.values()) < 2e-2, errs
    # and the bf16 path was taken: q and k, rounded to bf16 after the fp32 l2norm, change o
    # (fed fp32 copies of the same values, the kernels would compute exactly the fp32 run)
    assert np.any(np.asarray(o) != np.asarray(o32.astype(jnp.bfloat16)))


def test_interpret_strong_decay_stays_finite():
    """g = -20 per token: in-chunk exponents reach -20*C before masking; nothing may overflow."""
    q, k, v, _, beta, S0 = make_inputs(6, 1, 100, 1, 1, 16, 16)
    g = np.full(beta.shape, -20.0, np.float32)
    fn = functools.partial(chunk_gated_delta_rule_pallas_gpu, chunk_size=32, interpret=True)
    (o, S), grads = _forward_and_grads(fn, _weights(2, 1, 100, 1, 16, 16),
                                       (q, k, v, g, beta, S0))
    assert np.all(np.isfinite(o)) and np.all(np.isfinite(S))
    for n, gr in grads.items():
        assert np.all(np.isfinite(gr)), n
    last = beta[:, -1, :, None, None] * k[:, -1, :, :, None] * v[:, -1, :, None, :]
    np.testing.assert_allclose(o[:, -1], np.einsum("bhkv,bhk->bhv", last, q[:, -1]) * 0.25,
                               rtol=1e-5, atol=1e-6)


def test_bad_chunk_size_precision_and_config_raise():
    args = make_inputs(8, 1, 4, 1, 1, 16, 16)
    with pytest.raises(ValueError, match="power of two"):
        chunk_gated_delta_rule_pallas_gpu(*args[:5], chunk_size=24, interpret=True)
    with pytest.raises(ValueError, match="precision"):
        chunk_gated_delta_rule_pallas_gpu(*args[:5], precision="tf32", interpret=True)
    for bad, match in ((dict(block_v=24), "block_v must be a power of two"),
                       (dict(block_d=8), "block_d must be a power of two"),
                       (dict(num_warps=6), "num_warps must be one of"),
                       (dict(num_warps_prep=3), "num_warps_prep"),
                       (dict(num_stages=0), "num_stages must be >= 1")):
        with pytest.raises(ValueError, match=match):
            KernelConfig(**bad)
    assert hash(KernelConfig(block_v=32)) == hash(KernelConfig(block_v=32))  # a static arg


# ------------------------------------------------------------------------------------------
# The plan with Mosaic GPU kernels (chunk 64, Kp 64 or 128), in their interpreter.

def _errors_against_chunked(shape, qkv_dtype):
    """Relative errors of o, the final state and the q, k, v, g, beta gradients of the op at
    "default", with q, k, v in qkv_dtype, against `reference.chunked` (fp32, on the same
    values)."""
    B, T, H, HV, K, V = shape
    q, k, v, g, beta, S0 = make_inputs(21, B, T, H, HV, K, V, decay="mild", unit_k=False)
    q, k, v = (jnp.asarray(x, qkv_dtype) for x in (q, k, v))

    def run(fn, q, k, v):
        def loss(*a):
            o, S = fn(*a, initial_state=S0, use_qk_l2norm=True, chunk_size=64)
            o = o.astype(jnp.float32)
            return jnp.sum(o * jnp.cos(o)) + jnp.sum(S), (o, S)
        return jax.jit(jax.value_and_grad(loss, argnums=range(5), has_aux=True))(
            q, k, v, g, beta)

    (_, (o, S)), grads = run(functools.partial(chunk_gated_delta_rule_pallas_gpu,
                                               interpret=True, precision="default"), q, k, v)
    (_, (o_r, S_r)), grads_r = run(reference.chunked,
                                   *(x.astype(jnp.float32) for x in (q, k, v)))
    errs = {"o": rel_err(o, o_r), "S": rel_err(S, S_r)}
    errs.update({f"d{n}": rel_err(a, b) for n, a, b in zip("qkvgb", grads, grads_r)})
    return errs


@pytest.mark.parametrize("qkv_dtype", [jnp.bfloat16, jnp.float32])
@in_child
def test_interpret_mosaic_plan_matches_chunked_reference(qkv_dtype):
    """Every kernel in Mosaic GPU (bf16 q, k, v; fp32 ones take the Triton prep backward), q, k,
    v, o and their gradients in the caller's layout. Four chunks and 1e-2: with a dh kernel
    missing the -w^T dd term of the dS update, dk was off by 1.9e-2 here, while at two chunks
    no error passed 3.5e-3."""
    errs = _errors_against_chunked((1, 256, 1, 2, 64, 64), qkv_dtype)
    assert max(errs.values()) < 1e-2, errs


@in_child
def test_interpret_scale_inside_the_kernels_equals_scaling_q_first():
    """A Python-number scale goes into the Mosaic preps (`Plan.q_scale`); a NumPy scalar is
    scaled by XLA first. With scale 1/2 (exact in every product) the two give bitwise the same
    o, state and gradients."""
    args = make_inputs(9, 1, 50, 1, 1, 64, 64, decay="mild")  # one chunk: the preps' matter
    args = tuple(jnp.asarray(x, jnp.bfloat16) for x in args[:3]) + args[3:]
    runs = [_forward_and_grads(functools.partial(
        chunk_gated_delta_rule_pallas_gpu, scale=scale, chunk_size=64, interpret=True,
        precision="default"), _weights(2, 1, 50, 1, 64, 64), args)
        for scale in (0.5, np.float32(0.5))]
    (out_k, grads_k), (out_x, grads_x) = runs
    for a, b in zip(out_k, out_x):
        assert bool(jnp.all(a == b))
    for n in grads_k:
        assert bool(jnp.all(grads_k[n] == grads_x[n])), n


@pytest.mark.parametrize("case, qkv_dtype", [
    # the 370M model's head dims: the Mosaic prep (V padded to 128; q, k, v in the caller's
    # layout) and the Mosaic state passes at that padded width (with an initial state, padded
    # too); T padded, HV = 2H, l2norm. bf16 q, k, v as in training: the state passes and the
    # fused dqk and prep backward at V = 96 unpadded (one tile a head)
    ((1, 100, 1, 2, 48, 96, True, "mild", 64, True, None), jnp.float32),
    ((1, 100, 1, 2, 48, 96, True, "mild", 64, True, None), jnp.bfloat16),
    ((1, 70, 1, 1, 128, 128, False, "strong", 64, False, 0.3), jnp.float32)])  # g to -20
@in_child
def test_interpret_mosaic_plan_matches_float64(case, qkv_dtype):
    check_against_float64(case, interpret=True, precision="default", tol=2e-2,
                          qkv_dtype=qkv_dtype)


# ------------------------------------------------------------------------------------------
# Compiled on a GPU.

GPU_CASES = {  # with the table's choice at "default"
    "T300-K96-V192-gqa-mild-init-l2": (1, 300, 2, 4, 96, 192, True, "mild", 64, True, None),
    "T257-K128-V128-strong-init": (2, 257, 2, 2, 128, 128, True, "strong", 64, False, None),
    # Mosaic prep and state, Triton dqk (V > 192)
    "T130-K64-V256-gqa-zero": (1, 130, 1, 2, 64, 256, False, "zero", 64, False, None),
    # Triton throughout (K > 128)
    "T100-K256-V64-mild-c32": (1, 100, 1, 1, 256, 64, True, "mild", 32, False, 0.2),
    # V padded to 128 for every kernel (the Triton prep backward and dqk: fp32 q, k, v)
    "T200-K128-V96-mild-init": (1, 200, 1, 1, 128, 96, True, "mild", 64, False, None),
    # the ladder models' head dims (K 48 -> Kp 64, V 96 padded to 128), with an initial state
    "T200-K48-V96-mild-init-l2": (2, 200, 3, 3, 48, 96, True, "mild", 64, True, None),
}


@pytest.mark.gpu
def test_gpu_long_sequence_strong_decay_stays_finite():
    """T = 65536 with g in (-20, 0) and beta in (0, 2): forward and gradients finite."""
    B, T, H, K, V = 1, 65536, 1, 64, 64
    q, k, v, g, beta, S0 = make_inputs(13, B, T, H, H, K, V, decay="strong")
    for precision in ("highest", "default"):
        fn = functools.partial(chunk_gated_delta_rule_pallas_gpu, use_qk_l2norm=True,
                               precision=precision)
        (o, S), grads = _forward_and_grads(fn, _weights(3, B, T, H, K, V),
                                           (q, k, v, g, beta, S0))
        assert np.all(np.isfinite(np.asarray(o))) and np.all(np.isfinite(np.asarray(S)))
        for n, gr in grads.items():
            assert np.all(np.isfinite(np.asarray(gr))), (precision, n)


@pytest.mark.gpu
@pytest.mark.parametrize("case", list(GPU_CASES))
@pytest.mark.parametrize("precision, tol", [("highest", FP32_TOL), ("default", 3e-2)])
def test_gpu_matches_float64(case, precision, tol):
    errs = check_against_float64(GPU_CASES[case], interpret=False, precision=precision,
                                 tol=tol)
    print(f"{case} precision={precision} errors:", errs)


@pytest.mark.gpu
@pytest.mark.parametrize("case", ["T300-K96-V192-gqa-mild-init-l2", "T257-K128-V128-strong-init",
                                  "T130-K64-V256-gqa-zero", "T200-K48-V96-mild-init-l2"])
def test_gpu_bf16_inputs_at_default_match_float64(case):
    """bf16 q, k, v at "default" (what training runs): every kernel in Mosaic GPU, the prep
    backward included (fp32 inputs take the Triton one, above). The oracle sees the unrounded
    inputs, so the errors include bf16's rounding of q, k, v."""
    errs = check_against_float64(GPU_CASES[case], interpret=False, precision="default",
                                 tol=3e-2, qkv_dtype=jnp.bfloat16)
    print(f"{case} bf16 q, k, v at default, errors:", errs)


@pytest.mark.gpu
@pytest.mark.parametrize("case", ["T300-K96-V192-gqa-mild-init-l2", "T257-K128-V128-strong-init"])
def test_gpu_forward_alone_matches_float64_and_the_forward_before_a_backward(case):
    """The forward without a backward (nothing saved for a backward): o and the final state
    against float64, and bitwise those of the forward that saves the residuals, with bf16
    q, k, v at "default"."""
    B, T, H, HV, K, V, init, decay, C, l2, scale = GPU_CASES[case]
    args, weights, (o_np, S_np, _) = _case_data(GPU_CASES[case])
    args = tuple(jnp.asarray(a, jnp.bfloat16) if i < 3 else a for i, a in enumerate(args))
    fn = functools.partial(chunk_gated_delta_rule_pallas_gpu, precision="default",
                           scale=scale, use_qk_l2norm=l2, chunk_size=C)
    o, S = jax.jit(lambda *a: fn(*a[:5], initial_state=a[5]))(*args)
    errs = {"o": rel_err(o, o_np), "state": rel_err(S, S_np)}
    assert max(errs.values()) < 3e-2, errs
    w32 = tuple(jnp.asarray(w, jnp.float32) for w in weights)
    (o_r, S_r), _ = _forward_and_grads(fn, w32, args)
    assert bool(jnp.all(o == o_r)) and bool(jnp.all(S == S_r))
    print(f"{case} forward alone, bf16 q, k, v at default, errors:", errs)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["highest", "default"])
def test_gpu_bf16_within_twice_the_recurrent_error(precision):
    ours, ref = _bf16_errors(False, (2, 300, 2, 4, 96, 192), precision)
    for what, e, r in zip(("o", "state"), ours, ref):
        assert e <= 2 * r + 1e-3, (what, ours, ref)


@pytest.mark.gpu
def test_gpu_api_matches_chunked():
    args = make_inputs(12, 2, 150, 2, 4, 96, 192, decay="mild")
    o, S = chunk_gated_delta_rule(*args[:5], initial_state=args[5], output_final_state=True,
                                  implementation="pallas_gpu")
    o_ref, S_ref = chunk_gated_delta_rule(*args[:5], initial_state=args[5],
                                          output_final_state=True, implementation="chunked")
    assert rel_err(o, o_ref) < FP32_TOL and rel_err(S, S_ref) < FP32_TOL


@pytest.mark.gpu
@pytest.mark.parametrize("K,V", [(96, 192), (48, 96)])
def test_gpu_api_auto_at_default_precision_matches_chunked(K, V):
    """What "auto" runs at "default": at the 7B layer's head dims every Mosaic kernel in the
    caller's layout, at the 370M model's the same with the prep at V padded to 128 and the
    rest at V = 96 (bf16 q, k, v only; here fp32: V padded to 128 throughout). Output,
    state and gradients against XLA's chunked at "highest", to bf16-level error."""
    args = make_inputs(13, 1, 300, 2, 4, K, V, decay="mild")
    w32 = tuple(jnp.asarray(w, jnp.float32) for w in _weights(3, 1, 300, 4, K, V))
    runs = {impl: _forward_and_grads(
        functools.partial(chunk_gated_delta_rule, implementation=impl, precision=p,
                          output_final_state=True), w32, args)
        for impl, p in (("auto", "default"), ("chunked", "highest"))}
    (o, S), grads = runs["auto"]
    (o_ref, S_ref), grads_ref = runs["chunked"]
    errs = {"o": rel_err(o, o_ref), "state": rel_err(S, S_ref)}
    errs.update({f"d{n}": rel_err(grads[n], grads_ref[n]) for n in grads})
    assert max(errs.values()) < 2e-2, errs
