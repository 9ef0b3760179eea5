"""Public entry point for the chunked gated delta rule, with implementation dispatch.

Why this exists
    Model code calls one function with flash-linear-attention's signature and picks the
    implementation by name; the name actually used is observable through
    `resolve_implementation`, so runs can record it. An explicitly requested implementation
    that cannot run raises; nothing falls back silently.

Numerics
    See `reference.py`: fp32 math inside for any input dtype, o returned in v's dtype, the
    state in float32 (float64 only when every input is float64).

Constraints
    q, k: [B, T, H, K]; v: [B, T, HV, V] with HV a multiple of H (value head j reads key head
    j // (HV // H)); g, beta: [B, T, HV]; initial_state: [B, HV, K, V] float32.
    chunk_size is a static Python int > 0; T need not be a multiple of it.
    The Pallas implementations compute in float32 only (no float64 inputs).
"""

import functools
import numbers
from typing import Optional

import jax
import jax.numpy as jnp

from kernels.gated_delta_rule import reference

IMPLEMENTATIONS = ("recurrent", "chunked", "pallas_gpu", "pallas_gpu_split", "pallas_mgpu",
                   "pallas_tpu")
# Jitted so that eager callers get one compiled program; inside a caller's jit this inlines.
_RUN = {
    "recurrent": jax.jit(reference.recurrent, static_argnames=("use_qk_l2norm", "precision")),
    "chunked": jax.jit(reference.chunked,
                       static_argnames=("use_qk_l2norm", "chunk_size", "precision")),
}
PRECISIONS = ("highest", "default")
_XLA_PRECISION = {"highest": jax.lax.Precision.HIGHEST, "default": jax.lax.Precision.DEFAULT}
# The platform each Pallas implementation compiles for. Interpret mode (CPU tests) is reached
# through the kernel modules' own functions with interpret=True, never through this API.
_PALLAS_BACKEND = {"pallas_gpu": "gpu", "pallas_gpu_split": "gpu", "pallas_mgpu": "gpu",
                   "pallas_tpu": "tpu"}
# The Pallas GPU implementations: one entry point (pallas_gpu.py), each with its state pass.
# pallas_gpu's "auto": the Mosaic forward and the Mosaic sequential kernel of the split backward
# where they take the shape, else the Triton ones (`pallas_gpu_auto.auto_state_pass`). Each name
# runs the prep pallas_gpu picks (`pallas_gpu_auto.auto_prep`: Mosaic GPU's forward or Triton's).
_GPU_STATE_PASS = {"pallas_gpu": "auto", "pallas_gpu_split": "split", "pallas_mgpu": "mosaic"}
# What "auto" runs per (backend, precision); "chunked" where a pair is not listed. On a GPU at
# "default", pallas_gpu: on an H200 it was 3.5-3.7x faster forward+backward than `chunked` at
# "default" on the four shapes and made the 370M hybrid's training step 21% faster
# (experiments/LOG.md, seventh session). At "highest" it trained 2.5% slower, so `chunked`
# stays; pallas_tpu has not run on a TPU.
AUTO: dict[tuple[str, str], str] = {("gpu", "default"): "pallas_gpu"}
# The head dims pallas_gpu is tested on: K padded to a power of two <= 256, V in 16-wide tiles.
_PALLAS_GPU_MAX_K, _PALLAS_GPU_MAX_V = 256, 256


def pallas_gpu_supports(K: int, V: int, chunk_size: int = 64) -> bool:
    """Whether pallas_gpu takes key dim K, value dim V and chunk_size (what `auto` checks
    before picking it)."""
    return (K <= _PALLAS_GPU_MAX_K and V <= _PALLAS_GPU_MAX_V and V % 16 == 0
            and chunk_size >= 16 and chunk_size & (chunk_size - 1) == 0)


def _pallas_fn(name: str):
    """The Pallas entry point, imported lazily so that api.py imports without it."""
    if name in _GPU_STATE_PASS:  # the automatic prep, then the named state pass
        from kernels.gated_delta_rule.pallas_gpu import chunk_gated_delta_rule_pallas_gpu
        return functools.partial(chunk_gated_delta_rule_pallas_gpu,
                                 state_pass=_GPU_STATE_PASS[name])
    try:
        from kernels.gated_delta_rule.pallas_tpu import chunk_gated_delta_rule_pallas_tpu
    except ImportError as e:
        raise NotImplementedError(
            f"implementation='pallas_tpu' is not available: {e}; use one of "
            f"{('recurrent', 'chunked')} or 'auto'") from e
    return chunk_gated_delta_rule_pallas_tpu


@functools.lru_cache(maxsize=None)
def _jitted_pallas(name: str):
    static = ("use_qk_l2norm", "chunk_size") + (("precision",) if name != "pallas_tpu" else ())
    return jax.jit(_pallas_fn(name), static_argnames=static)


def resolve_implementation(name: str, precision: str = "highest",
                           dims: Optional[tuple[int, int]] = None, chunk_size: int = 64) -> str:
    """Map a requested implementation name to the one that will run.

    "auto" is `AUTO[(backend, precision)]` where listed and, when the head dims `dims` = (K, V)
    are given, able to take them and chunk_size; "chunked" elsewhere. A Pallas implementation
    requested on a backend it does not compile for raises.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {PRECISIONS}")
    from kernels.mesh_context import target_platform  # the AOT target if a mesh says so

    backend = target_platform()
    backend = "gpu" if backend in ("cuda", "rocm") else backend
    if name == "auto":
        pick = AUTO.get((backend, precision), "chunked")
        if pick == "pallas_gpu" and dims is not None \
                and not pallas_gpu_supports(*dims, chunk_size):
            return "chunked"
        return pick
    if name in _PALLAS_BACKEND:
        if backend != _PALLAS_BACKEND[name]:
            raise RuntimeError(
                f"implementation={name!r} compiles only for a {_PALLAS_BACKEND[name]} backend; "
                f"this process runs on {backend!r}. Use 'chunked', or call the kernel module "
                f"directly with interpret=True for a slow interpreted run.")
        return name
    if name in IMPLEMENTATIONS:
        return name
    raise ValueError(
        f"implementation={name!r} is unknown; expected 'auto' or one of {IMPLEMENTATIONS}")


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
):
    """Gated delta rule over a sequence. Returns (o [B,T,HV,V], final_state or None).

    S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T;  o_t = scale S_t^T q_t,
    scale = K ** -0.5 by default. With use_qk_l2norm, q and k are L2-normalised over K
    (eps 1e-6, in fp32) first. chunk_size does not affect "recurrent"; the Pallas kernels
    may restrict it (pallas_gpu: a power of two >= 16).
    precision: "highest" (fp32 matmuls: Precision.HIGHEST in XLA, TF32x3 in pallas_gpu) or
    "default" (XLA's default, TF32 on GPU; bf16 matmul operands with fp32 accumulation and
    bf16 intermediates in pallas_gpu, like flash-linear-attention: a few 1e-3 relative error,
    faster).
    """
    impl = resolve_implementation(implementation, precision)  # bad names fail first
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) \
            or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    chunk_size = int(chunk_size)
    validate(q, k, v, g, beta, initial_state, token_axis=True)
    if implementation == "auto":  # the head dims, now known to be sane, may rule a kernel out
        impl = resolve_implementation("auto", precision, (q.shape[-1], v.shape[-1]), chunk_size)
        if impl.startswith("pallas") and _state_dtype(q, k, v, g, beta) == jnp.float64:
            impl = "chunked"  # the Pallas kernels compute in float32 only
    kwargs = dict(scale=scale, initial_state=initial_state, use_qk_l2norm=use_qk_l2norm)
    if impl != "recurrent":
        kwargs["chunk_size"] = chunk_size
    if impl in _RUN:
        kwargs["precision"] = _XLA_PRECISION[precision]
    elif impl in _GPU_STATE_PASS:  # pallas_mgpu: precision="default" only
        kwargs["precision"] = precision
    elif precision != "highest":
        raise NotImplementedError(f"implementation={impl!r} has no precision={precision!r}")
    fn = _RUN[impl] if impl in _RUN else _jitted_pallas(impl)
    o, S = fn(q, k, v, g, beta, **kwargs)
    return o, (S if output_final_state else None)
