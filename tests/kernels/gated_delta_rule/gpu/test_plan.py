"""The GPU kernels' choice table (`config.plan`: Mosaic GPU where a kernel takes the shape, else
Triton), the Triton launch defaults, the head dims the op takes, and forward+backward lowered
for CUDA on a host without a GPU (which kernels run, as custom calls)."""

import jax
import jax.numpy as jnp
import pytest

from kernels.gated_delta_rule.gpu import config as cf
from kernels.gated_delta_rule.gpu.chunk import chunk_gated_delta_rule_pallas_gpu, supports
from kernels.gated_delta_rule.gpu.config import KernelConfig


def _plan(precision="default", C=64, Kp=128, V=128, B=4, HV=16, interpret=False,
          bf16_qkv=True, **cfg):
    return cf.plan(precision, interpret, KernelConfig(**cfg), C=C, Kp=Kp, V=V, B=B, HV=HV,
                   bf16_qkv=bf16_qkv)


def test_plan_runs_mosaic_where_each_kernel_takes_the_shape():
    kernels = lambda p: (p.prep_fwd, p.state, p.dqk, p.prep_bwd, p.caller_layout,
                         p.o_caller_layout, p.decays)
    mosaic = ("mosaic", "mosaic", "fused", "fused", True, True, "xla")
    assert kernels(_plan()) == kernels(_plan(Kp=64)) == mosaic   # B4 T4096 H16 and the like
    assert kernels(_plan(V=192)) == mosaic                       # the 7B layer (K 96 -> 128)
    assert kernels(_plan(interpret=True)) == mosaic              # the interpreters run it too
    # V = 256: the fused dqk and prep backward holds all of V in shared memory (<= 192): the
    # Triton dqk (dO in the caller's layout), then the Mosaic prep backward
    assert kernels(_plan(V=256)) == ("mosaic", "mosaic", "triton", "mosaic", True, True, "xla")
    # the ladder models (K 48 -> 64, V 96 -> 128 for the prep): every kernel in Mosaic GPU, the
    # state passes and the fused gradients at V = 96 (one tile a head); with fp32 q, k, v (no
    # fused gradients) or K 128 they take the prep's padded width
    assert kernels(_plan(Kp=64, V=96)) == mosaic and _plan(Kp=64, V=96).state_v == 96
    assert _plan(Kp=64, V=96, bf16_qkv=False).state_v == 128 and _plan(V=96).state_v == 128
    assert _plan().state_v == 128 and _plan(V=192).state_v == 192
    assert _plan(precision="highest", V=96).state_v == 96                # Triton: no padding
    # fp32 q, k, v: the Mosaic prep backward writes bf16 cotangents only
    assert kernels(_plan(bf16_qkv=False)) == mosaic[:2] + ("triton", "triton") + mosaic[4:]
    triton = ("triton", "triton", "triton", "triton", False, False, "outer")
    assert kernels(_plan(Kp=256)) == kernels(_plan(Kp=32)) == triton   # K > 128, K <= 32
    assert kernels(_plan(C=32)) == triton                                # 64-row wgmmas
    assert kernels(_plan(V=320)) == ("triton", "mosaic", "triton", "triton", False, False,
                                     "outer")
    exact = triton[:-1] + ("exact",)
    assert kernels(_plan(precision="highest")) == exact                  # bf16 wgmma only


def test_plan_scales_q_in_the_mosaic_preps_only_where_both_run():
    """q's scale goes into the kernels where both preps are Mosaic GPU and it is a number when
    tracing; otherwise XLA scales q (None)."""
    plan = lambda **kw: cf.plan("default", False, KernelConfig(), C=64, Kp=128, B=4, HV=16,
                                **{"bf16_qkv": True, "V": 128, **kw})
    assert plan(q_scale=0.125).q_scale == 0.125
    assert plan(q_scale=0.125, V=256).q_scale == 0.125       # the unfused Mosaic prep backward
    assert plan(q_scale=None).q_scale is None                # a traced scale
    assert plan(q_scale=0.125, bf16_qkv=False).q_scale is None  # the Triton prep backward
    assert cf.plan("highest", False, KernelConfig(), C=64, Kp=128, V=128, B=4, HV=16,
                   bf16_qkv=True, q_scale=0.125).q_scale is None


def test_plan_launch_defaults(monkeypatch):
    """At "default", V tiles of 32 where B*HV x V/32 sequential programs fit the SMs, else 64
    (132 SMs: an H100's or H200's); 32 at "highest"; 64 where the SM count is unknown
    (interpret mode). 8 warps for a state tile above 128 x 64; 3 stages at Kp <= 128."""
    monkeypatch.setattr(cf, "_sm_count", lambda interpret: None if interpret else 132)
    assert _plan(B=1, HV=32).block_v == 32             # B1 T8192 H32: 128 programs
    assert _plan(B=1, HV=30, V=192).block_v == 64      # the 7B layer: 180 at 32
    assert _plan(B=4, HV=16).block_v == 64             # B4 T4096 H16 and B8 T2048 H8
    assert _plan(B=1, HV=32, interpret=True).block_v == 64
    assert _plan(precision="highest").block_v == 32
    assert _plan(block_v=16).block_v == 16
    p = _plan(Kp=256, V=128, B=4, HV=16)  # a [256, 64] state tile
    assert (p.warps_fwd, p.stages_fwd, p.stages_bwd, p.stages_prep) == (8, 2, 1, 1)
    p = _plan(B=4, HV=16)
    assert (p.warps_fwd, p.warps_bwd, p.warps_prep, p.stages_fwd, p.stages_prep) == (
        4, 4, 4, 3, 1)
    assert _plan(precision="highest").stages_fwd == 1
    assert _plan(num_stages=2).stages_prep == 2 and _plan(num_warps=8).warps_fwd == 8


def test_prep_v_pads_to_a_multiple_of_the_tile_not_a_power_of_two():
    assert [cf.prep_v(V, 64) for V in (24, 48, 64, 96, 128, 192, 256)] == [32, 64, 64, 128, 128,
                                                                            192, 256]
    assert cf.prep_v(48, 16) == 48 and cf.prep_v(40, 16) == 48


def test_supports_names_what_it_does_not_take():
    assert supports((96, 192), 64) is None and supports(None, 16) is None
    assert "K <= 256" in supports((512, 64), 64) and "multiple of 16" in supports((64, 40), 64)
    assert "power of two" in supports((64, 64), 48)


# Pallas calls in forward+backward for B1 T100 H1 HV2 K96 V192 (Kp 128): the prep forward,
# state forward, dh, dqk and the prep backward (three kernels) in Triton; in Mosaic GPU at
# "default" where they take the shape (chunk 64: all, dqk and the prep backward one kernel).
@pytest.mark.parametrize("precision, C, n_triton, n_mosaic", [
    ("highest", 64, 7, 0), ("default", 64, 0, 4), ("default", 32, 7, 0)])
def test_kernels_lower_for_cuda_without_a_gpu(triton_lowers_for_h100, precision, C, n_triton,
                                              n_mosaic):
    """Forward and backward lowered for CUDA on this host, the Triton kernels through the
    Triton-IR stage (not PTX), the Mosaic ones to their custom call: catches unsupported ops
    and shapes in CI. Uses jax 0.11.2 internals (gpu_info)."""
    B, T, H, HV, K, V = 1, 100, 1, 2, 96, 192
    shapes = [(B, T, H, K), (B, T, H, K), (B, T, HV, V), (B, T, HV), (B, T, HV)]
    args = [jax.ShapeDtypeStruct(x, jnp.bfloat16) for x in shapes]
    args.append(jax.ShapeDtypeStruct((B, HV, K, V), jnp.float32))

    def loss(q, k, v, g, b, s0):
        o, S = chunk_gated_delta_rule_pallas_gpu(q, k, v, g, b, initial_state=s0,
                                                 precision=precision, chunk_size=C)
        return jnp.sum(o.astype(jnp.float32)) + jnp.sum(S)

    text = jax.jit(jax.grad(loss, argnums=range(6))).trace(*args).lower(
        lowering_platforms=("cuda",)).as_text()
    assert text.count("__gpu$xla.gpu.triton") == n_triton
    assert text.count("stablehlo.custom_call @mosaic_gpu") == n_mosaic


# ------------------------------------------------------------------------------------------
