"""Plain-jnp references for the gated delta rule: the token recurrence and the chunked algorithm.

Why this exists
    `recurrent` is the definition (a `lax.scan` over tokens) and the oracle every faster
    implementation is tested against. `chunked` is the WY/UT-transform chunk algorithm of
    flash-linear-attention written in plain jnp: batched matmuls for everything inside a
    chunk, a `lax.scan` only for the state passed between chunks. It is the fast XLA path
    (and the one used for training) until a Pallas kernel exists, and the algorithm such a
    kernel follows. Both are differentiable with plain JAX autodiff.

Numerics
    Per head, with a_t = exp(g_t):
        S_t = a_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,    o_t = scale * S_t^T q_t.
    Everything inside runs in float32 whatever the input dtype (float64 inputs compute in
    float64, which the tests use as a gradient oracle); o is cast back to v's dtype and the
    state stays in the compute dtype. Decays are exponentiated only for masked exponents:
    every exp(G_i - G_j) uses jnp.where(mask, G_i - G_j, -inf) first, so the unused upper
    triangle (which is +large for strong decay) never becomes inf and never feeds inf * 0 into
    a value or a gradient. Nothing is clipped, and no term is divided by a cumulative decay.
    Every matmul uses precision=HIGHEST by default, so float32 means float32 on GPU too: XLA's
    default there is TF32 (about 1e-3 relative), which breaks the 1e-5 agreement the tests
    ask for. On an H200 (B4 T4096 H16 K=V=128, bf16 inputs) HIGHEST costs about 1.4x in
    time against DEFAULT for `chunked`; `precision=` is an explicit argument here to measure it.

Constraints
    Inputs are assumed validated by `api.py` (shapes, grouped heads, chunk_size > 0).
    `chunked` pads T to a multiple of chunk_size with g = beta = k = v = q = 0; such a token
    leaves the state unchanged (a = 1, no write) and its output is sliced off.
"""

import functools

import jax
import jax.numpy as jnp

L2NORM_EPS = 1e-6
HIGHEST = jax.lax.Precision.HIGHEST


def compute_dtype(dtype) -> jnp.dtype:
    """float32 for 16/32-bit inputs; float64 only when the inputs are float64."""
    return jnp.promote_types(jnp.float32, dtype)


def l2norm(x, eps: float = L2NORM_EPS):
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def resolve_scale(scale, K):
    """q's scale: the given one, or K^-1/2."""
    return K ** -0.5 if scale is None else scale


def prepare(q_BTHK, k_BTHK, v_BTHV, g_BTH, beta_BTH, scale, use_qk_l2norm):
    """Upcast, normalise, scale q, and repeat key heads onto the grouped value heads."""
    dt = compute_dtype(jnp.result_type(q_BTHK, k_BTHK, v_BTHV, g_BTH, beta_BTH))
    q, k = q_BTHK.astype(dt), k_BTHK.astype(dt)
    if use_qk_l2norm:
        q, k = l2norm(q), l2norm(k)
    scale = resolve_scale(scale, q.shape[-1])
    if not (isinstance(scale, (int, float)) and scale == 1):  # 1: a kernel applies it
        q = q * scale
    group = v_BTHV.shape[2] // q.shape[2]
    if group > 1:  # value head j reads key head j // group
        q, k = jnp.repeat(q, group, axis=2), jnp.repeat(k, group, axis=2)
    return q, k, v_BTHV.astype(dt), g_BTH.astype(dt), beta_BTH.astype(dt), dt


def step_core(q_BHK, k_BHK, v_BHV, g_BH, beta_BH, S_BHKV, precision=HIGHEST):
    """One token of the recurrence on prepared (upcast, scaled, head-expanded) inputs."""
    _einsum = functools.partial(jnp.einsum, precision=precision)
    S = S_BHKV * jnp.exp(g_BH)[..., None, None]
    pred_BHV = _einsum("bhkv,bhk->bhv", S, k_BHK)
    delta_BHV = beta_BH[..., None] * (v_BHV - pred_BHV)
    S = S + _einsum("bhk,bhv->bhkv", k_BHK, delta_BHV)
    o_BHV = _einsum("bhkv,bhk->bhv", S, q_BHK)
    return o_BHV, S


def segment_starts(segment_ids_BT):
    """[B, T] bool: True where a token begins a new segment (its id differs from the previous
    token's). Token 0 is not a start: the initial state belongs to the first segment."""
    ids = jnp.asarray(segment_ids_BT)
    return jnp.concatenate([jnp.zeros_like(ids[:, :1], bool), ids[:, 1:] != ids[:, :-1]], 1)


def reset_log_decay(dtype) -> float:
    """A log-decay whose exp, and the exp of anything below it, is exactly 0 in `dtype`'s
    compute precision (float32: exp(-128); float64: exp(-1024)): a token carrying it starts
    from an empty state, and no earlier token reaches it or anything after it. Small enough in
    magnitude that the chunked algorithms' sums of g keep their accuracy."""
    return -1024.0 if compute_dtype(dtype) == jnp.float64 else -128.0


def _zero_state(B, HV, K, V, dt, initial_state):
    if initial_state is None:
        return jnp.zeros((B, HV, K, V), dt)
    return initial_state.astype(dt)


def recurrent(q, k, v, g, beta, *, scale=None, initial_state=None, use_qk_l2norm=False,
              precision=HIGHEST, segment_ids=None):
    """Token-by-token definition. Returns (o [B,T,HV,V] in v.dtype, final state [B,HV,K,V]).
    With segment_ids [B, T] the state is emptied before each segment's first token
    (`segment_starts`): the definition the other implementations' decay-based reset is tested
    against."""
    q, k, vf, g, beta, dt = prepare(q, k, v, g, beta, scale, use_qk_l2norm)
    B, T, HV, K = k.shape
    S0 = _zero_state(B, HV, K, vf.shape[-1], dt, initial_state)
    starts_BT = (jnp.zeros((B, T), bool) if segment_ids is None
                 else segment_starts(segment_ids))

    # Rematerialised so the backward pass keeps one [B,HV,K,V] state per token rather than
    # four (B4 T4096 H16 K=V=128 would otherwise need 65 GiB for residuals).
    @jax.checkpoint
    def body(S, xs):
        *xs, start_B = xs
        S = jnp.where(start_B[:, None, None, None], jnp.zeros((), S.dtype), S)
        o, S = step_core(*xs, S, precision)
        return S, o

    xs = tuple(jnp.moveaxis(x, 1, 0) for x in (q, k, vf, g, beta, starts_BT))
    S_final, o_TBHV = jax.lax.scan(body, S0, xs)
    return jnp.moveaxis(o_TBHV, 0, 1).astype(v.dtype), S_final


def _to_chunks(x_BTH_, T_pad, C):
    """[B, T, HV, ...] -> [B, HV, N, C, ...], zero-padding T up to T_pad."""
    pad = [(0, 0)] * x_BTH_.ndim
    pad[1] = (0, T_pad - x_BTH_.shape[1])
    x = jnp.pad(x_BTH_, pad)
    B, _, HV = x.shape[:3]
    x = x.reshape(B, T_pad // C, C, HV, *x.shape[3:])
    return jnp.moveaxis(x, 3, 1)


def unit_lower_inverse(A, precision=HIGHEST):
    """(I + A)^-1 for strictly lower-triangular A [..., C, C], by recursive 2x2 blocks.

    [[L11, 0], [L21, L22]]^-1 = [[X11, 0], [-X22 L21 X11, X22]], built up from 1x1 blocks
    in log2(C) levels of batched matmuls: the same arithmetic as forward substitution, but in
    matmuls, which XLA runs far faster than a batched triangular solve on GPU.
    C is zero-padded to a power of two (the padding block inverts to I and is sliced off).
    """
    _einsum = functools.partial(jnp.einsum, precision=precision)
    C = A.shape[-1]
    P = 1 << (C - 1).bit_length()
    batch = A.shape[:-2]
    if P != C:
        A = jnp.pad(A, [(0, 0)] * len(batch) + [(0, P - C), (0, P - C)])
    X = jnp.ones(batch + (P, 1, 1), A.dtype)  # inverses of the 1x1 diagonal blocks
    s = 1
    while s < P:
        nb = P // (2 * s)
        X_pairs = X.reshape(batch + (nb, 2, s, s))
        X11, X22 = X_pairs[..., 0, :, :], X_pairs[..., 1, :, :]
        # The nb diagonal [2s, 2s] blocks of A; their lower-left [s, s] corner is L21.
        A_diag = jnp.diagonal(A.reshape(batch + (nb, 2 * s, nb, 2 * s)), axis1=-4, axis2=-2)
        L21 = jnp.moveaxis(A_diag, -1, -3)[..., s:, :s]
        X21 = -_einsum("...ij,...jk,...kl->...il", X22, L21, X11)
        top = jnp.concatenate([X11, jnp.zeros_like(X11)], axis=-1)
        bottom = jnp.concatenate([X21, X22], axis=-1)
        X = jnp.concatenate([top, bottom], axis=-2)  # [..., nb, 2s, 2s]
        s *= 2
    return X.reshape(batch + (P, P))[..., :C, :C]


def chunked(q, k, v, g, beta, *, scale=None, initial_state=None, use_qk_l2norm=False,
            chunk_size=64, precision=HIGHEST):
    """WY/UT-transform chunk algorithm. Same contract as `recurrent`.

    Within a chunk (positions r = 1..C, cumulative log-decay G_r, start state S0), unrolling
    the recurrence with delta_t = beta_t (v_t - a_t S_{t-1}^T k_t) gives
        (I + A) delta = beta v - beta exp(G) k S0,   A_ij = beta_i exp(G_i - G_j) k_i.k_j (i > j)
    so delta = u - w S0 with u = (I+A)^-1 beta v and w = (I+A)^-1 beta exp(G) k (the
    inverse is formed explicitly, see `unit_lower_inverse`), and
        o_r   = exp(G_r) q_r S0 + sum_{i<=r} exp(G_r - G_i) (q_r.k_i) delta_i
        S_end = exp(G_C) S0 + sum_i exp(G_C - G_i) k_i delta_i^T.
    Only the last line is sequential across chunks.
    """
    _einsum = functools.partial(jnp.einsum, precision=precision)
    C = int(chunk_size)
    q, k, vf, g, beta, dt = prepare(q, k, v, g, beta, scale, use_qk_l2norm)
    B, T, HV, K = k.shape
    V = vf.shape[-1]
    n_chunks = -(-T // C)
    T_pad = n_chunks * C
    q, k, vf, g, beta = (_to_chunks(x, T_pad, C) for x in (q, k, vf, g, beta))
    # q, k: [B,HV,N,C,K]; vf: [B,HV,N,C,V]; g, beta: [B,HV,N,C]

    G = jnp.cumsum(g, axis=-1)
    row = jnp.arange(C)[:, None]
    col = jnp.arange(C)[None, :]
    # G_diff[i, j] = G_i - G_j = sum of g over (j, i], summed directly rather than as a
    # difference of two long cumulative sums: with strong decay |G| reaches ~1000 within a
    # chunk and the difference would lose ~|G| * 6e-8 absolute accuracy in the exponent.
    # Entries with i < j come out 0 here and are masked to -inf below.
    G_diff = jnp.cumsum(jnp.where(row > col, g[..., :, None], 0.0), axis=-2)
    decay_strict = jnp.exp(jnp.where(row > col, G_diff, -jnp.inf))
    decay_causal = jnp.exp(jnp.where(row >= col, G_diff, -jnp.inf))

    kk = _einsum("bhnik,bhnjk->bhnij", k, k)
    T_inv = unit_lower_inverse(beta[..., :, None] * kk * decay_strict, precision)  # (I+A)^-1
    u = _einsum("bhnij,bhnjv->bhniv", T_inv, beta[..., None] * vf)
    w = _einsum("bhnij,bhnjk->bhnik", T_inv, (beta * jnp.exp(G))[..., None] * k)

    qk = _einsum("bhnik,bhnjk->bhnij", q, k) * decay_causal
    q_decay = q * jnp.exp(G)[..., None]
    k_tail = k * jnp.exp(G_diff[..., -1, :])[..., None]  # exp(G_C - G_i)
    # S_end = M S0 + b with M = exp(G_C) I - k_tail^T w and b = k_tail^T u, batched over
    # chunks, so the sequential scan is a single [K,K] x [K,V] product per chunk.
    M = (jnp.exp(G[..., -1])[..., None, None] * jnp.eye(K, dtype=dt)
         - _einsum("bhnck,bhncj->bhnkj", k_tail, w))
    b = _einsum("bhnck,bhncv->bhnkv", k_tail, u)

    def body(S, xs):
        M_n, b_n = xs
        return _einsum("bhkj,bhjv->bhkv", M_n, S) + b_n, S

    S0 = _zero_state(B, HV, K, V, dt, initial_state)
    S_final, S_start = jax.lax.scan(body, S0, (jnp.moveaxis(M, 2, 0), jnp.moveaxis(b, 2, 0)))
    S_start = jnp.moveaxis(S_start, 0, 2)  # state entering each chunk, [B,HV,N,K,V]
    delta = u - _einsum("bhnck,bhnkv->bhncv", w, S_start)

    o = (_einsum("bhnck,bhnkv->bhncv", q_decay, S_start)
         + _einsum("bhnij,bhnjv->bhniv", qk, delta))
    o_BTHV = jnp.moveaxis(o, 1, 3).reshape(B, T_pad, HV, V)[:, :T]
    return o_BTHV.astype(v.dtype), S_final
