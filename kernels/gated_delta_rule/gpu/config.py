"""What one GPU call runs: the choice of each kernel (`plan`, the one table of "Mosaic GPU where
it takes the shape, else Triton") and the launch of the Triton kernels (`KernelConfig`, the
knobs that benchmarks and tests set; None picks the default for the shape).

The table. Each kernel slot has a Mosaic GPU kernel (TMA + wgmma, bf16 operands only) and a
Triton one. At precision "default" a slot runs Mosaic GPU where its kernel takes the shape; at
"highest" (TF32x3 products) every slot runs Triton. Where they take the shape, the Mosaic
kernels were faster on an H200 at every benchmark shape (experiments/LOG.md; the kernel
modules' docstrings give the numbers):

    slot          Mosaic GPU kernel              takes (C chunk, Kp = K padded to a power of two)
    prep forward  prep_mosaic.prep_fwd           C = 64, Kp in {64, 128}, Vp % 64 == 0, Vp <= 256
    state forward state_mosaic.state_fwd         C = 64, Kp in {64, 128}, V % 64 == 0
    backward dh   state_mosaic_bwd.dh            as the state forward
    dqk and prep  grad_mosaic.chunk_grads        C = 64, Kp in {64, 128}, V % 64 == 0, V <= 192,
    backward      (one kernel: "fused")          bf16 q, k, v, and the other slots Mosaic GPU
    prep backward prep_mosaic_bwd.prep_bwd       where the fused kernel does not run: as the prep
                                                 forward, and bf16 q, k, v (it writes bf16 dq,
                                                 dk, dv); dqk then runs in Triton

With the Mosaic prep forward the kernels read q, k, v and write dq, dk, dv in the caller's
layout (`layout.py`), and with the Mosaic state forward too o and dO. With both preps in Mosaic
GPU and a scale known when tracing (a Python number), the preps apply q's scale themselves
(`q_scale`), sparing XLA a pass over q before the kernels and one over dq after. The in-chunk
log-decays are masked sums at "highest" ("exact"), differences of one cumulative sum at "default"
("outer"), summed by XLA before the kernels with the Mosaic prep, which reads them ("xla";
`chunk_math.DECAYS`). Interpret mode (CPU tests) runs the same plan: the Mosaic kernels in the
Mosaic GPU interpreter, the Triton ones in Pallas' interpreter.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax

from kernels.gated_delta_rule.gpu import grad_mosaic, prep_mosaic, state_mosaic
from kernels.gated_delta_rule.gpu.triton_common import v_tile

PRECISIONS = ("highest", "default")
WARPS = (1, 2, 4, 8, 16)


def next_pow2(n: int) -> int:
    return 1 << (max(int(n), 1) - 1).bit_length()


def padded_k(K: int) -> int:
    """K as the kernels take it: zero-padded to a power of two >= 16 (96 -> 128); zero columns of
    q, k, w, kd change no product."""
    return max(16, next_pow2(K))


def prep_v(V: int, block_d: int) -> int:
    """V as the preps take it: zero-padded to a multiple of the Triton prep's V tile (a power of
    two, at most block_d), not to a power of two: V = 192 is three tiles of 64."""
    tile = min(block_d, max(16, next_pow2(V)))
    return -(-V // tile) * tile


def _power_of_two(name, x, low=16):
    if x < low or x & (x - 1):
        raise ValueError(f"KernelConfig.{name} must be a power of two >= {low}, got {x}")


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Launch parameters of the Triton kernels (the Mosaic GPU kernels have none to set).

    block_v: the state pass's V tile (the largest power of two dividing V, at most this). None:
      32 at "highest"; at "default" 32 where B*HV x V/32 sequential programs still fit the
      GPU's multiprocessors, else 64 (`_default_block_v`).
    block_d: the prep's K and V tile; no dot takes an operand wider along K or V.
    num_warps: the state forward's. None: 4, or 8 when the state tile Kp x BV exceeds 128 x 64
      (it lives in registers: 64 fp32 a thread at 4 warps).
    num_warps_bwd: the backward state kernels' (dh, dqk).
    num_warps_prep: the prep kernels' (4: on an H200 the prep took 1.39 / 2.98 ms fwd / bwd
      at 4 warps against 1.61 / 4.58 at 8; 2 made the backward 3.8x slower).
    num_stages: Triton's software-pipelining stages for every kernel. None: 1 for the prep and
      at "highest" (fp32 operands of TF32x3 dots fill shared memory); at "default" 3 with
      Kp <= 128 (the state forward 0.262 ms at 3 against 0.398 at 2 on an H200), at Kp = 256
      2 for the state forward and 1 for the backward.
    """
    block_v: Optional[int] = None
    block_d: int = 64
    num_warps: Optional[int] = None
    num_warps_bwd: int = 4
    num_warps_prep: int = 4
    num_stages: Optional[int] = None

    def __post_init__(self):
        if self.block_v is not None:
            _power_of_two("block_v", self.block_v)
        _power_of_two("block_d", self.block_d)
        for name in ("num_warps", "num_warps_bwd", "num_warps_prep"):
            w = getattr(self, name)
            if w is not None and w not in WARPS:
                raise ValueError(f"KernelConfig.{name} must be one of {WARPS}, got {w}")
        if self.num_stages is not None and self.num_stages < 1:
            raise ValueError(f"KernelConfig.num_stages must be >= 1, got {self.num_stages}")


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one call runs, resolved by `plan` (hashable: a custom_vjp's static argument).
    prep_fwd, state, prep_bwd: "mosaic" or "triton" (state: the state forward and the
    backward's dh kernel); dqk: "triton", or "fused" where `grad_mosaic.chunk_grads` runs dqk
    and the prep backward as one kernel (prep_bwd "fused" then too). decays:
    `chunk_math.DECAYS`. caller_layout: q, k, v, dq, dk, dv in the caller's layout;
    o_caller_layout: o and dO too. q_scale: the factor the Mosaic preps apply to q, or None
    where XLA scales q first. state_v: the value width of the state passes (V, or the Mosaic
    prep's zero-padded Vp). The rest launches the Triton kernels."""
    precision: str
    interpret: bool
    C: int
    heads: int
    prep_fwd: str
    state: str
    dqk: str
    prep_bwd: str
    decays: str
    caller_layout: bool
    o_caller_layout: bool
    q_scale: Optional[float]
    block_v: int
    state_v: int
    block_d: int
    warps_fwd: int
    warps_bwd: int
    warps_prep: int
    stages_fwd: int
    stages_bwd: int
    stages_prep: int


def _sm_count(interpret: bool):
    """Multiprocessors of the GPU the kernels will run on; None in interpret mode or where jax
    does not say."""
    if interpret:
        return None
    return getattr(jax.devices()[0], "core_count", None)


def _default_block_v(precision, interpret, V, BH):
    """32 at "highest". At "default" 64, unless 32-wide V tiles still give no more sequential
    programs (B*HV x V tiles) than the GPU has multiprocessors: those programs walk every chunk,
    one per SM, so when B*HV is small narrower tiles put more SMs to work. On an H200 (132 SMs)
    32 won at B1 T8192 H32 (128 programs; forward+backward 2.380 against 2.677 ms) and lost at
    the 7B layer, B1 H30 V=192 (180 programs, +13%) and at B4 T4096 H16 (256 programs)."""
    if precision == "highest":
        return 32
    sms = _sm_count(interpret)
    return 32 if sms and BH * -(-V // 32) <= sms else 64


def plan(precision: str, interpret: bool, config: KernelConfig, *, C: int, Kp: int, V: int,
         B: int, HV: int, bf16_qkv: bool, q_scale: Optional[float] = None) -> Plan:
    """The kernels and launches for chunk size C, padded key dim Kp, value dim V, B x HV heads;
    bf16_qkv: the kernels read q, k, v in bf16 (and write their cotangents so); q_scale: q's
    scale as a Python number, or None where it is not known when tracing."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {PRECISIONS}")
    mosaic = precision == "default"  # bf16 wgmma operands only
    Vp = prep_v(V, config.block_d)
    prep_fwd = "mosaic" if mosaic and prep_mosaic.takes_shape(C, Kp, Vp) else "triton"
    # Behind the Mosaic prep the state passes take its zero-padded Vp (a multiple of 64) where
    # V alone is not one: the padding columns of u, S, o and dO stay zero. The ladder models'
    # heads (K 48, V 96) are the exception: there the state passes and the fused gradients take
    # V = 96 as one tile a head (`mosaic_common.BV_WHOLE_96`), reading the first 96 columns of
    # the prep's u and v.
    whole96 = (mosaic and bf16_qkv and prep_fwd == "mosaic" and (C, Kp, V, Vp) == (64, 64, 96, 128))
    state_v = 96 if whole96 else (Vp if prep_fwd == "mosaic"
                                   and state_mosaic.takes_shape(C, Kp, Vp) else V)
    state = ("mosaic" if whole96 or (mosaic and state_mosaic.takes_shape(C, Kp, state_v))
             else "triton")
    prep_bwd = "mosaic" if prep_fwd == "mosaic" and bf16_qkv else "triton"
    if prep_bwd == "mosaic" and state == "mosaic" and grad_mosaic.takes_shape(
            C, Kp, Vp if whole96 else state_v):
        dqk = prep_bwd = "fused"
    else:
        dqk = "triton"
    decays = "exact" if precision == "highest" else "xla" if prep_fwd == "mosaic" else "outer"
    block_v = config.block_v or _default_block_v(precision, interpret, V, B * HV)
    if config.num_stages is not None:
        stages = (config.num_stages,) * 3
    elif precision == "highest":
        stages = (1, 1, 1)
    else:
        stages = (3, 3, 1) if Kp <= 128 else (2, 1, 1)
    return Plan(
        precision=precision, interpret=bool(interpret), C=C, heads=HV, prep_fwd=prep_fwd,
        state=state, dqk=dqk, prep_bwd=prep_bwd, decays=decays, caller_layout=prep_fwd == "mosaic",
        o_caller_layout=prep_fwd == "mosaic" and state == "mosaic",
        q_scale=float(q_scale) if q_scale is not None and prep_bwd != "triton" else None,
        block_v=block_v, state_v=state_v,
        block_d=config.block_d,
        warps_fwd=config.num_warps or (4 if Kp * v_tile(V, block_v) <= 128 * 64 else 8),
        warps_bwd=config.num_warps_bwd, warps_prep=config.num_warps_prep,
        stages_fwd=stages[0], stages_bwd=stages[1], stages_prep=stages[2])
