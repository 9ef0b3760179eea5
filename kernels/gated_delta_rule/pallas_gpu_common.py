"""Pieces shared by the Pallas GPU gated delta rule's kernels (`pallas_gpu_state.py` and
`pallas_gpu_split.py`, the state passes; `pallas_gpu.py`, their glue; `pallas_gpu_prep*.py`,
the chunk prep): padding and tile sizes, Triton compiler
parameters, the in-kernel dot at each precision, lax.dot_general contraction dims, and the
launch configuration (`kernel_config`) with what each kernel takes from it."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def _next_pow2(n: int) -> int:
    return 1 << (max(int(n), 1) - 1).bit_length()


def _prep_v(V: int, block_d: int) -> int:
    """V as the Pallas preps take it: zero-padded to a multiple of their V tile (a power of two,
    at most block_d), not to a power of two: they walk V tile by tile, so V = 192 is three
    tiles of 64 (until the ninth session it was padded to 256, four)."""
    tile = min(block_d, max(16, _next_pow2(V)))
    return -(-V // tile) * tile


def _v_tile(V: int, block_v: int) -> int:
    return min(block_v, V & -V)  # largest power of two dividing V, at most block_v


def _specs(Tp, Kp, C, N, BV):
    """Whole-sequence blocks of the sequential state-pass kernels, grid (BH, NV): w, kd, qd
    [BH, Tp, Kp]; u, o [BH, Tp, V] by V tile; aqk [BH, Tp, C]; gc [BH, Kp, N]; a state
    [BH, Kp, V] and the per-chunk states [BH, N*Kp, V] by V tile."""
    from jax.experimental import pallas as pl
    seq_k = pl.BlockSpec((None, Tp, Kp), lambda i, j: (i, 0, 0))
    seq_v = pl.BlockSpec((None, Tp, BV), lambda i, j: (i, 0, j))
    seq_c = pl.BlockSpec((None, Tp, C), lambda i, j: (i, 0, 0))
    gcs = pl.BlockSpec((None, Kp, N), lambda i, j: (i, 0, 0))
    state = pl.BlockSpec((None, Kp, BV), lambda i, j: (i, 0, j))
    states = pl.BlockSpec((None, N * Kp, BV), lambda i, j: (i, 0, j))
    return seq_k, seq_v, seq_c, gcs, state, states


def _triton_params(num_warps: int, num_stages: int):
    from jax.experimental.pallas import triton as plgpu
    return plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages)


def _dot_fn(precision: str, interpret: bool):
    """In-kernel 2-D dot with fp32 result; contracting dims given like lax.dot_general.
    "default": bf16 operands; "tf32": one TF32 pass; "highest": TF32x3. Interpret mode (CPU)
    has no TF32, so "tf32" and "highest" are exact fp32 there."""
    if precision == "default":
        def dot(a, b, dims):
            return lax.dot_general(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), (dims, ((), ())),
                                   preferred_element_type=jnp.float32)
    else:
        prec = (lax.Precision.HIGHEST if interpret
                else lax.DotAlgorithmPreset.TF32_TF32_F32_X3 if precision == "highest"
                else lax.DotAlgorithmPreset.TF32_TF32_F32)

        def dot(a, b, dims):
            return lax.dot_general(a, b, (dims, ((), ())), precision=prec,
                                   preferred_element_type=jnp.float32)
    return dot


_NN = ((1,), (0,))   # a @ b
_NT = ((1,), (1,))   # a @ b.T
_TN = ((0,), (0,))   # a.T @ b


def _sm_count(interpret):
    """Multiprocessors of the GPU the kernels will run on; None in interpret mode or where
    jax does not say."""
    if interpret:
        return None
    import jax
    return getattr(jax.devices()[0], "core_count", None)


def _default_block_v(precision, interpret, V, BH):
    """32 at "highest" (see the public docstring). At "default", 64, unless 32-wide V tiles
    still give no more sequential programs (B*HV x V tiles) than the GPU has multiprocessors:
    those programs walk every chunk, one per SM, so when B*HV is small narrower tiles put more
    SMs to work. On an H200 (132 SMs) 32 won at B1 T8192 H32 (128 programs; forward+backward
    2.380 against 2.677 ms, eighth session) and lost at the 7B layer, B1 H30 V=192 (180
    programs, +13%) and at B4 T4096 H16 (256 programs: the state forward 0.370 against 0.262
    ms), seventh session."""
    if precision == "highest":
        return 32
    sms = _sm_count(interpret)
    return 32 if BH is not None and sms and BH * -(-V // 32) <= sms else 64


# The Pallas prep kernels by their pallas_call names: what `prep_launch` may name.
PREP_KERNELS = ("gdr_prep_fwd", "gdr_prep_bwd", "gdr_prep_kkt", "gdr_prep_solve", "gdr_prep_wu",
                "gdr_prep_bwd_inverse", "gdr_prep_bwd_decay", "gdr_prep_bwd_qk")


def _prep_launch(prep_launch):
    """{kernel name: (num_warps, num_stages)} -> a sorted tuple of (name, warps, stages)."""
    items = []
    for name, launch in dict(prep_launch or {}).items():
        if name not in PREP_KERNELS:
            raise ValueError(f"prep_launch names {name!r}; the prep kernels are {PREP_KERNELS}")
        try:
            warps, stages = (int(x) for x in launch)
        except (TypeError, ValueError):
            raise ValueError(f"prep_launch[{name!r}] = {launch!r}; expected (num_warps, "
                             "num_stages)") from None
        if warps not in (1, 2, 4, 8, 16) or stages < 1:
            raise ValueError(f"prep_launch[{name!r}] = {launch!r}: num_warps a power of two "
                             "<= 16, num_stages >= 1")
        items.append((name, warps, stages))
    return tuple(sorted(items))


def kernel_config(precision, interpret, Kp, V, *, num_warps=None, num_warps_bwd=None,
                  num_warps_prep=4, num_stages=None, block_v=None, block_d=64, BH=None,
                  exact_decays=None, prep_launch=None, decays_in_xla=False):
    """The kernels' hashable launch configuration, defaults resolved (see the public function's
    docstring); also what benchmarks/gdn_kernel.py's per-kernel breakdown launches with.
    BH (batch x value heads) only informs the default block_v."""
    if block_v is None:
        block_v = _default_block_v(precision, interpret, V, BH)
    if exact_decays is None:  # outer differences only where bf16 operands dwarf their error
        exact_decays = precision != "default"
    if decays_in_xla and exact_decays:
        raise ValueError("decays_in_xla sums G and logF in XLA for the outer differences: it "
                         "needs exact_decays=False (the default at precision='default')")
    decays = "exact" if exact_decays else "xla" if decays_in_xla else "outer"
    for name, b in (("block_v", block_v), ("block_d", block_d)):
        if b < 16 or b & (b - 1):
            raise ValueError(f"{name} must be a power of two >= 16, got {b}")
    if num_warps is None:  # the state tile lives in registers: 64 fp32 a thread at 4 warps
        num_warps = 4 if Kp * _v_tile(V, block_v) <= 128 * 64 else 8
    return (("precision", precision), ("interpret", bool(interpret)), ("Kp", int(Kp)),
            ("num_warps", int(num_warps)),
            ("num_warps_bwd", None if num_warps_bwd is None else int(num_warps_bwd)),
            ("num_warps_prep", int(num_warps_prep)),
            ("num_stages", None if num_stages is None else int(num_stages)),
            ("block_v", int(block_v)), ("block_d", int(block_d)),
            ("decays", decays), ("prep_launch", _prep_launch(prep_launch)))


def _call_cfg(cfg, which):
    """cfg is a hashable tuple of (name, value); pick the launch parameters of the state pass's
    forward kernels ("fwd"), the fused backward ("bwd") or the split backward ("bwd_split")."""
    cfg = dict(cfg)
    warps_fwd, warps_bwd = cfg.pop("num_warps"), cfg.pop("num_warps_bwd")
    stages, Kp = cfg.pop("num_stages"), cfg.pop("Kp")
    for name in ("block_d", "num_warps_prep", "decays", "prep_launch"):  # the preps' own
        cfg.pop(name)
    if warps_bwd is None:  # measured: H200, three shapes, sweep_*.json of the seventh session
        warps_bwd = 8 if which == "bwd" else 4
    if stages is None:
        # Pipelined loads multiply the shared memory per chunk (fp32 "highest": ~110 KB of
        # operands a stage in the forward, ~180 KB in the backward; 228 KB on Hopper). With
        # bf16 operands and Kp <= 128, three stages fit every state-pass kernel and were the
        # fastest on an H200 (seventh session's sweep: the fused forward 0.262 ms at 3 stages
        # against 0.398 at 2, B4 T4096 H16 K=V=128); at Kp = 256 only the forward takes 2.
        if cfg["precision"] != "default":
            stages = 1
        elif Kp <= 128:
            stages = 3
        else:
            stages = 2 if which == "fwd" else 1
    return dict(cfg, num_warps=warps_fwd if which == "fwd" else warps_bwd, num_stages=stages)


def _operand_dtype(cfg):
    """Storage of w, u, kd, qd, aqk and the saved states: bf16 when the dots are bf16 anyway."""
    return jnp.bfloat16 if dict(cfg)["precision"] == "default" else jnp.float32


def _prep_cfg(cfg):
    cfg = dict(cfg)
    interpret = cfg["interpret"]
    # 4 warps, not 8: on an H200 at B4 T4096 H16 K=V=128 (benchmarks/results/
    # gdn_kernel_h200_v1.2_headline.json) the prep took 1.39 / 2.98 ms (fwd / bwd, "default")
    # at 4 against 1.61 / 4.58 at 8, and 3.02 / 6.74 against 5.47 / 10.91 at "highest";
    # 2 warps made the backward 3.8x slower (gdn_kernel_h200_v1.3_breakdown.json, timed with
    # a since-reverted backward that loaded T instead of recomputing it).
    # prep_launch overrides that per kernel (`_params_for`).
    params = None if interpret else {
        "": _triton_params(cfg["num_warps_prep"], cfg["num_stages"] or 1),
        **{name: _triton_params(w, s) for name, w, s in cfg["prep_launch"]}}
    return dict(block_d=cfg["block_d"], dot=_dot_fn(cfg["precision"], interpret),
                dot_inv=_dot_fn("highest" if cfg["precision"] == "highest" else "tf32",
                                interpret),
                interpret=interpret, decays=cfg["decays"],
                compiler_params=params)


def _params_for(compiler_params, name):
    """The Triton launch parameters of prep kernel `name`: compiler_params is None (interpret
    mode) or, as `_prep_cfg` makes it, {kernel name: params} with "" for the rest."""
    if compiler_params is None:
        return None
    return compiler_params.get(name, compiler_params[""])
