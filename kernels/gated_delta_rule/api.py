"""Public entry point for the chunked gated delta rule: one function, the implementation chosen
by name, in one place.

Why this exists
    Model code calls one function with flash-linear-attention's signature and picks the
    implementation by name; the name actually used is observable through
    `resolve_implementation`, so runs can record it. An explicitly requested implementation
    that cannot run raises at once; nothing falls back silently. A Pallas kernel is opaque to
    XLA's partitioner (a Mosaic call cannot be partitioned; a Triton call would be gathered),
    so it runs per shard through `jax.shard_map` over the batch and heads of the mesh in
    context, as `kernels.attention` runs cuDNN and splash attention.

Implementations (`IMPLEMENTATIONS`)
    "recurrent"   `reference.recurrent`: the token-by-token definition (a `lax.scan`).
    "chunked"     `reference.chunked`: the WY chunk algorithm in XLA ops, any platform.
    "pallas_gpu"  `gpu/chunk.py`: Pallas kernels, Mosaic GPU where they take the shape, else
                  Triton. K <= 256, V <= 256 a multiple of 16, chunk_size a power of two >= 16.
    "pallas_tpu"  `tpu/chunk.py`: Pallas Mosaic TPU kernels; precision "highest" only,
                  chunk_size a multiple of 8.
    "auto"        `AUTO[(platform, precision)]` where it takes the call, else "chunked".

Numerics
    See `reference.py`: fp32 math inside for any input dtype, o returned in v's dtype, the
    state in float32 (float64 only when every input is float64). The Pallas implementations
    compute in float32 only.

Constraints
    q, k: [B, T, H, K]; v: [B, T, HV, V] with HV a multiple of H (value head j reads key head
    j // (HV // H)); g, beta: [B, T, HV]; initial_state: [B, HV, K, V] float32;
    segment_ids: [B, T] integers (packed documents: the state empties where the id changes).
    chunk_size is a static Python int > 0; T need not be a multiple of it.
    The platform is `mesh_context.target_platform()`: jax.default_backend(), or the device of
    an abstract mesh in context (an ahead-of-time compile for a TPU topology says "tpu").
"""

import functools
import numbers
from typing import Optional

import jax
import jax.numpy as jnp

from kernels.gated_delta_rule import reference
from kernels.mesh_context import shard_batch_and_heads, target_platform

IMPLEMENTATIONS = ("recurrent", "chunked", "pallas_gpu", "pallas_tpu")
PRECISIONS = ("highest", "default")
# "auto": "default" on a GPU, "highest" elsewhere. On an H200 a 100M-class hybrid trained at
# "default" (the Pallas kernel, bf16 operands) tracked "highest" (XLA chunked, fp32) within the
# spread between two seeds at every evaluation, in 0.57x the step time (experiments/LOG.md);
# fla and the paper's code run this recurrence with bf16 operands too. TPU: pallas_tpu takes
# "highest" only.
AUTO_PRECISION = {"gpu": "default"}
_PLATFORM = {"pallas_gpu": "gpu", "pallas_tpu": "tpu"}  # where each Pallas kernel compiles
# What "auto" runs per (platform, precision); "chunked" where a pair is not listed. On a GPU at
# "default", pallas_gpu: on an H200 its forward+backward was 5.8-6.4x faster than `chunked` at
# "default" (B4 T4096 H16, B8 T2048 H8) and the 370M hybrid's training step 23% faster
# (experiments/LOG.md). At "highest" the two trained within a few percent of each other, so
# `chunked` stays; pallas_tpu has not run on a TPU.
AUTO: dict[tuple[str, str], str] = {("gpu", "default"): "pallas_gpu"}
_XLA_PRECISION = {"highest": jax.lax.Precision.HIGHEST, "default": jax.lax.Precision.DEFAULT}


def _platform() -> str:
    platform = target_platform()
    return "gpu" if platform in ("cuda", "rocm") else platform


def resolve_precision(precision: str) -> str:
    """The precision that runs: `precision`, or for "auto" `AUTO_PRECISION` on this platform."""
    if precision == "auto":
        return AUTO_PRECISION.get(_platform(), "highest")
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected 'auto' or one of {PRECISIONS}")
    return precision


def _cannot_run(name: str, precision: str, dims, chunk_size: int, dtype) -> Optional[str]:
    """Why implementation `name` cannot take this call, or None (what is not given passes)."""
    if dtype is not None and jnp.dtype(dtype) == jnp.float64:
        return "computes in float32 only; got float64 inputs"
    if name == "pallas_gpu":
        from kernels.gated_delta_rule.gpu.chunk import supports
        return supports(dims, chunk_size)
    if precision != "highest":
        return f"has precision='highest' only; got precision={precision!r}"
    if chunk_size % 8:
        return f"takes chunk_size a multiple of 8 (the f32 sublane tile); got {chunk_size}"
    return None


def resolve_implementation(name: str, precision: str = "highest",
                           dims: Optional[tuple[int, int]] = None, chunk_size: int = 64,
                           dtype=None) -> str:
    """The implementation that will run for requested `name`, at `precision`, head dims
    dims = (K, V), chunk_size and the state's dtype (each optional: not checked if not given);
    precision "auto" as `resolve_precision`.

    "auto" is `AUTO[(platform, precision)]` where listed and able to take the call, else
    "chunked". A Pallas implementation named explicitly raises on a platform it does not
    compile for (RuntimeError) or for a call it cannot take (ValueError), in one line.
    """
    precision = resolve_precision(precision)
    platform = _platform()
    if name == "auto":
        pick = AUTO.get((platform, precision), "chunked")
        if pick != "chunked" and _cannot_run(pick, precision, dims, chunk_size, dtype):
            return "chunked"
        return pick
    if name not in IMPLEMENTATIONS:
        raise ValueError(
            f"implementation={name!r} is unknown; expected 'auto' or one of {IMPLEMENTATIONS}")
    if name in _PLATFORM:
        if platform != _PLATFORM[name]:
            raise RuntimeError(
                f"implementation={name!r} compiles only for a {_PLATFORM[name]} backend; "
                f"this process runs on {platform!r}. Use 'chunked', or call the kernel module "
                f"directly with interpret=True for a slow interpreted run.")
        reason = _cannot_run(name, precision, dims, chunk_size, dtype)
        if reason:
            raise ValueError(f"implementation={name!r} {reason}")
    return name


@functools.lru_cache(maxsize=None)
def _jitted(name: str, precision: str):
    """The implementation as one jitted function of (q, k, v, g, beta, initial_state, scale):
    eager callers get one compiled program; inside a caller's jit it inlines."""
    if name == "recurrent":
        fn = functools.partial(reference.recurrent, precision=_XLA_PRECISION[precision])
    elif name == "chunked":
        fn = functools.partial(reference.chunked, precision=_XLA_PRECISION[precision])
    elif name == "pallas_gpu":
        from kernels.gated_delta_rule.gpu.chunk import chunk_gated_delta_rule_pallas_gpu
        fn = functools.partial(chunk_gated_delta_rule_pallas_gpu, precision=precision)
    else:
        from kernels.gated_delta_rule.tpu.chunk import chunk_gated_delta_rule_pallas_tpu
        fn = chunk_gated_delta_rule_pallas_tpu
    static = ("use_qk_l2norm",) + (("chunk_size",) if name != "recurrent" else ()) + (
        ("pad_o",) if name == "pallas_gpu" else ())
    return jax.jit(fn, static_argnames=static)


def per_shard(fn, q, k, v, g, beta, initial_state, output_final_state: bool):
    """fn(q, k, v, g, beta, initial_state) -> (o, S), run per shard of batch and heads of the
    mesh in context (`mesh_context.shard_batch_and_heads`; directly without one). Contiguous
    head blocks keep value head j with key head j // (HV / H). Returns (o, S or None)."""
    args, head_dims = (q, k, v, g, beta), (2, 2, 2, 2, 2)
    if initial_state is not None:
        args, head_dims = args + (initial_state,), head_dims + (1,)

    def run(q, k, v, g, beta, S0=None):
        o, S = fn(q, k, v, g, beta, S0)
        return (o, S) if output_final_state else (o,)

    out = shard_batch_and_heads(run, args, head_dims=head_dims,
                                n_outputs_dims=((4, 2), (4, 1))[:1 + output_final_state])
    return out[0], (out[1] if output_final_state else None)


def _check_segment_ids(segment_ids, lead):
    if tuple(segment_ids.shape) != tuple(lead):
        raise ValueError(f"segment_ids must have shape [B, T] = {tuple(lead)}, got "
                         f"{tuple(segment_ids.shape)}")
    if not jnp.issubdtype(segment_ids.dtype, jnp.integer):
        raise TypeError(f"segment_ids must be integers, got dtype {segment_ids.dtype}")


def reset_at_segment_starts(g, segment_ids, state_dtype):
    """g with `reference.reset_log_decay` at every segment's first token (see
    `chunk_gated_delta_rule`); the Pallas kernels' tests call it to pack as the API does."""
    starts_BT1 = reference.segment_starts(segment_ids)[..., None]
    return jnp.where(starts_BT1, jnp.asarray(reference.reset_log_decay(state_dtype), g.dtype), g)


def _check_float(name, x):
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {x.dtype}")


def _state_dtype(*xs):
    return reference.compute_dtype(jnp.result_type(*xs))


def validate(q, k, v, g, beta, initial_state, *, token_axis: bool,
             state_name: str = "initial_state"):
    """Check shapes and dtypes; `token_axis` is False for the one-token decoding step."""
    lead = ("B", "T") if token_axis else ("B",)
    trailing = {"q": ("H", "K"), "k": ("H", "K"), "v": ("HV", "V"), "g": ("HV",),
                "beta": ("HV",)}
    for name, x in (("q", q), ("k", k), ("v", v), ("g", g), ("beta", beta)):
        dims = lead + trailing[name]
        if x.ndim != len(dims):
            raise ValueError(f"{name} must have {len(dims)} dims [{', '.join(dims)}], "
                             f"got shape {x.shape}")
        _check_float(name, x)
    n = len(lead)
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape, got q {q.shape} and k {k.shape}")
    if v.shape[:n] != q.shape[:n]:
        raise ValueError(f"v leading dims {lead} must match q: v {v.shape} vs q {q.shape}")
    H, HV = q.shape[n], v.shape[n]
    if HV % H != 0:
        raise ValueError(
            f"v has HV={HV} heads, which is not a multiple of the H={H} heads of q and k")
    for name, x in (("g", g), ("beta", beta)):
        if x.shape != v.shape[:n + 1]:
            raise ValueError(
                f"{name} must have shape {v.shape[:n + 1]} ([{', '.join(lead)}, HV]), "
                f"got {x.shape}")
    if initial_state is not None:
        want = (q.shape[0], HV, q.shape[-1], v.shape[-1])
        if initial_state.shape != want:
            raise ValueError(f"{state_name} must have shape [B, HV, K, V] = {want}, "
                             f"got {initial_state.shape}")
        dt = _state_dtype(q, k, v, g, beta)
        if initial_state.dtype != dt:
            raise TypeError(f"{state_name} must be {jnp.dtype(dt).name} (the state dtype), "
                            f"got {initial_state.dtype}")


def chunk_gated_delta_rule(
    q, k, v, g, beta, *,
    scale: Optional[float] = None,
    initial_state: Optional[jax.Array] = None,
    output_final_state: bool = False,
    use_qk_l2norm: bool = False,
    chunk_size: int = 64,
    implementation: str = "auto",
    precision: str = "highest",
    segment_ids: Optional[jax.Array] = None,
    pad_o: bool = False,
):
    """Gated delta rule over a sequence. Returns (o [B,T,HV,V], final_state or None).

    S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T;  o_t = scale S_t^T q_t,
    scale = K ** -0.5 by default. With use_qk_l2norm, q and k are L2-normalised over K
    (eps 1e-6, in fp32) first. chunk_size does not affect "recurrent"; the Pallas kernels
    restrict it (see the module docstring).
    precision: "highest" (fp32 matmuls: Precision.HIGHEST in XLA, TF32x3 in pallas_gpu) or
    "default" (XLA's default, TF32 on GPU; bf16 matmul operands with fp32 accumulation and
    bf16 intermediates in pallas_gpu, like flash-linear-attention: a few 1e-3 relative error,
    faster), or "auto": "default" on a GPU, "highest" elsewhere (`AUTO_PRECISION`).
    segment_ids [B, T] (packed documents): the state is emptied before every token whose id
    differs from the previous token's, so no document reads another; initial_state enters
    the first segment and the final state is the last segment's. "recurrent" empties the state
    explicitly; the chunked implementations give each segment's first token the log-decay
    `reference.reset_log_decay` (its exp is exactly 0), which every kernel already handles,
    so packing costs no kernel of its own and the decays of g at those tokens get no gradient.
    pad_o: o may come back as [B, T, HV, Vo], Vo >= V, zero past V: "pallas_gpu" then returns
    o in its kernels' value width, and a consumer that reads o[..., :V] inside its own pass (the
    GDN layer's output norm) saves the slice and, in the backward, dO's pad. The other
    implementations return [B, T, HV, V] either way.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) \
            or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    chunk_size = int(chunk_size)
    validate(q, k, v, g, beta, initial_state, token_axis=True)
    if segment_ids is not None:
        _check_segment_ids(segment_ids, q.shape[:2])
    precision = resolve_precision(precision)
    impl = resolve_implementation(implementation, precision, (q.shape[-1], v.shape[-1]),
                                  chunk_size, _state_dtype(q, k, v, g, beta))
    fn = _jitted(impl, precision)
    kw = dict(scale=scale, use_qk_l2norm=use_qk_l2norm)
    if impl == "pallas_gpu":
        kw["pad_o"] = pad_o
    if impl != "recurrent":
        kw["chunk_size"] = chunk_size
        if segment_ids is not None:
            g = reset_at_segment_starts(g, segment_ids, _state_dtype(q, k, v, g, beta))
    elif segment_ids is not None:
        kw["segment_ids"] = segment_ids
    call = lambda q, k, v, g, beta, S0: fn(q, k, v, g, beta, initial_state=S0, **kw)
    if impl in _PLATFORM:
        return per_shard(call, q, k, v, g, beta, initial_state, output_final_state)
    o, S = call(q, k, v, g, beta, initial_state)
    return o, (S if output_final_state else None)
