"""Pallas Mosaic GPU (Hopper: TMA + wgmma) kernel of the state pass's backward: the sequential
`dh`, the math of `state_triton._dh_kernel`. (The parallel dqk's math runs in
`grad_mosaic.chunk_grads`, fused with the prep backward.)

Why this exists
    The backward walks the chunks in reverse with dS in registers, one program per (batch x
    value head, V tile); at the two B = 1 benchmark shapes that sequential kernel was the largest
    of the backward in Triton (1.02 ms of 2.6 at the 7B layer on an H200). On an H200 the
    backward took 0.522 ms with this `dh` against 0.700 with the Triton one at B4 T4096 H16
    K=V=128 (experiments/LOG.md). It runs where it takes the shape (`takes_shape`).

dh. One program (one warpgroup) per (batch x value head i, V tile j of BV = 64) walks the N
chunks of C = 64 rows from the last, with dS = dL/dS_{n+1} [Kp, BV] fp32 in registers (wgmma
accumulator layout):
    dstates_n = dS                                  (bf16, for dqk)
    dd_n      = kd_n dS + aqk_n^T dO_n              (bf16 out: du, and dqk's dw)
    dS       <- gc_n * dS + qd_n^T dO_n - w_n^T dd_n
and finally ds0 = dS (fp32). Per chunk: wait on the slot's barrier after issuing the TMA loads
of the chunk before it into the other slot (w, kd, qd [C, Kp], aqk [C, C], the dO tile [C, BV]
bf16, gc [Kp] fp32: six copies); stage bf16(dS) in SMEM and TMA-store it to dstates; wgmma
kd dS + aqk^T dO (the transposed SMEM view of aqk) and qd^T dO; stage bf16(dd) (TMA-stored to
dd) and bf16(-dd) (the B operand of -w^T dd, accumulated onto qd^T dO); then the fp32 decay.
Store groups per step: dS, then dd. ds_smem is rewritten after the previous dS store has left
it (one group, the previous dd, may still be in flight), dd_smem likewise.
Shared memory at Kp = 128: 2 slots x (3 C Kp + C C + C BV) bf16 + 2 Kp fp32, bf16 dS, dd and
-dd, fp32 dS in/out staging: 197,632 bytes (227 KB per block on Hopper), one block per SM.

Numerics
    Those of the Triton kernel at precision="default": bf16 operands (including dS and dd
    where they become wgmma operands), fp32 accumulation, carried dS and decay.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from kernels.gated_delta_rule.gpu import layout as lay
from kernels.gated_delta_rule.gpu.mosaic_common import (BV, F32_TR, bf16_transforms,
                                                        check_shapes, copy_chunk_operands,
                                                        load_state, store_state, takes_shape)

__all__ = ["dh", "takes_shape"]


def _dh_kernel(w_g, kd_g, gct_g, qd_g, aqk_g, do_g, dsf_g, dstates_g, dd_g, ds0_g,
               w_buf, kd_buf, qd_buf, aqk_buf, gc_buf, do_buf, ds_smem, dd_smem, ndd_smem,
               sio_smem, bars, sbar, *, C, Kp, N, heads, V, BV):
    i = lax.axis_index("i")
    j = lax.axis_index("j")
    cols = pl.ds(j * BV, BV)
    f32, bf16 = jnp.float32, jnp.bfloat16

    def fetch(n, slot):  # the forward's operands but u, then the dO tile
        copy_chunk_operands((w_g, kd_g, qd_g, None, aqk_g, gct_g),
                            (w_buf, kd_buf, qd_buf, None, aqk_buf, gc_buf),
                            i=i, n=n, C=C, cols=cols, slot=slot, bar=bars.at[slot])
        plgpu.copy_gmem_to_smem(lay.tile(do_g, i, pl.ds(n * C, C), heads, V, j * BV, BV),
                                do_buf.at[slot], bars.at[slot])

    fetch(N - 1, 0)
    ds_init = load_state(dsf_g.at[i, :, cols], sio_smem, sbar)

    def step(k, dS):  # dS = dL/dS_{n+1}
        n = N - 1 - k
        slot = k % 2

        @pl.when(k + 1 < N)
        def _():
            fetch(n - 1, 1 - slot)

        plgpu.barrier_wait(bars.at[slot])
        w_s, kd_s, qd_s = w_buf.at[slot], kd_buf.at[slot], qd_buf.at[slot]
        aqk_s, do_s = aqk_buf.at[slot], do_buf.at[slot]
        # The slot's only register read, before the commit_smem fences below (the forward's gc).
        gc = plgpu.load(gc_buf.at[slot], layout=plgpu.Layout.WGMMA.reduce(1))  # [Kp]

        plgpu.wait_smem_to_gmem(1, wait_read_only=True)  # dS_{n+1}'s store has left ds_smem
        ds_smem[...] = dS.astype(bf16)
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(ds_smem, dstates_g.at[i, pl.ds(n * Kp, Kp), cols])
        plgpu.commit_smem_to_gmem_group()

        def mm(acc_dd, acc_s):
            plgpu.wgmma(acc_dd, kd_s, ds_smem)
            plgpu.wgmma(acc_dd, aqk_s.T, do_s)
            plgpu.wgmma(acc_s, qd_s.T, do_s)
            plgpu.wgmma_wait(0)
            dd = acc_dd[...]
            plgpu.wait_smem_to_gmem(1, wait_read_only=True)  # dd_{n+1}'s store has left
            dd_smem[...] = dd.astype(bf16)
            ndd_smem[...] = (-dd).astype(bf16)
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(dd_smem, dd_g.at[i, pl.ds(n * C, C), cols])
            plgpu.commit_smem_to_gmem_group()
            plgpu.wgmma(acc_s, w_s.T, ndd_smem)
            plgpu.wgmma_wait(0)
            return acc_s[...]

        ds_new = pl.run_scoped(mm, plgpu.ACC((C, BV), f32), plgpu.ACC((Kp, BV), f32))
        return lax.broadcast_in_dim(gc, (Kp, BV), [0]) * dS + ds_new

    ds_fin = lax.fori_loop(0, N, step, ds_init)
    store_state(ds_fin, sio_smem, ds0_g.at[i, :, cols])


def dh(w, kd, gc, qd, aqk, do, dsf, *, interpret=None, heads=None, block_v=BV):
    """(dstates bf16 [BH, N*Kp, V], dd bf16 [BH, Tp, V], ds0 fp32 [BH, Kp, V]) from w, kd, qd
    [BH, Tp, Kp]; gc [BH, Kp, N]; aqk [BH, Tp, C]; do [BH, Tp, V] (with heads, the caller's
    layout [BH / heads, Tp, heads * V]: `layout.py`); dsf = dL/dS_final [BH, Kp, V]. Operands
    are cast to bf16 (gc, dsf to fp32) in XLA. `interpret`: None to compile for the GPU, or a
    `plgpu.InterpretGPUParams()` for the Mosaic GPU interpreter."""
    # do stands in for u in the shared shape check, and is checked at exactly V as `do`
    BV = block_v
    do_flat = lay.flat(do, heads, w.shape[0])
    BH, Tp, Kp, V, C, N = check_shapes(w, do_flat, kd, gc, qd, aqk, block_v=BV, dsf=dsf,
                                        do=do_flat)
    tr = bf16_transforms(BV)
    bf16, f32 = jnp.bfloat16, jnp.float32
    ins = [x.astype(bf16) for x in (w, kd)] + [jnp.swapaxes(gc.astype(f32), 1, 2)]
    ins += [x.astype(bf16) for x in (qd, aqk, do)] + [dsf.astype(f32)]
    scratch = [
        plgpu.SMEM((2, C, Kp), bf16, transforms=tr),  # w, double-buffered
        plgpu.SMEM((2, C, Kp), bf16, transforms=tr),  # kd
        plgpu.SMEM((2, C, Kp), bf16, transforms=tr),  # qd
        plgpu.SMEM((2, C, C), bf16, transforms=tr),   # aqk
        plgpu.SMEM((2, Kp), f32),                     # gc
        plgpu.SMEM((2, C, BV), bf16, transforms=tr),  # dO tile
        plgpu.SMEM((Kp, BV), bf16, transforms=tr),    # bf16(dS): wgmma B operand
        plgpu.SMEM((C, BV), bf16, transforms=tr),     # bf16(dd): its store
        plgpu.SMEM((C, BV), bf16, transforms=tr),     # bf16(-dd): wgmma B operand
        plgpu.SMEM((Kp, BV), f32, transforms=F32_TR),      # dS in/out staging
        plgpu.Barrier(num_arrivals=6, num_barriers=2),     # one per slot, six TMA copies
        plgpu.Barrier(num_arrivals=1),                     # dsf load
    ]

    def gdr_split_dh_mgpu(*refs):
        _dh_kernel(*refs, C=C, Kp=Kp, N=N, heads=heads, V=V, BV=BV)

    kernel = plgpu.kernel(
        gdr_split_dh_mgpu,
        out_type=(jax.ShapeDtypeStruct((BH, N * Kp, V), bf16),
                  jax.ShapeDtypeStruct((BH, Tp, V), bf16),
                  jax.ShapeDtypeStruct((BH, Kp, V), f32)),
        grid=(BH, V // BV), grid_names=("i", "j"),
        scratch_types=scratch,
        interpret=interpret,
    )
    return kernel(*ins)
