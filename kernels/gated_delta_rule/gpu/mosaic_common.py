"""What the Mosaic GPU (TMA + wgmma) kernels share: tile sizes and the shapes they take, SMEM
tile transforms, shape checks, the TMA loads of a chunk's operands, the carried state tile's
way in and out, a tile's way out, warpgroups meeting, a program's last wait, and issuing
wgmma products."""

from __future__ import annotations

import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

BV = 64  # V tile per program: the N of every wgmma and the width of o tiles
C_SUPPORTED = 64  # chunk size: the M of the C-row wgmmas (delta, o) is 64
KP_SUPPORTED = (64, 128)


def takes_shape(C: int, Kp: int, V: int) -> bool:
    """Whether the state-pass kernels (`state_mosaic.state_fwd`, `state_mosaic_bwd.dh`) take
    chunk size C, padded key dim Kp and value dim V (what `check_shapes` demands)."""
    return C == C_SUPPORTED and Kp in KP_SUPPORTED and V % BV == 0


# SMEM tile transforms for TMA + wgmma operands: 128-byte rows, swizzled. A bf16 row of 64
# elements and an fp32 row of 32 elements are 128 bytes.
BF16_TR = (plgpu.TilingTransform((8, 64)), plgpu.SwizzleTransform(128))
F32_TR = (plgpu.TilingTransform((8, 32)), plgpu.SwizzleTransform(128))
# V = 96 as one tile (the ladder models' value heads): a 192-byte row is three 64-byte swizzle
# tiles of 32 bf16, and a wgmma's operands share one swizzle, so every bf16 operand of a kernel
# that takes such a tile takes the 64-byte swizzle.
BF16_TR64 = (plgpu.TilingTransform((8, 32)), plgpu.SwizzleTransform(64))
BV_WHOLE_96 = 96  # the state passes' V tile for V = 96 at Kp = 64: one tile a head


def bf16_transforms(width: int):
    """The SMEM transforms of a kernel's bf16 operands when its V-side tiles are `width` wide:
    128-byte swizzle, or 64-byte where the width is not a multiple of 64 elements."""
    return BF16_TR if width % 64 == 0 else BF16_TR64


def expect_shapes(want: dict, **arrays):
    """Raises ValueError naming the first of `arrays` whose shape is not want[name]."""
    for name, x in arrays.items():
        if x.shape != want[name]:
            raise ValueError(f"{name}: expected shape {want[name]}, got {x.shape}")


def check_shapes(w, u, kd, gc, qd, aqk, *, block_v=BV, **state_shaped):
    """Validates the state-pass layouts (`state_mosaic.state_fwd`) for V tiles of block_v: BV,
    or BV_WHOLE_96 (V = 96 at Kp = 64, one tile; u may then be the prep's 128-wide u, read in
    its first 96 columns). Returns (BH, Tp, Kp, V, C, N)."""
    BH, Tp, Kp = w.shape
    C, N = aqk.shape[-1], gc.shape[-1]
    if C != C_SUPPORTED or Tp != N * C:
        raise ValueError(f"need chunk size {C_SUPPORTED} and Tp = N * C, got C={C}, Tp={Tp}, N={N}")
    if Kp not in KP_SUPPORTED:
        raise ValueError(f"Kp must be one of {KP_SUPPORTED}, got {Kp}")
    if block_v == BV_WHOLE_96:
        V, u_width = 96, u.shape[-1]
        if Kp != 64 or u_width not in (96, 128):
            raise ValueError(f"block_v={BV_WHOLE_96} takes V = 96 at Kp = 64 (u 96 or 128 "
                             f"wide), got Kp={Kp}, u {u.shape}")
    elif block_v == BV:
        V = u_width = u.shape[-1]
        if V % BV:
            raise ValueError(f"V must be a multiple of {BV}, got {V}")
    else:
        raise ValueError(f"block_v must be {BV} or {BV_WHOLE_96}, got {block_v}")
    shapes = dict(u=(BH, Tp, u_width), kd=(BH, Tp, Kp), qd=(BH, Tp, Kp), aqk=(BH, Tp, C),
                  gc=(BH, Kp, N), s0=(BH, Kp, V), states=(BH, N * Kp, V), do=(BH, Tp, V),
                  dsf=(BH, Kp, V))
    expect_shapes(shapes, u=u, kd=kd, qd=qd, aqk=aqk, gc=gc, **state_shaped)
    return BH, Tp, Kp, V, C, N


def copy_chunk_operands(g_refs, bufs, *, i, n, C, cols, slot, bar):
    """TMA loads of chunk n's operands for program (i, V tile `cols`) into SMEM slot `slot`,
    all arriving on `bar`: w, kd, qd [C, Kp], the V tile of u [C, BV], aqk [C, C] and the
    chunk-major gc [Kp]. g_refs and bufs list them in that order (six copies; five with u_g
    None, for a kernel that does not read u)."""
    w_g, kd_g, qd_g, u_g, aqk_g, gct_g = g_refs
    w_buf, kd_buf, qd_buf, u_buf, aqk_buf, gc_buf = bufs
    rows = pl.ds(n * C, C)
    plgpu.copy_gmem_to_smem(w_g.at[i, rows], w_buf.at[slot], bar)
    plgpu.copy_gmem_to_smem(kd_g.at[i, rows], kd_buf.at[slot], bar)
    plgpu.copy_gmem_to_smem(qd_g.at[i, rows], qd_buf.at[slot], bar)
    if u_g is not None:
        plgpu.copy_gmem_to_smem(u_g.at[i, rows, cols], u_buf.at[slot], bar)
    plgpu.copy_gmem_to_smem(aqk_g.at[i, rows], aqk_buf.at[slot], bar)
    plgpu.copy_gmem_to_smem(gct_g.at[i, n], gc_buf.at[slot], bar)


def wgmma_products(pairs, shapes):
    """lhs @ rhs for each (lhs, rhs) pair of SMEM refs (or transposed views), each into a fresh
    fp32 accumulator of its shape, issued together and waited for; returns the values."""
    def run(*accs):
        for acc, (lhs, rhs) in zip(accs, pairs):
            plgpu.wgmma(acc, lhs, rhs)
        plgpu.wgmma_wait(0)
        return tuple(acc[...] for acc in accs)
    return pl.run_scoped(run, *(plgpu.ACC(s, jnp.float32) for s in shapes))


def store_tile(tile_s, x, dst_g=None):
    """x -> SMEM tile (in its dtype) -> GMEM ref dst_g by TMA, not waited for (dst_g None: SMEM
    only). Fenced before (every earlier read of the tile, registers or wgmma, is done) and
    after (the tile is visible to TMA and wgmma)."""
    plgpu.commit_smem()
    tile_s[...] = x.astype(tile_s.dtype)
    plgpu.commit_smem()
    if dst_g is not None:
        plgpu.copy_smem_to_gmem(tile_s, dst_g)
        plgpu.commit_smem_to_gmem_group()


def meet(bar):
    """Every warpgroup of the program arrives on bar (one arrival each) and waits for the
    others: what each did before is done (and its SMEM writes fenced by the caller)."""
    plgpu.barrier_arrive(bar)
    plgpu.barrier_wait(bar)


def finish_stores():
    """A program's last wait: its TMA stores must be done reading SMEM before it exits (the
    SM gives that SMEM to the next program). Their writes to GMEM need not be: the kernel's
    end makes them visible. Waiting for the writes as well would keep the program, and the SM
    it holds, idle for each store's round trip to memory."""
    plgpu.wait_smem_to_gmem(0, wait_read_only=True)


def load_state(src_g, staging, bar):
    """A [Kp, BV] fp32 state tile GMEM -> SMEM (TMA) -> registers in the wgmma accumulator
    layout: direct GMEM <-> register transfers of a wgmma-layout tile do not lower."""
    plgpu.copy_gmem_to_smem(src_g, staging, bar)
    plgpu.barrier_wait(bar)
    return plgpu.load(staging, layout=plgpu.Layout.WGMMA)


def store_state(x, staging, dst_g):
    """The kernel's last store: x registers -> SMEM -> GMEM (TMA), waited for."""
    staging[...] = x
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(staging, dst_g)
    finish_stores()
