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
"""

import numbers
from typing import Optional

import jax
import jax.numpy as jnp

from kernels.gated_delta_rule import reference

IMPLEMENTATIONS = ("recurrent", "chunked")
# Jitted so that eager callers get one compiled program; inside a caller's jit this inlines.
_RUN = {
    "recurrent": jax.jit(reference.recurrent, static_argnames=("use_qk_l2norm",)),
    "chunked": jax.jit(reference.chunked, static_argnames=("use_qk_l2norm", "chunk_size")),
}
PLANNED = ("pallas_gpu", "pallas_tpu")


def resolve_implementation(name: str) -> str:
    """Map a requested implementation name to the one that will run.

    "auto" is "chunked" on every platform until a Pallas kernel exists.
    """
    if name == "auto":
        return "chunked"
    if name in IMPLEMENTATIONS:
        return name
    if name in PLANNED:
        raise NotImplementedError(
            f"implementation={name!r}: the Pallas kernel is not built yet; "
            f"use one of {IMPLEMENTATIONS} or 'auto'")
    raise ValueError(
        f"implementation={name!r} is unknown; expected 'auto', one of {IMPLEMENTATIONS}, "
        f"or (not built yet) one of {PLANNED}")


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
):
    """Gated delta rule over a sequence. Returns (o [B,T,HV,V], final_state or None).

    S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T;  o_t = scale S_t^T q_t,
    scale = K ** -0.5 by default. With use_qk_l2norm, q and k are L2-normalised over K
    (eps 1e-6, in fp32) first. chunk_size only affects "chunked".
    """
    impl = resolve_implementation(implementation)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) \
            or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    chunk_size = int(chunk_size)
    validate(q, k, v, g, beta, initial_state, token_axis=True)
    kwargs = dict(scale=scale, initial_state=initial_state, use_qk_l2norm=use_qk_l2norm)
    if impl == "chunked":
        kwargs["chunk_size"] = chunk_size
    o, S = _RUN[impl](q, k, v, g, beta, **kwargs)
    return o, (S if output_final_state else None)
