"""Pallas GPU gated delta rule against float64 oracles: forward, final state and all gradients.

Unmarked tests run the kernels in Pallas interpret mode on CPU (tiny shapes: interpretation is
slow). Tests marked gpu compile them with the Triton lowering on a CUDA GPU, including the
7B hybrid head shape (K=96, V=192) and a T=65536 finiteness check. The API-level tests
(dispatch, "auto", the layer's shard_map) are in tests/test_kernels_gdr_pallas_gpu_api.py.
Errors are relative: max|a - b| / max|b| (`rel_err` of tests/test_kernels_gdr.py).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.gated_delta_rule import reference
from kernels.gated_delta_rule.pallas_gpu import chunk_gated_delta_rule_pallas_gpu
from tests.test_kernels_gdr import make_inputs, np_gated_delta_rule, rel_err

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


def _check_against_float64(case, *, interpret, prep, precision="highest", tol=FP32_TOL, **kw):
    B, T, H, HV, K, V, init, decay, C, l2, scale = case
    args, weights, (o_np, S_np, g64) = _case_data(case)
    fn = functools.partial(chunk_gated_delta_rule_pallas_gpu, interpret=interpret,
                           precision=precision, prep=prep, **kw)
    w32 = tuple(jnp.asarray(w, jnp.float32) for w in weights)
    (o, S), grads = _forward_and_grads(fn, w32, args, scale=scale, use_qk_l2norm=l2,
                                       chunk_size=C)
    assert o.dtype == jnp.float32 and S.dtype == jnp.float32
    errs = {"o": rel_err(o, o_np), "state": rel_err(S, S_np)}
    errs.update({f"d{n}": rel_err(grads[n], g64[n]) for n in grads})
    assert all(np.isfinite(e) for e in errs.values()), errs
    assert max(errs.values()) < tol, errs
    return errs


# (B, T, H, HV, K, V, initial state, decay, chunk_size, use_qk_l2norm, scale). T never a
# multiple of the chunk; K=24 and 96 exercise key padding; V=48 gives three 16-wide V tiles
# (and, with prep="pallas", V padding to 64).
CPU_CASES = {
    "T70-K24-V48-gqa-mild-init-c16": (1, 70, 1, 2, 24, 48, True, "mild", 16, False, None),
    "T37-K32-V32-strong-l2-scale-c16": (2, 37, 1, 1, 32, 32, False, "strong", 16, True, 0.4),
}


@pytest.mark.parametrize("case, prep, state_pass", [
    ("T70-K24-V48-gqa-mild-init-c16", "pallas", "triton"),
    ("T37-K32-V32-strong-l2-scale-c16", "pallas", "triton"),
    ("T70-K24-V48-gqa-mild-init-c16", "pallas_splitbwd", "splitbwd")])  # the defaults
def test_interpret_matches_float64(case, prep, state_pass):
    _check_against_float64(CPU_CASES[case], interpret=True, prep=prep, state_pass=state_pass)


def test_interpret_prep_tiles_match_float64():
    """block_d=16: the prep kernels walk 2 key tiles (K=24 -> 32) and 4 value tiles
    (V=48 -> 64), exercising their loops and per-tile reads and writes."""
    _check_against_float64(CPU_CASES["T70-K24-V48-gqa-mild-init-c16"], interpret=True,
                           prep="pallas", block_d=16)


def test_interpret_split_prep_matches_float64_and_the_fused_prep():
    """prep="pallas_split": the forward's three kernels (kkt, solve, w/u) give the fused prep
    kernel's outputs bitwise in interpret mode, as does the fused kernel that also writes T
    (prep="pallas_splitbwd"); the backward's three (inverse, decay, qk) give its gradients to
    fp32 rounding (XLA contracts the fused kernel's a * b + c differently: 1e-5 relative on a
    few elements of dk); and the whole op matches float64 with either."""
    from kernels.gated_delta_rule import pallas_gpu_prep
    from kernels.gated_delta_rule.pallas_gpu_prep_split import (prep_bwd_split,
                                                                prep_fwd_saving_inverse,
                                                                prep_fwd_split)
    import kernels.gated_delta_rule.pallas_gpu as pg

    for prep in ("pallas_split", "pallas_splitbwd"):
        _check_against_float64(CPU_CASES["T70-K24-V48-gqa-mild-init-c16"], interpret=True,
                               prep=prep, block_d=16)
    rng = np.random.default_rng(3)
    BH, Tp, Kp, Vp, C = 2, 128, 64, 32, 64
    normal = lambda d, s=1.0: jnp.asarray(rng.normal(size=(BH, Tp, d)) * s, jnp.float32)
    q, k, v = normal(Kp, 1 / 8), normal(Kp, 1 / 8), normal(Vp)
    g = jnp.asarray(-rng.uniform(0, 3, (BH, Tp)), jnp.float32)
    beta = jnp.asarray(rng.uniform(0, 2, (BH, Tp)), jnp.float32)
    cts = [normal(d) for d in (Kp, Vp, Kp, Kp, C)]  # dw, du, dkd, dqd, daqk
    g_raw = g
    for precision, in_xla in (("highest", False), ("default", False), ("default", True)):
        cfg = pg.kernel_config(precision, True, Kp, Vp, block_d=32, decays_in_xla=in_xla)
        kw = dict(C=C, **pg._prep_cfg(cfg))
        dt = pg._operand_dtype(cfg)
        g = pallas_gpu_prep.decay_input(g_raw, C, kw["decays"])  # [BH, 2, Tp] with "xla"
        fused = pallas_gpu_prep.prep_fwd(q, k, v, g, beta, out_dtype=dt, **kw)
        split, (T,) = prep_fwd_split(q, k, v, g, beta, out_dtype=dt, **kw)
        fused_t, (T_fused,) = prep_fwd_saving_inverse(q, k, v, g, beta, out_dtype=dt, **kw)
        # prep="pallas_splitbwd"'s forward; it saves T in the operand dtype
        for a, b in zip((*fused, T.astype(dt)), (*fused_t, T_fused)):
            np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
        cts_dt = [c.astype(dt) for c in cts]
        fused += pallas_gpu_prep.prep_bwd(q, k, v, g, beta, *cts_dt, **kw)
        split += prep_bwd_split(q, k, v, g, beta, T, *cts_dt, **kw)
        # T in bf16 at "default" loses nothing: the backward only feeds it to bf16 dots
        for a, b in zip(split[5:], prep_bwd_split(q, k, v, g, beta, T_fused, *cts_dt, **kw)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        for i, (name, a, b) in enumerate(zip(("w", "u", "kd", "qd", "aqk", "dq", "dk", "dv",
                                              "dg", "dbeta"), fused, split)):
            a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
            tol = dict(rtol=0, atol=0) if i < 5 else dict(rtol=1e-5,
                                                           atol=1e-6 * np.abs(a).max())
            np.testing.assert_allclose(b, a, err_msg=f"{name} at {precision}, {kw['decays']}",
                                       **tol)


def test_interpret_forward_alone_is_the_same_for_every_pallas_prep():
    """A forward without a backward takes its own path through each prep's custom_vjp (no
    residuals written): the same o and final state whichever prep runs."""
    q, k, v, g, beta, S0 = make_inputs(5, 1, 40, 1, 2, 16, 32, decay="mild")
    outs = {p: chunk_gated_delta_rule_pallas_gpu(q, k, v, g, beta, initial_state=S0,
                                                 chunk_size=16, interpret=True, prep=p)
            for p in ("pallas", "pallas_split", "pallas_splitbwd")}
    for p, (o, S) in outs.items():
        np.testing.assert_allclose(np.asarray(o), np.asarray(outs["pallas"][0]), rtol=1e-6,
                                   atol=1e-6, err_msg=p)
        np.testing.assert_allclose(np.asarray(S), np.asarray(outs["pallas"][1]), rtol=1e-6,
                                   atol=1e-6, err_msg=p)


def test_interpret_default_precision_is_bf16_accurate():
    """precision="default": bf16 dot operands and bf16 storage of the chunk operands."""
    _check_against_float64((1, 40, 1, 2, 96, 64, True, "mild", 32, True, None), interpret=True,
                           prep="pallas", precision="default", tol=2e-2)


@pytest.mark.parametrize("precision, tol", [("highest", FP32_TOL), ("default", 2e-2)])
@pytest.mark.parametrize("in_xla", [False, True])
def test_interpret_outer_decays_match_float64_under_strong_decay(precision, tol, in_xla):
    """exact_decays=False (the default at "default"): in-chunk decays from G_i - G_j, and dg
    back through them, in the default preps, against float64 where that difference cancels
    most (strong decays); at "highest" (exact fp32 in interpret mode) to the fp32 tolerance,
    which a wrong term in dg would break. in_xla: G and logF summed by XLA before the kernels,
    which return their cotangents (decays_in_xla)."""
    for prep in ("pallas_splitbwd", "pallas"):
        _check_against_float64(CPU_CASES["T37-K32-V32-strong-l2-scale-c16"], interpret=True,
                               prep=prep, precision=precision, tol=tol, exact_decays=False,
                               decays_in_xla=in_xla)


def test_interpret_xla_prep_matches_chunked_reference():
    args = make_inputs(11, 1, 50, 2, 2, 16, 32, decay="mild")
    o, S = chunk_gated_delta_rule_pallas_gpu(*args[:5], initial_state=args[5], chunk_size=16,
                                             interpret=True, prep="xla")
    o_ref, S_ref = reference.chunked(*args[:5], initial_state=args[5], chunk_size=16)
    assert rel_err(o, o_ref) < 1e-5 and rel_err(S, S_ref) < 1e-5


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


def test_bad_chunk_size_and_precision_raise():
    args = make_inputs(8, 1, 4, 1, 1, 16, 16)
    with pytest.raises(ValueError, match="power of two"):
        chunk_gated_delta_rule_pallas_gpu(*args[:5], chunk_size=24, interpret=True)
    with pytest.raises(ValueError, match="precision"):
        chunk_gated_delta_rule_pallas_gpu(*args[:5], precision="tf32", interpret=True)
    with pytest.raises(ValueError, match="caller_layout needs prep in"):
        chunk_gated_delta_rule_pallas_gpu(*args[:5], prep="pallas", caller_layout=True,
                                          interpret=True)


def assert_caller_layout_is_bitwise(args, do, **kw):
    """pallas_gpu(**kw) in interpret mode, with l2norm, with and without caller_layout: the
    output and the gradients of q, k, v, g and beta (of sum(o * do)) are bitwise equal."""
    runs = []
    for caller_layout in (False, True):
        fn = functools.partial(chunk_gated_delta_rule_pallas_gpu, interpret=True,
                               use_qk_l2norm=True, caller_layout=caller_layout, **kw)
        loss = lambda *a: jnp.sum(fn(*a)[0] * do)
        runs.append((fn(*args)[0], *jax.grad(loss, argnums=range(5))(*args)))
    for name, a, b in zip(("o", "dq", "dk", "dv", "dg", "dbeta"), *runs):
        assert a.shape == b.shape and bool(jnp.all(a == b)), name


@pytest.mark.parametrize("precision", ["default", "highest"])
def test_interpret_caller_layout_is_bitwise_the_transposed_one(precision):
    """caller_layout: the Triton prep kernels read q, k, v and write dq, dk, dv in the caller's
    [B, Tp, HV * Kp] layout; output and every gradient are bitwise those of the [B*HV, Tp, K]
    layout (T padded, K padded 24 -> 32, V = 48 in 16-wide tiles, grouped heads, l2norm)."""
    args = make_inputs(21, 2, 70, 1, 2, 24, 48, decay="mild")
    do = jnp.asarray(np.random.default_rng(5).normal(size=(2, 70, 2, 48)), jnp.float32)
    assert_caller_layout_is_bitwise(args[:5], do, precision=precision, prep="pallas_splitbwd",
                                    chunk_size=16)


# Triton calls in forward+backward: prep fwd/bwd when prep="pallas" (kkt, solve, w/u and
# inverse, decay, qk when "pallas_split"; fwd and those three when "pallas_splitbwd"), plus
# the state pass's fused fwd/bwd or the split pass's h, o, dh, dqk (pallas_gpu_split.py).
@pytest.mark.parametrize("prep, precision, state_pass, n_calls", [
    ("pallas", "highest", "triton", 4), ("xla", "default", "triton", 2),
    ("pallas", "default", "split", 6), ("pallas_split", "default", "triton", 8),
    ("pallas_splitbwd", "default", "triton", 6), ("pallas_splitbwd", "default", "splitbwd", 7),
    ("pallas_splitbwd+caller_layout", "default", "splitbwd", 7)])
def test_kernels_lower_to_triton_ir_without_a_gpu(monkeypatch, prep, precision, state_pass,
                                                  n_calls):
    """Forward and backward lowered for CUDA on this host, through the Triton-IR stage (not
    PTX): catches unsupported ops and shapes in CI. Uses jax 0.11.2 internals (gpu_info)."""
    from jax._src.pallas.triton import gpu_info, pallas_call_registration
    h100 = gpu_info.get_gpu_info_from_version(gpu_info.GpuVersion.H100)
    monkeypatch.setattr(pallas_call_registration.gpu_info_lib, "get_gpu_info", lambda: h100)
    B, T, H, HV, K, V = 1, 100, 1, 2, 96, 192
    shapes = [(B, T, H, K), (B, T, H, K), (B, T, HV, V), (B, T, HV), (B, T, HV)]
    args = [jax.ShapeDtypeStruct(x, jnp.bfloat16) for x in shapes]
    args.append(jax.ShapeDtypeStruct((B, HV, K, V), jnp.float32))

    prep, _, caller_layout = prep.partition("+")

    def loss(q, k, v, g, b, s0):
        o, S = chunk_gated_delta_rule_pallas_gpu(q, k, v, g, b, initial_state=s0, prep=prep,
                                                 precision=precision, state_pass=state_pass,
                                                 caller_layout=bool(caller_layout))
        return jnp.sum(o.astype(jnp.float32)) + jnp.sum(S)

    text = jax.jit(jax.grad(loss, argnums=range(6))).trace(*args).lower(
        lowering_platforms=("cuda",)).as_text()
    assert text.count("__gpu$xla.gpu.triton") == n_calls


# ------------------------------------------------------------------------------------------
# Compiled on a GPU.

GPU_CASES = {
    "T300-K96-V192-gqa-mild-init-l2": (1, 300, 2, 4, 96, 192, True, "mild", 64, True, None),
    "T257-K128-V128-strong-init": (2, 257, 2, 2, 128, 128, True, "strong", 64, False, None),
    "T130-K64-V256-gqa-zero": (1, 130, 1, 2, 64, 256, False, "zero", 64, False, None),
    "T100-K256-V64-mild-c32": (1, 100, 1, 1, 256, 64, True, "mild", 32, False, 0.2),
    "T200-K128-V96-mild-init": (1, 200, 1, 1, 128, 96, True, "mild", 64, False, None),
}


@pytest.mark.gpu
def test_gpu_long_sequence_strong_decay_stays_finite():
    """T = 65536 with g in (-20, 0) and beta in (0, 2): forward and gradients finite."""
    B, T, H, K, V = 1, 65536, 1, 64, 64
    q, k, v, g, beta, S0 = make_inputs(13, B, T, H, H, K, V, decay="strong")
    fn = functools.partial(chunk_gated_delta_rule_pallas_gpu, use_qk_l2norm=True)
    (o, S), grads = _forward_and_grads(fn, _weights(3, B, T, H, K, V), (q, k, v, g, beta, S0))
    assert np.all(np.isfinite(np.asarray(o))) and np.all(np.isfinite(np.asarray(S)))
    for n, gr in grads.items():
        assert np.all(np.isfinite(np.asarray(gr))), n


@pytest.mark.gpu
@pytest.mark.parametrize("case, prep, state_pass", [
    *((c, "pallas_splitbwd", "splitbwd") for c in GPU_CASES),  # the defaults, every shape
    ("T300-K96-V192-gqa-mild-init-l2", "xla", "triton"),
    ("T300-K96-V192-gqa-mild-init-l2", "pallas_split", "triton"),
    ("T257-K128-V128-strong-init", "pallas", "triton")])
def test_gpu_matches_float64(case, prep, state_pass):
    _check_against_float64(GPU_CASES[case], interpret=False, prep=prep, state_pass=state_pass)


@pytest.mark.gpu
@pytest.mark.parametrize("prep, state_pass", [("pallas_splitbwd", "splitbwd"),
                                              ("pallas_split", "triton")])
def test_gpu_default_precision_is_bf16_accurate(prep, state_pass):
    errs = _check_against_float64(GPU_CASES["T300-K96-V192-gqa-mild-init-l2"], interpret=False,
                                  prep=prep, precision="default", tol=3e-2, state_pass=state_pass)
    print(f"precision=default prep={prep} state_pass={state_pass} errors:", errs)


@pytest.mark.gpu
def test_gpu_decays_in_xla_match_float64_under_strong_decay():
    """decays_in_xla compiled (G and logF from XLA; the kernels' [2, C] blocks of them and of
    their cotangents), at "default" with its default state pass, where decays cancel most."""
    errs = _check_against_float64(GPU_CASES["T257-K128-V128-strong-init"], interpret=False,
                                  prep="pallas_splitbwd", precision="default", tol=3e-2,
                                  decays_in_xla=True)
    print("decays_in_xla errors:", errs)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["highest", "default"])
def test_gpu_bf16_within_twice_the_recurrent_error(precision):
    ours, ref = _bf16_errors(False, (2, 300, 2, 4, 96, 192), precision)
    for what, e, r in zip(("o", "state"), ours, ref):
        assert e <= 2 * r + 1e-3, (what, ours, ref)
