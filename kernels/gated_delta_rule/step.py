"""One-token gated delta rule update, for decoding.

Why this exists
    Generation advances the recurrent state one token at a time; the chunked algorithm has
    nothing to gain there. This is the body of `reference.recurrent`, exposed with the
    validation of the public API, so decoding token by token reproduces the sequence op.

Numerics
    Same as `reference.py`: fp32 math inside, o in v's dtype, the state kept in float32.

Constraints
    q, k: [B, H, K]; v: [B, HV, V] with HV a multiple of H; g, beta: [B, HV];
    state: [B, HV, K, V] float32 (required: decoding always carries a state).
"""

from typing import Optional

from kernels.gated_delta_rule import reference
from kernels.gated_delta_rule.api import validate


def gated_delta_rule_step(q, k, v, g, beta, state, *, scale: Optional[float] = None,
                          use_qk_l2norm: bool = False):
    """Advance one token. Returns (o [B, HV, V] in v.dtype, new_state [B, HV, K, V])."""
    if state is None:
        raise ValueError("state is required for a decoding step; pass zeros to start")
    validate(q, k, v, g, beta, state, token_axis=False, state_name="state")
    # prepare expects a token axis; add one of length 1.
    q1, k1, v1, g1, b1, _ = reference.prepare(
        q[:, None], k[:, None], v[:, None], g[:, None], beta[:, None], scale, use_qk_l2norm)
    o, new_state = reference.step_core(q1[:, 0], k1[:, 0], v1[:, 0], g1[:, 0], b1[:, 0],
                                       state)
    return o.astype(v.dtype), new_state

