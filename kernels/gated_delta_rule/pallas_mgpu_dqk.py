"""The parallel kernel of the split state backward in Pallas Mosaic GPU (TMA + wgmma).

Why this exists
    After the sequential kernel (`pallas_mgpu_dh.py` or Triton's `_dh_kernel`), the split
    backward's parallel-over-chunks Triton kernel (`pallas_gpu_split._dqk_kernel`) computes the
    key-side cotangents. On an H100 it was the largest kernel of the default forward+backward
    at B4 T4096 H16 K=V=128 (0.388 of 2.054 ms of kernels, eleventh session's trace) while it
    moves about 0.69 GB: half of the card's bandwidth. This is its math as one warpgroup per
    chunk with TMA loads and wgmma products; state_pass="mosaic_dqk" runs it.
    Status: checked on a CPU host (Mosaic GPU interpreter with its race detector, against the
    Triton kernel in Pallas interpret mode; CUDA lowering); on an H200 (twelfth session) its
    compiled tests pass and it took 0.189 ms against the Triton kernel's 0.283 at that shape
    (a trace); state_pass="auto" has run it since, up to V = 192.

What it computes. One program per (batch x value head i, chunk n), all of V at once (V <= 192,
a multiple of 64: shared memory), from the forward's chunk-entry state S_n and the backward's
dS_n [Kp, V], delta_n, dd_n and dO_n [C, V] (all bf16):
    dw  = -dd S^T,  dqd = dO S^T,  dkd = delta dS^T   ([C, Kp], in out_dtype)
    daqk = dO delta^T                                 ([C, C], in out_dtype)
    dgc = rowsum(dS * S)                              ([Kp], fp32, over V tiles of 64)
The products are bf16 wgmmas with fp32 accumulation, as the Triton kernel's dots at "default";
two at a time, so that no more than two accumulators are live. Each output is staged in one
SMEM tile and TMA-stored, the next staging waiting until the store has read it.
Shared memory at Kp = 128, V = 192: S, dS 2 x 48 KB, delta, dd, dO 3 x 24 KB, the [C, Kp]
staging 16 KB, [C, C] 8 KB, dgc 512 B: 197,120 bytes (227 KB per block on Hopper).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from kernels.gated_delta_rule import caller_layout as lay
from kernels.gated_delta_rule.pallas_mgpu_common import (BV, _BF16_TR, C_SUPPORTED,
                                                       KP_SUPPORTED, wgmma_products)

V_MAX = 192  # S, dS, delta, dd and dO of the whole V in shared memory


def takes_shape(C: int, Kp: int, V: int) -> bool:
    """Whether `split_dqk_mgpu` takes chunk size C, padded key dim Kp and value dim V."""
    return C == C_SUPPORTED and Kp in KP_SUPPORTED and V % BV == 0 and V <= V_MAX


def _dqk_kernel(st_g, dst_g, delta_g, dd_g, do_g, dw_g, dkd_g, dqd_g, daqk_g, dgc_g,
                st_s, dst_s, delta_s, dd_s, do_s, ck_s, cc_s, g_s, bar, *, C, Kp, V, heads):
    i, n = lax.axis_index("i"), lax.axis_index("n")
    rows, srows = pl.ds(n * C, C), pl.ds(n * Kp, Kp)
    f32, WG = jnp.float32, plgpu.Layout.WGMMA
    for src, dst in ((st_g.at[i, srows], st_s), (dst_g.at[i, srows], dst_s),
                     (delta_g.at[i, rows], delta_s), (dd_g.at[i, rows], dd_s),
                     (lay.tile(do_g, i, rows, heads, V), do_s)):
        plgpu.copy_gmem_to_smem(src, dst, bar)
    plgpu.barrier_wait(bar)

    def store(tile_s, x, dst_g):  # x -> SMEM tile -> GMEM (TMA), once the tile's last store
        plgpu.wait_smem_to_gmem(0, wait_read_only=True)  # has read it
        tile_s[...] = x.astype(tile_s.dtype)
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(tile_s, dst_g)
        plgpu.commit_smem_to_gmem_group()

    dw, dqd = wgmma_products(((dd_s, st_s.T), (do_s, st_s.T)), ((C, Kp), (C, Kp)))
    store(ck_s, -dw, dw_g.at[i, rows])
    store(ck_s, dqd, dqd_g.at[i, rows])
    dkd, daqk = wgmma_products(((delta_s, dst_s.T), (do_s, delta_s.T)), ((C, Kp), (C, C)))
    store(ck_s, dkd, dkd_g.at[i, rows])
    store(cc_s, daqk, daqk_g.at[i, rows])
    dgc = jnp.zeros((Kp,), f32)
    for j in range(V // BV):  # [Kp, BV] tiles: the whole [Kp, V] pair would not fit registers
        cols = pl.ds(j * BV, BV)
        S, dS = (plgpu.load(r.at[:, cols], layout=WG).astype(f32) for r in (st_s, dst_s))
        dgc = dgc + jnp.sum(dS * S, axis=1)
    store(g_s, dgc, dgc_g.at[i, n])
    plgpu.wait_smem_to_gmem(0)


def split_dqk_mgpu(states, dstates, delta, dd, do, *, C, out_dtype, interpret=None,
                   heads=None):
    """(dw, dkd, dqd [BH, Tp, Kp], daqk [BH, Tp, C] bf16 (out_dtype must be bf16); dgc
    [BH, N, Kp] fp32): what `pallas_gpu_split._dqk_kernel` writes, from its arguments in its
    layouts (states, dstates [BH, N*Kp, V]; delta, dd, do [BH, Tp, V]; with heads, do in the
    caller's layout [BH / heads, Tp, heads * V]: `caller_layout`). Operands are cast to bf16
    in XLA (no-ops at "default"). `interpret`: None to compile for the GPU, or a
    `plgpu.InterpretGPUParams()` for the Mosaic GPU interpreter."""
    BH, Tp, V = delta.shape
    N = Tp // C
    Kp = states.shape[1] // max(N, 1)
    if not takes_shape(C, Kp, V) or Tp % C:
        raise ValueError(f"the Mosaic dqk kernel needs C = {C_SUPPORTED}, Kp in {KP_SUPPORTED},"
                         f" V a multiple of {BV} up to {V_MAX} and Tp a multiple of C; got "
                         f"C={C}, Kp={Kp}, V={V}, Tp={Tp}")
    sv, cv = (BH, N * Kp, V), (BH, Tp, V)
    for name, x, want in (("states", states, sv), ("dstates", dstates, sv), ("dd", dd, cv),
                          ("do", lay.flat(do, heads, BH), cv)):
        if x.shape != want:
            raise ValueError(f"{name}: expected shape {want}, got {x.shape}")
    bf16, f32 = jnp.bfloat16, jnp.float32
    if jnp.dtype(out_dtype) != bf16:  # the cotangents of bf16 operands ("default")
        raise ValueError(f"the Mosaic dqk kernel writes bf16; got out_dtype={out_dtype}")
    ins = [x.astype(bf16) for x in (states, dstates, delta, dd, do)]
    scratch = [
        plgpu.SMEM((Kp, V), bf16, transforms=_BF16_TR),   # S_n
        plgpu.SMEM((Kp, V), bf16, transforms=_BF16_TR),   # dS_n
        plgpu.SMEM((C, V), bf16, transforms=_BF16_TR),    # delta
        plgpu.SMEM((C, V), bf16, transforms=_BF16_TR),    # dd
        plgpu.SMEM((C, V), bf16, transforms=_BF16_TR),    # dO
        plgpu.SMEM((C, Kp), bf16, transforms=_BF16_TR),   # dw, dqd, dkd staging
        plgpu.SMEM((C, C), bf16, transforms=_BF16_TR),    # daqk staging
        plgpu.SMEM((Kp,), f32),                            # dgc staging
        plgpu.Barrier(num_arrivals=5),
    ]

    def gdr_split_dqk_mgpu(*refs):
        _dqk_kernel(*refs, C=C, Kp=Kp, V=V, heads=heads)

    sds = lambda *shape, dt=bf16: jax.ShapeDtypeStruct(shape, dt)
    return plgpu.kernel(
        gdr_split_dqk_mgpu,
        out_type=(sds(BH, Tp, Kp), sds(BH, Tp, Kp), sds(BH, Tp, Kp), sds(BH, Tp, C),
                  sds(BH, N, Kp, dt=f32)),
        grid=(BH, N), grid_names=("i", "n"), scratch_types=scratch,
        interpret=interpret,
    )(*ins)
