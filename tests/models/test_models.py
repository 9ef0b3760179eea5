import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hybrid_jax.models.gdn import GatedDeltaNet
from hybrid_jax.models.lm import LM, build_model
from hybrid_jax.presets import get_preset

FAMILIES = ["transformer", "hybrid", "gdn"]


def _tokens(B, T, vocab, seed=0):
    return jax.random.randint(jax.random.key(seed), (B, T), 0, vocab, dtype=jnp.int32)


def _jitted(model, method="__call__"):
    """Jit a model method through split/merge; eager nnx dispatch is slow on 2 cores."""
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda state, x: getattr(nnx.merge(graphdef, state), method)(x))
    return lambda x: fn(state, x)


@pytest.mark.parametrize("family", FAMILIES)
def test_output_shape_and_dtype(family):
    cfg = get_preset(f"{family}_tiny")
    logits = _jitted(build_model(cfg))(_tokens(2, 37, cfg.vocab_size))
    assert logits.shape == (2, 37, cfg.vocab_size)
    assert logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize("family", FAMILIES)
def test_causal_through_gradients(family):
    """No gradient flows from a later input position to an earlier logit."""
    cfg = get_preset(f"{family}_tiny")
    model = build_model(cfg, seed=1)
    x = model.embed_tokens(_tokens(1, 24, cfg.vocab_size))
    t = 11

    from_embeddings = _jitted(model, "from_embeddings")
    g = jax.jit(jax.grad(lambda x_BTD: from_embeddings(x_BTD)[0, t].sum()))(x)
    influence = np.asarray(jnp.abs(g[0]).sum(-1))
    assert np.all(influence[t + 1:] == 0.0)
    assert np.all(influence[: t + 1] > 0.0)


def test_sliding_window_limits_receptive_field():
    cfg = get_preset("transformer_tiny", n_layers=1, layer_pattern="S", final_full_attention=False,
                     sliding_window=5)
    model = build_model(cfg)
    x = model.embed_tokens(_tokens(1, 20, cfg.vocab_size))
    from_embeddings = _jitted(model, "from_embeddings")
    g = jax.grad(lambda x: from_embeddings(x)[0, 15].sum())(x)
    influence = np.asarray(jnp.abs(g[0]).sum(-1))
    assert np.all(influence[11:16] > 0) and np.all(influence[:11] == 0) and np.all(influence[16:] == 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_jit_and_eager_agree(family):
    cfg = get_preset(f"{family}_tiny")
    model = build_model(cfg)
    tokens = _tokens(2, 19, cfg.vocab_size)
    np.testing.assert_allclose(_jitted(model)(tokens), model(tokens), rtol=2e-5, atol=2e-5)


def test_gdn_implementations_agree_inside_the_model():
    cfg = get_preset("hybrid_tiny")
    tokens = _tokens(2, 21, cfg.vocab_size)
    a = _jitted(build_model(cfg.replace(gdn_implementation="recurrent")))(tokens)
    b = _jitted(build_model(cfg.replace(gdn_implementation="chunked")))(tokens)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["transformer", "hybrid"])
def test_bf16_compute_is_finite_and_close_to_fp32(family):
    cfg = get_preset(f"{family}_tiny")
    tokens = _tokens(2, 16, cfg.vocab_size)
    f32 = _jitted(build_model(cfg.replace(compute_dtype="float32")))(tokens)
    bf16 = _jitted(build_model(cfg.replace(compute_dtype="bfloat16")))(tokens)
    assert bool(jnp.all(jnp.isfinite(bf16)))
    assert float(jnp.max(jnp.abs(bf16 - f32))) < 0.05 * float(jnp.max(jnp.abs(f32))) + 0.05


def test_gdn_inits_and_beta_range():
    cfg = get_preset("gdn_tiny", gdn_n_heads=64, d_model=256, n_layers=4)
    layer = GatedDeltaNet(cfg, rngs=nnx.Rngs(0))
    A = np.exp(np.asarray(layer.A_log[...]))
    assert np.all(A > 0) and np.all(A <= 16)
    dt = np.asarray(jax.nn.softplus(layer.dt_bias[...]))
    assert np.all(dt >= 1e-3 * (1 - 1e-5)) and np.all(dt <= 0.1 * (1 + 1e-5))
    assert dt.min() < 0.01 < dt.max()  # log-uniform spread


def test_negative_eigenvalue_flag_changes_beta():
    """With b's projection zeroed, beta = 2*sigmoid(0) = 1 vs sigmoid(0) = 0.5."""
    x = jax.random.normal(jax.random.key(0), (1, 9, 64))
    outs = []
    for flag in (True, False):
        cfg = get_preset("hybrid_tiny", gdn_allow_neg_eigval=flag)
        layer = GatedDeltaNet(cfg, rngs=nnx.Rngs(3))
        layer.b.kernel[...] = jnp.zeros_like(layer.b.kernel[...])
        outs.append(layer(x))
    assert float(jnp.max(jnp.abs(outs[0] - outs[1]))) > 1e-4


def test_model_is_an_nnx_module_with_logical_axes():
    model = build_model(get_preset("hybrid_tiny"))
    specs = nnx.get_partition_spec(nnx.state(model, nnx.Param))
    flat = {"/".join(map(str, k)): v for k, v in nnx.to_flat_state(specs)}
    assert any(v.get_value() == jax.sharding.PartitionSpec("vocab", "embed")
               for k, v in flat.items() if k.endswith("embed"))
    assert isinstance(model, LM)


def _dot_operand_dtypes(fn, *args):
    jaxpr = jax.make_jaxpr(fn)(*args)
    found = []

    def walk(jx):
        for eqn in jx.eqns:
            if eqn.primitive.name == "dot_general":
                found.append((tuple(str(v.aval.dtype) for v in eqn.invars),
                              {n for v in eqn.invars for n in v.aval.shape}))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)
    walk(jaxpr.jaxpr)
    return found


def test_unembed_backward_runs_in_the_compute_dtype():
    """The unembedding's two backward GEMMs take bf16 operands (plain autodiff of the fp32
    logits promotes them to fp32, i.e. TF32 on a GPU); its forward is bitwise the plain dot."""
    from hybrid_jax.models.lm import unembed_logits
    kx, kw, kr = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (2, 5, 24)).astype(jnp.bfloat16)
    w = 0.2 * jax.random.normal(kw, (24, 40))
    r = jax.random.normal(kr, (2, 5, 40))
    plain = lambda x, w: jnp.dot(x, w.astype(x.dtype), preferred_element_type=jnp.float32)
    np.testing.assert_array_equal(unembed_logits(x, w), plain(x, w))

    def grads(f):
        return jax.grad(lambda x, w: jnp.sum(f(x, w) * r), argnums=(0, 1))

    # The motivation: plain autodiff feeds an fp32 operand to the backward GEMMs.
    assert any("float32" in d for d, _ in _dot_operand_dtypes(grads(plain), x, w))
    ours = [d for d, _ in _dot_operand_dtypes(grads(unembed_logits), x, w)]
    assert ours == [("bfloat16", "bfloat16")] * 3, ours
    dx, dw = grads(unembed_logits)(x, w)
    assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.float32
    # Against exact fp64 math on the same bf16-rounded operands: only the cotangent's rounding
    # to bf16 (relative 2^-9) and dx's final rounding separate them.
    x64, w64, r64 = (np.asarray(a, np.float64) for a in (x.astype(jnp.float32), w.astype(
        jnp.bfloat16).astype(jnp.float32), r))
    np.testing.assert_allclose(np.asarray(dw), np.einsum("btd,btv->dv", x64, r64),
                               rtol=0, atol=1e-2 * np.abs(np.einsum("btd,btv->dv", x64, r64)).max())
    np.testing.assert_allclose(np.asarray(dx.astype(jnp.float32)), r64 @ w64.T,
                               rtol=0, atol=1e-2 * np.abs(r64 @ w64.T).max())


def test_bf16_model_unembed_gemms_are_all_bf16():
    """In a bf16 model's gradient every GEMM touching the vocabulary dimension (the forward
    and both backward unembedding GEMMs) has bf16 operands."""
    cfg = get_preset("transformer_tiny").replace(compute_dtype="bfloat16")
    tokens = _tokens(2, 8, cfg.vocab_size)
    graphdef, state = nnx.split(build_model(cfg))
    loss = lambda s: jnp.mean(nnx.merge(graphdef, s)(tokens) ** 2)
    vocab = [d for d, dims in _dot_operand_dtypes(jax.grad(loss), state) if cfg.vocab_size in dims]
    assert vocab == [("bfloat16", "bfloat16")] * 3, vocab


def test_unembed_grad_dtype_float32_restores_plain_autodiff():
    cfg = get_preset("transformer_tiny").replace(compute_dtype="bfloat16",
                                                 unembed_grad_dtype="float32")
    tokens = _tokens(2, 8, cfg.vocab_size)
    graphdef, state = nnx.split(build_model(cfg))
    loss = lambda s: jnp.mean(nnx.merge(graphdef, s)(tokens) ** 2)
    vocab = [d for d, dims in _dot_operand_dtypes(jax.grad(loss), state) if cfg.vocab_size in dims]
    assert len(vocab) == 3 and sum("float32" in d for d in vocab) == 2, vocab
    with pytest.raises(ValueError, match="unembed_grad_dtype"):
        cfg.replace(unembed_grad_dtype="fp32")
