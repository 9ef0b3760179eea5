"""Plain-jnp helpers of the Pallas GPU gated delta rule, on CPU without interpret mode: the prep
kernels' in-tile (I + A)^-1 and the launch configuration's default V tile."""

import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from kernels.gated_delta_rule import pallas_gpu_common as cm
from kernels.gated_delta_rule.pallas_gpu_prep import _unit_lower_inverse


@pytest.mark.parametrize("C", [16, 64])
def test_prep_unit_lower_inverse_matches_numpy(C):
    """The prep kernels' (I + A)^-1 (plain jnp on [C, C] tiles, so testable outside a kernel),
    whose first level is formed without products, against numpy's inverse."""
    A = np.tril(np.random.default_rng(C).uniform(-1, 1, (C, C)), -1) / 4
    row = lax.broadcasted_iota(jnp.int32, (C, C), 0)
    col = lax.broadcasted_iota(jnp.int32, (C, C), 1)
    got = _unit_lower_inverse(jnp.asarray(A, jnp.float32), row, col, C,
                              cm._dot_fn("highest", interpret=True))
    np.testing.assert_allclose(got, np.linalg.inv(np.eye(C) + A), rtol=1e-5, atol=1e-6)


def test_default_block_v_narrows_only_when_the_programs_still_fit_the_sms(monkeypatch):
    """At "default", V tiles of 32 where B*HV x V/32 sequential programs fit the SMs, else 64
    (132 SMs, an H100's or H200's: the benchmark's shapes); 32 at "highest"; 64 where the SM
    count is unknown (interpret mode)."""
    monkeypatch.setattr(cm, "_sm_count", lambda interpret: None if interpret else 132)
    bv = lambda BH, V, precision="default", interpret=False: dict(cm.kernel_config(
        precision, interpret, 128, V, BH=BH))["block_v"]
    assert bv(32, 128) == 32            # B1 T8192 H32: 128 programs
    assert bv(30, 192) == 64            # the 7B layer: 180 programs at 32
    assert bv(64, 128) == 64            # B4 T4096 H16 and B8 T2048 H8
    assert bv(32, 128, interpret=True) == 64 and bv(64, 128, "highest") == 32


def test_prep_v_pads_to_a_multiple_of_the_tile_not_a_power_of_two():
    from kernels.gated_delta_rule.pallas_gpu_common import _prep_v
    assert [_prep_v(V, 64) for V in (24, 48, 64, 96, 128, 192, 256)] == [32, 64, 64, 128, 128,
                                                                          192, 256]
    assert _prep_v(48, 16) == 48 and _prep_v(40, 16) == 48


def test_auto_state_pass_is_mosaic_only_where_its_kernels_take_the_shape():
    from kernels.gated_delta_rule.pallas_gpu_auto import auto_state_pass
    auto = lambda C=64, Kp=128, V=128, precision="default", interpret=False: auto_state_pass(
        precision, interpret, C, Kp, V)
    assert auto() == auto(Kp=64) == "mosaic_dqk"
    assert auto(V=192) == "mosaic_dqk"               # the 7B layer
    assert auto(V=256) == "mosaic_dh"                # the dqk kernel's V in SMEM: <= 192
    assert auto(Kp=256) == "splitbwd"                # K > 128
    assert auto(Kp=32) == "splitbwd"                 # K <= 32: Mosaic takes Kp 64 or 128
    assert auto(C=32) == "splitbwd"                  # its wgmmas are 64 rows
    assert auto(V=96) == "splitbwd"                  # V not in 64-wide tiles
    assert auto(precision="highest") == "splitbwd"   # bf16 wgmma only
    assert auto(interpret=True) == "splitbwd"        # interpret mode


def test_auto_caller_layout_goes_with_the_mosaic_prep():
    from kernels.gated_delta_rule.pallas_gpu_auto import auto_caller_layout
    assert auto_caller_layout("mosaic")
    assert not any(map(auto_caller_layout, ("pallas_splitbwd", "pallas_split", "pallas", "xla")))


def test_auto_prep_is_mosaic_only_where_its_kernel_takes_the_shape():
    from kernels.gated_delta_rule.pallas_gpu_auto import auto_prep
    auto = lambda C=64, Kp=128, Vp=128, precision="default", interpret=False, decays="outer": (
        auto_prep(precision, interpret, decays, C, Kp, Vp))
    assert auto() == "mosaic"
    assert auto(Vp=192) == auto(decays="xla") == "mosaic"   # the 7B layer; XLA's decays
    assert auto(Vp=256) == auto(Kp=64) == "mosaic"
    assert auto(Vp=320) == "pallas_splitbwd"                # past its shared memory
    assert auto(Vp=96) == "pallas_splitbwd"                 # V not in 64-wide tiles
    assert auto(Kp=256) == auto(Kp=32) == "pallas_splitbwd"
    assert auto(C=32) == "pallas_splitbwd"
    assert auto(decays="exact") == "pallas_splitbwd"        # masked-scan decays: Triton only
    assert auto(precision="highest") == "pallas_splitbwd"   # bf16 wgmma only
    assert auto(interpret=True) == "pallas_splitbwd"        # interpret mode


def test_prep_launch_sets_one_kernels_launch_and_names_bad_input():
    cfg = cm.kernel_config("default", False, 128, 128,
                           prep_launch={"gdr_prep_bwd_decay": (8, 3)})
    params = cm._prep_cfg(cfg)["compiler_params"]
    decay = cm._params_for(params, "gdr_prep_bwd_decay")
    qk = cm._params_for(params, "gdr_prep_bwd_qk")
    assert (decay.num_warps, decay.num_stages) == (8, 3)
    assert (qk.num_warps, qk.num_stages) == (4, 1)   # num_warps_prep, num_stages or 1
    assert cm._params_for(cm._prep_cfg(cm.kernel_config(
        "default", True, 128, 128, prep_launch={"gdr_prep_fwd": (8, 1)}))["compiler_params"],
        "gdr_prep_fwd") is None                      # interpret mode launches nothing
    assert hash(cfg)  # the custom_vjp's static argument
    with pytest.raises(ValueError, match="gdr_prep_decay"):
        cm.kernel_config("default", False, 128, 128, prep_launch={"gdr_prep_decay": (8, 3)})
    with pytest.raises(ValueError, match="expected \\(num_warps, num_stages\\)"):
        cm.kernel_config("default", False, 128, 128, prep_launch={"gdr_prep_fwd": 8})
    with pytest.raises(ValueError, match="power of two"):
        cm.kernel_config("default", False, 128, 128, prep_launch={"gdr_prep_fwd": (6, 1)})
