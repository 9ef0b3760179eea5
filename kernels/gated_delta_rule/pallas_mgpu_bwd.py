"""Pallas Mosaic GPU backward of the chunked gated delta rule's state pass; see the module
docstring of `pallas_mgpu.py` (math, layouts, shared memory, status)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from kernels.gated_delta_rule.pallas_mgpu_common import (BV, _BF16_TR, _F32_TR, _check_shapes,
                                                       copy_chunk_operands, load_state,
                                                       store_state)


def _bwd_kernel(w_g, u_g, kd_g, gct_g, qd_g, aqk_g, st_g, do_g, dsf_g,
                du_g, dw_g, dkd_g, dgc_g, dqd_g, daqk_g, ds0_g,
                w_buf, kd_buf, qd_buf, u_buf, aqk_buf, gc_buf, s_buf, do_buf,
                ds_smem, d_smem, ndd_smem, k_out, c_out, gc_out, sio_smem, bars, sbar,
                *, C, Kp, N, NS):
    """Reverse walk with dS [Kp, BV] fp32 in registers; NS input slots (2: the loads of the
    next chunk overlap this one; 1 when two do not fit in SMEM). Output staging buffers are
    reused after waiting for every earlier TMA store to have read them (simple, serialising)."""
    i = lax.axis_index("i")
    j = lax.axis_index("j")
    cols = pl.ds(j * BV, BV)
    f32, bf16 = jnp.float32, jnp.bfloat16

    def fetch(n, slot):  # the forward's six operands, then S_n and the dO tile
        bar = bars.at[slot]
        copy_chunk_operands((w_g, kd_g, qd_g, u_g, aqk_g, gct_g),
                            (w_buf, kd_buf, qd_buf, u_buf, aqk_buf, gc_buf),
                            i=i, n=n, C=C, cols=cols, slot=slot, bar=bar)
        plgpu.copy_gmem_to_smem(st_g.at[i, pl.ds(n * Kp, Kp), cols], s_buf.at[slot], bar)
        plgpu.copy_gmem_to_smem(do_g.at[i, pl.ds(n * C, C), cols], do_buf.at[slot], bar)

    def store(x, staging, dst):
        plgpu.wait_smem_to_gmem(0, wait_read_only=True)  # earlier stores have left staging
        staging[...] = x
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(staging, dst)
        plgpu.commit_smem_to_gmem_group()

    def product(shape, *operands):
        def mm(acc):
            for a, b in operands:
                plgpu.wgmma(acc, a, b)
            plgpu.wgmma_wait(0)
            return acc[...]
        return pl.run_scoped(mm, plgpu.ACC(shape, f32))

    fetch(N - 1, 0)
    ds_init = load_state(dsf_g.at[i, :, cols], sio_smem, sbar)

    def step(k, dS):  # dS = dL/dS_{n+1}
        n = N - 1 - k
        slot = k % NS
        if NS == 2:
            @pl.when(k + 1 < N)
            def _():
                fetch(n - 1, 1 - slot)

        plgpu.barrier_wait(bars.at[slot])
        w_s, kd_s, qd_s, u_s = w_buf.at[slot], kd_buf.at[slot], qd_buf.at[slot], u_buf.at[slot]
        aqk_s, s_s, do_s = aqk_buf.at[slot], s_buf.at[slot], do_buf.at[slot]
        # Register reads of the slot first, before the fences below (see the forward's gc).
        gc = plgpu.load(gc_buf.at[slot], layout=plgpu.Layout.WGMMA.reduce(1))  # [Kp]
        S = plgpu.load(s_s, layout=plgpu.Layout.WGMMA).astype(f32)
        u = plgpu.load(u_s, layout=plgpu.Layout.WGMMA).astype(f32)
        dgc = jnp.sum(dS * S, axis=1)

        ds_smem[...] = dS.astype(bf16)
        plgpu.commit_smem()

        def mm(acc_ws, acc_dd):
            plgpu.wgmma(acc_ws, w_s, s_s)
            plgpu.wgmma(acc_dd, kd_s, ds_smem)
            plgpu.wgmma(acc_dd, aqk_s.T, do_s)
            plgpu.wgmma_wait(0)
            return acc_ws[...], acc_dd[...]

        ws, dd = pl.run_scoped(mm, plgpu.ACC((C, BV), f32), plgpu.ACC((C, BV), f32))
        d_smem[...] = (u - ws).astype(bf16)  # delta
        ndd_smem[...] = (-dd).astype(bf16)  # -dd: the minus of dw and of the dS update
        rows = pl.ds(n * C, C)
        store(dd, c_out, du_g.at[i, rows, cols])
        store(dgc, gc_out, dgc_g.at[j, i, n])
        store(product((C, Kp), (ndd_smem, s_s.T)), k_out, dw_g.at[j, i, rows])
        store(product((C, Kp), (d_smem, ds_smem.T)), k_out, dkd_g.at[j, i, rows])
        store(product((C, Kp), (do_s, s_s.T)), k_out, dqd_g.at[j, i, rows])
        store(product((C, C), (do_s, d_smem.T)), c_out, daqk_g.at[j, i, rows])
        ds_new = product((Kp, BV), (qd_s.T, do_s), (w_s.T, ndd_smem))
        if NS == 1:  # every read of the slot is done (wgmmas waited, fenced by store's commit)
            @pl.when(k + 1 < N)
            def _():
                fetch(n - 1, 0)
        return lax.broadcast_in_dim(gc, (Kp, BV), [0]) * dS + ds_new

    ds_fin = lax.fori_loop(0, N, step, ds_init)
    plgpu.wait_smem_to_gmem(0, wait_read_only=True)
    store_state(ds_fin, sio_smem, ds0_g.at[i, :, cols])


def state_pass_bwd_mgpu(w, u, kd, gc, qd, aqk, states, do, dsf, *, interpret=None):
    """Backward of the state pass in Mosaic GPU, the semantics of `state_pass_bwd_call`
    (pallas_gpu.py) at precision="default": arguments in its layouts (states [BH, N*Kp, V]
    from `state_pass_fwd_mgpu(save_states=True)`, do [BH, Tp, V], dsf [BH, Kp, V]); returns
    (dw, du, dkd, dgc, dqd, daqk, ds0) in the order and dtypes of the primal arguments
    (w, u, kd, gc, qd, aqk, s0), ds0 fp32. The key-side cotangents are fp32 partials per V
    tile, summed in XLA. wgmma operands are bf16 (w, u, kd, qd, aqk, states, do cast in XLA;
    dS, delta, dd rounded when staged in SMEM), accumulation and dS fp32."""
    BH, Tp, Kp, V, C, N = _check_shapes(w, u, kd, gc, qd, aqk, states=states, do=do, dsf=dsf)
    NV = V // BV
    bf16, f32 = jnp.bfloat16, jnp.float32
    ins = [x.astype(bf16) for x in (w, u, kd)] + [jnp.swapaxes(gc.astype(f32), 1, 2)]
    ins += [x.astype(bf16) for x in (qd, aqk, states, do)] + [dsf.astype(f32)]
    # Two input slots need 2 x 88.5 KB at Kp = 128 besides ~112 KB of staging: one slot there.
    NS = 2 if Kp == 64 else 1
    scratch = [
        plgpu.SMEM((NS, C, Kp), bf16, transforms=_BF16_TR),  # w
        plgpu.SMEM((NS, C, Kp), bf16, transforms=_BF16_TR),  # kd
        plgpu.SMEM((NS, C, Kp), bf16, transforms=_BF16_TR),  # qd
        plgpu.SMEM((NS, C, BV), bf16, transforms=_BF16_TR),  # u tile
        plgpu.SMEM((NS, C, C), bf16, transforms=_BF16_TR),   # aqk
        plgpu.SMEM((NS, Kp), f32),                            # gc
        plgpu.SMEM((NS, Kp, BV), bf16, transforms=_BF16_TR),  # S_n (saved state) tile
        plgpu.SMEM((NS, C, BV), bf16, transforms=_BF16_TR),  # dO tile
        plgpu.SMEM((Kp, BV), bf16, transforms=_BF16_TR),     # bf16(dS)
        plgpu.SMEM((C, BV), bf16, transforms=_BF16_TR),      # bf16(delta)
        plgpu.SMEM((C, BV), bf16, transforms=_BF16_TR),      # bf16(-dd)
        plgpu.SMEM((C, Kp), f32, transforms=_F32_TR),        # dw, dkd, dqd staging
        plgpu.SMEM((C, BV), f32, transforms=_F32_TR),        # du, daqk staging (BV = C)
        plgpu.SMEM((Kp,), f32),                               # dgc staging
        plgpu.SMEM((Kp, BV), f32, transforms=_F32_TR),       # dS in/out staging
        plgpu.Barrier(num_arrivals=8, num_barriers=NS),       # one per slot, eight TMA copies
        plgpu.Barrier(num_arrivals=1),                        # dsf load
    ]
    part = lambda *shape: jax.ShapeDtypeStruct((NV, BH) + shape, f32)

    def gdr_state_pass_bwd_mgpu(*refs):
        _bwd_kernel(*refs, C=C, Kp=Kp, N=N, NS=NS)

    kernel = plgpu.kernel(
        gdr_state_pass_bwd_mgpu,
        out_type=(jax.ShapeDtypeStruct((BH, Tp, V), f32), part(Tp, Kp), part(Tp, Kp),
                  part(N, Kp), part(Tp, Kp), part(Tp, C), jax.ShapeDtypeStruct((BH, Kp, V), f32)),
        grid=(BH, NV), grid_names=("i", "j"),
        scratch_types=scratch,
        interpret=interpret,
    )
    du, dw, dkd, dgc, dqd, daqk, ds0 = kernel(*ins)
    s = lambda x, like: jnp.sum(x, axis=0).astype(like.dtype)
    return (s(dw, w), du.astype(u.dtype), s(dkd, kd), jnp.swapaxes(s(dgc, gc), 1, 2),
            s(dqd, qd), s(daqk, aqk), ds0)
