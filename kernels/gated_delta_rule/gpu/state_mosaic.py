"""Pallas Mosaic GPU (Hopper: TMA + wgmma) kernel of the forward state pass.

Why this exists
    The forward state pass walks the chunks one after another, one program per (batch x
    value head, V tile): its time is the latency of each step's dependent products. On an H200
    at B4 T4096 H16 K=V=128 this kernel took 0.178 ms against 0.258 for the Triton one
    (`state_triton.state_fwd`), and 0.258 against 0.274 saving the states and delta
    (experiments/LOG.md). It runs wherever it takes the shape (`takes_shape`).

What it computes (the math of `state_triton._fwd_kernel`). One program (one warpgroup) per
(batch x value head i, V tile j of BV = 64 columns) walks the N chunks of C = 64 rows with
the state S [Kp, BV] fp32 in registers (wgmma accumulator layout):
    delta = u_n - w_n @ S
    o_n   = qd_n @ S + aqk_n @ delta
    S     = gc_n * S + kd_n^T @ delta          (gc_n [Kp]: exp(G_C), one decay per state row)

The ladder's heads (Kp 64, V 96): `block_v=96` runs one program a head over the unpadded V,
reading the first 96 columns of the prep's 128-wide u, with every bf16 operand on the 64-byte
swizzle (`mosaic_common.BF16_TR64`); `dh` takes the same.

Numerics
    Those of the Triton kernel at precision="default": every matmul operand is bf16 (w, kd,
    qd, u, aqk are cast to bf16 in XLA; S and delta are rounded to bf16 when they are stored
    to SMEM as wgmma B operands), accumulation is fp32 (wgmma), the carried state and the decay
    multiply are fp32. o is returned in o_dtype, the final state in fp32.

Per chunk n the program
    1. waits on the barrier of SMEM slot n % 2, after issuing the TMA loads of chunk n + 1 into
       the other slot (double buffering: w, kd, qd [C, Kp], u [C, BV], aqk [C, C] bf16 and
       gc [Kp] f32, six copies on one barrier);
    2. stores bf16(S) to SMEM, issues wgmma w @ S and qd @ S into two accumulators, waits;
    3. delta = u - w S in registers, stores bf16(delta) to SMEM, issues wgmma aqk @ delta
       (accumulating onto qd S) and kd^T @ delta (the transposed SMEM view of kd), waits;
    4. stages o_n in SMEM and TMA-stores it (waiting first for the previous store to have left
       SMEM), and sets S = gc * S + kd^T delta.
The slot refilled at step 1 of chunk n + 1 is the one chunk n - 1 read; all wgmmas reading it
were waited on in chunk n - 1, so no "consumed" barrier is needed with a single warpgroup;
its register reads (u, gc) precede a `commit_smem` (proxy fence) in chunk n - 1, as the TMA
refill (async proxy) requires: the interpreter's race detector (`InterpretGPUParams(
detect_races=True)`) flags gc read after the last fence of the step.

With save_states, step 2 also TMA-stores the bf16 S tile to `states` (one bulk-store group
issued before the wgmmas), and with save_delta step 3 the bf16 delta tile (a group after it);
s_smem, d_smem and o_smem are each rewritten only after the group that reads them has left SMEM
(`wait_smem_to_gmem(k)`, k = the groups issued since). Neither adds SMEM.

Constraints
    Shared memory: 2 slots x (3 C Kp + C BV + C C) bf16 + 2 Kp f32, plus bf16 S and delta, o
    staging and fp32 S in/out staging: 205,848 bytes at Kp = 128, 132,120 at Kp = 64 (the
    lowered kernel's `dynamic_shared_memory_size`, from MOSAIC_GPU_DUMP_MLIR_PASSES=1
    MOSAIC_GPU_DUMP_TO=dir; 8 KB less with bf16 o; 227 KB per block on Hopper), so one
    128-thread block per SM. Hence C = 64, Kp in {64, 128} and V a multiple of 64
    (`mosaic_common.takes_shape`); Kp = 256 (K = 192, 256) would need a K-split of the state
    over two warpgroups or single buffering.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from kernels.gated_delta_rule.gpu import layout as lay
from kernels.gated_delta_rule.gpu.mosaic_common import (BV, F32_TR, bf16_transforms,
                                                        check_shapes,
                                                        copy_chunk_operands, load_state,
                                                        store_state, takes_shape)

__all__ = ["state_fwd", "takes_shape"]


def _kernel(w_g, u_g, kd_g, gct_g, qd_g, aqk_g, s0_g, o_g, sf_g, *refs, C, Kp, N, save_states,
            save_delta, heads, V, BV):
    states_g, refs = (refs[0], refs[1:]) if save_states else (None, refs)
    delta_g, refs = (refs[0], refs[1:]) if save_delta else (None, refs)
    (w_buf, kd_buf, qd_buf, u_buf, aqk_buf, gc_buf, s_smem, d_smem, o_smem, sio_smem,
     bars, sbar) = refs
    i = lax.axis_index("i")
    j = lax.axis_index("j")
    cols = pl.ds(j * BV, BV)
    f32, bf16 = jnp.float32, jnp.bfloat16

    def fetch(n, slot):
        copy_chunk_operands((w_g, kd_g, qd_g, u_g, aqk_g, gct_g),
                            (w_buf, kd_buf, qd_buf, u_buf, aqk_buf, gc_buf),
                            i=i, n=n, C=C, cols=cols, slot=slot, bar=bars.at[slot])

    fetch(0, 0)
    s_init = load_state(s0_g.at[i, :, cols], sio_smem, sbar)

    def step(n, S):
        slot = n % 2

        @pl.when(n + 1 < N)
        def _():
            fetch(n + 1, 1 - slot)

        plgpu.barrier_wait(bars.at[slot])
        w_s, kd_s, qd_s = w_buf.at[slot], kd_buf.at[slot], qd_buf.at[slot]
        u_s, aqk_s = u_buf.at[slot], aqk_buf.at[slot]
        # Read gc now, before the commit_smem (proxy fence) below: a generic-proxy read of a
        # slot must be fenced before the TMA (async proxy) refill of that slot issued at the
        # top of the next step (the interpreter's race detector flags it otherwise).
        gc = plgpu.load(gc_buf.at[slot], layout=plgpu.Layout.WGMMA.reduce(1))  # [Kp]

        # TMA store groups are issued per step in the order S_n (save_states), delta_n
        # (save_delta), o_n; each wait below lets the groups issued after the one whose SMEM
        # is about to be rewritten stay in flight. Here: S_{n-1}'s must have left s_smem.
        if save_states:
            plgpu.wait_smem_to_gmem(1 + save_delta, wait_read_only=True)
        s_smem[...] = S.astype(bf16)
        plgpu.commit_smem()
        if save_states:  # the chunk-entry state for the backward, overlapping the wgmmas
            plgpu.copy_smem_to_gmem(s_smem, states_g.at[i, pl.ds(n * Kp, Kp), cols])
            plgpu.commit_smem_to_gmem_group()

        def mm(acc_ws, acc_o, acc_s):
            plgpu.wgmma(acc_ws, w_s, s_smem)
            plgpu.wgmma(acc_o, qd_s, s_smem)
            plgpu.wgmma_wait(0)
            delta = u_s[...].astype(f32) - acc_ws[...]
            if save_delta:  # delta_{n-1}'s store has left d_smem (o_{n-1}, S_n may not have)
                plgpu.wait_smem_to_gmem(1 + save_states, wait_read_only=True)
            d_smem[...] = delta.astype(bf16)
            plgpu.commit_smem()
            if save_delta:  # bf16(delta), as the split backward reads it
                plgpu.copy_smem_to_gmem(d_smem, delta_g.at[i, pl.ds(n * C, C), cols])
                plgpu.commit_smem_to_gmem_group()
            plgpu.wgmma(acc_o, aqk_s, d_smem)
            plgpu.wgmma(acc_s, kd_s.T, d_smem)
            plgpu.wgmma_wait(0)
            return acc_o[...], acc_s[...]

        o, kd_delta = pl.run_scoped(mm, plgpu.ACC((C, BV), f32), plgpu.ACC((C, BV), f32),
                                    plgpu.ACC((Kp, BV), f32))
        # previous o tile has left o_smem (S_n's and delta_n's stores may still be in flight)
        plgpu.wait_smem_to_gmem(save_states + save_delta, wait_read_only=True)
        o_smem[...] = o.astype(o_smem.dtype)
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(o_smem, lay.tile(o_g, i, pl.ds(n * C, C), heads, V, j * BV, BV))
        plgpu.commit_smem_to_gmem_group()

        return lax.broadcast_in_dim(gc, (Kp, BV), [0]) * S + kd_delta

    s_fin = lax.fori_loop(0, N, step, s_init)
    store_state(s_fin, sio_smem, sf_g.at[i, :, cols])



def state_fwd(w, u, kd, gc, qd, aqk, s0, *, residuals=False, interpret=None,
              o_dtype=jnp.float32, heads=None, block_v=BV):
    """The forward state pass: w, kd, qd [BH, Tp, Kp]; u [BH, Tp, V]; aqk [BH, Tp, C]; gc
    [BH, Kp, N] (exp(G_C) repeated over Kp); s0 [BH, Kp, V]. Any float dtypes: w, u, kd, qd,
    aqk are cast to bf16, gc and s0 to fp32. Returns (o [BH, Tp, V] in o_dtype, fp32 or bf16;
    s_final [BH, Kp, V] fp32) and with residuals the chunk-entry states, bf16 [BH, N*Kp, V]
    (S_n in rows n*Kp:(n+1)*Kp), and delta = u - w S, bf16 [BH, Tp, V] (the bf16 tile the
    kernel stages as a wgmma operand anyway): what the backward reads. heads: o in the
    caller's layout [BH / heads, Tp, heads * V] instead (`layout.py`).
    `interpret`: None to compile for the GPU, or a `plgpu.InterpretGPUParams()` to run in the
    Mosaic GPU interpreter (on CPU)."""
    save_states = save_delta = bool(residuals)
    BV = block_v
    BH, Tp, Kp, V, C, N = check_shapes(w, u, kd, gc, qd, aqk, block_v=BV, s0=s0)
    tr = bf16_transforms(BV)
    bf16, f32 = jnp.bfloat16, jnp.float32
    o_dtype = jnp.dtype(o_dtype)
    if o_dtype not in (f32, bf16):
        raise ValueError(f"o_dtype must be float32 or bfloat16, got {o_dtype}")
    w, u, kd, qd, aqk = (x.astype(bf16) for x in (w, u, kd, qd, aqk))
    # gc chunk-major [BH, N, Kp] (a tiny XLA transpose): each chunk's Kp decays are then one
    # contiguous 1-D TMA box, loaded into SMEM with the chunk's other operands and read into
    # registers in the row layout of the wgmma accumulator (`Layout.WGMMA.reduce(1)`).
    gct = jnp.swapaxes(gc.astype(f32), 1, 2)
    s0 = s0.astype(f32)

    scratch = [
        plgpu.SMEM((2, C, Kp), bf16, transforms=tr),  # w, double-buffered
        plgpu.SMEM((2, C, Kp), bf16, transforms=tr),  # kd
        plgpu.SMEM((2, C, Kp), bf16, transforms=tr),  # qd
        plgpu.SMEM((2, C, BV), bf16, transforms=tr),  # u tile
        plgpu.SMEM((2, C, C), bf16, transforms=tr),   # aqk
        plgpu.SMEM((2, Kp), f32),                          # gc
        plgpu.SMEM((Kp, BV), bf16, transforms=tr),    # bf16(S): wgmma B operand
        plgpu.SMEM((C, BV), bf16, transforms=tr),     # bf16(delta): wgmma B operand
        plgpu.SMEM((C, BV), o_dtype, transforms=F32_TR if o_dtype == f32 else tr),  # o
        plgpu.SMEM((Kp, BV), f32, transforms=F32_TR),      # S in/out staging
        plgpu.Barrier(num_arrivals=6, num_barriers=2),     # one per slot, six TMA copies
        plgpu.Barrier(num_arrivals=1),                     # s0 load
    ]

    def gdr_state_pass_fwd_mgpu(*refs):
        _kernel(*refs, C=C, Kp=Kp, N=N, save_states=save_states, save_delta=save_delta,
                heads=heads, V=V, BV=BV)

    kernel = plgpu.kernel(
        gdr_state_pass_fwd_mgpu,
        out_type=(jax.ShapeDtypeStruct(lay.shape(BH, Tp, V, heads), o_dtype),
                  jax.ShapeDtypeStruct((BH, Kp, V), f32))
        + (jax.ShapeDtypeStruct((BH, N * Kp, V), bf16),) * save_states
        + (jax.ShapeDtypeStruct((BH, Tp, V), bf16),) * save_delta,
        grid=(BH, V // BV), grid_names=("i", "j"),
        scratch_types=scratch,
        interpret=interpret,
    )
    return kernel(w, u, kd, gct, qd, aqk, s0)
