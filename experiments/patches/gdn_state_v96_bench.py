"""The state passes (forward and dh) at the ladder's head dims, two ways each: V padded to 128
in two 64-wide tiles (the path before the V = 96 one), and V = 96 as one tile a head (64-byte
swizzle, `block_v=96`, the production path there). The forward with saves and bf16 o, dh with
dO, both in the caller's layout, as training runs them; the 370M layer's dims (B8 T2048, 22
heads, Kp 64).

    python experiments/patches/gdn_state_v96_bench.py      # on a GPU

The whole op is timed with gdn_kernel_compare.py; this script shows the state passes alone."""
import functools
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks.gdn_kernel import time_jax  # noqa: E402
from kernels.gated_delta_rule.gpu.state_mosaic import state_fwd  # noqa: E402
from kernels.gated_delta_rule.gpu.state_mosaic_bwd import dh  # noqa: E402

B, H, T, C, Kp = 8, 22, 2048, 64, 64
BH, N = B * H, T // C
ks = jax.random.split(jax.random.key(0), 7)
bf = lambda k, s, f=1.0: (jax.random.normal(k, s) * f).astype(jnp.bfloat16)  # noqa: E731
w, kd, qd = (bf(ks[i], (BH, T, Kp), Kp ** -0.5) for i in range(3))
aqk = bf(ks[3], (BH, T, C), C ** -0.5)
gc = jax.random.uniform(ks[4], (BH, Kp, N), minval=0.3, maxval=1.0)
u96 = bf(ks[5], (BH, T, 96))
s096 = jnp.zeros((BH, Kp, 96), jnp.float32)
pad = lambda x: jnp.pad(x, [(0, 0), (0, 0), (0, 32)])  # noqa: E731
u128, s0128 = pad(u96), pad(s096)


def timed(fn, args):
    """(median ms, min ms, the outputs)."""
    return (*time_jax(fn, args, warmup=1, iters=30, inner=5), fn(*args))


kw = dict(residuals=True, o_dtype=jnp.bfloat16, heads=H)
f64 = jax.jit(functools.partial(state_fwd, **kw))
f96 = jax.jit(functools.partial(state_fwd, block_v=96, **kw))
g64 = jax.jit(functools.partial(dh, heads=H))
g96 = jax.jit(functools.partial(dh, heads=H, block_v=96))
print(jax.devices()[0].device_kind)
for _ in range(2):  # two rounds, alternated
    m64, lo64, o64 = timed(f64, (w, u128, kd, gc, qd, aqk, s0128))
    m96, lo96, o96 = timed(f96, (w, u96, kd, gc, qd, aqk, s096))
    diff = float(jnp.max(jnp.abs(o64[0].reshape(B, T, H, 128)[..., :96].astype(jnp.float32)
                                 - o96[0].reshape(B, T, H, 96).astype(jnp.float32))))
    print(f"forward: V 128 in two tiles {m64:.4f} ms ({lo64:.4f}); V 96 in one {m96:.4f} ms "
          f"({lo96:.4f}); ratio {m96 / m64:.3f}; max |o diff| {diff:.3g}")
    do96 = o96[0]  # any [B, Tp, H * 96] bf16 cotangent
    do128 = pad(do96.reshape(B * T, H, 96)).reshape(B, T, H * 128)
    m64, lo64, d64 = timed(g64, (w, kd, gc, qd, aqk, do128, s0128))
    m96, lo96, d96 = timed(g96, (w, kd, gc, qd, aqk, do96, s096))
    diff = float(jnp.max(jnp.abs(d64[1][..., :96].astype(jnp.float32)
                                 - d96[1].astype(jnp.float32))))
    print(f"dh: V 128 in two tiles {m64:.4f} ms ({lo64:.4f}); V 96 in one {m96:.4f} ms "
          f"({lo96:.4f}); ratio {m96 / m64:.3f}; max |dd diff| {diff:.3g}")
