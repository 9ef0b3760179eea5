"""Named model presets: the 7B models, the paper's ladder sizes, and tiny CPU sizes.

Every preset is a function `(**overrides) -> ModelConfig`; `get_preset(name, **overrides)` looks
one up by name. The ladder names (`transformer_190m`, `hybrid_190m`, `gdn_190m`, ...) share
d_model, depth and heads across families, so each size differs between families only in its
mixers. The size in a name is the transformer's non-embedding parameter count, within 6%; GDN
layers hold 1.5x the parameters of an attention layer at the Olmo Hybrid ratios (K = 0.75 D/heads,
V = 2K), so hybrid and gdn presets are larger. `hybrid_jax.flops.param_count` gives the exact N,
which is what the scaling fits use. Depths are multiples of 4 so that the "xxxA" patterns tile.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Callable

from hybrid_jax.config import ModelConfig

PresetFn = Callable[..., ModelConfig]
PRESETS: dict[str, PresetFn] = {}

# Paper ladder sizes: name -> (d_model, n_layers, head_dim). MLP hidden = 8/3 D rounded up to 256,
# the Olmo 3 rule (4096 -> 11008).
LADDER: dict[str, tuple[int, int, int]] = {
    "60m": (768, 8, 64),
    "100m": (1024, 8, 64),
    "190m": (1152, 12, 64),
    "370m": (1408, 16, 64),
    "600m": (1408, 24, 64),
    "760m": (1792, 20, 128),
    "1b": (2048, 20, 128),
}


def mlp_hidden_for(d_model: int) -> int:
    return math.ceil(8 * d_model / 3 / 256) * 256


def _register(name: str, base: dict[str, Any]) -> None:
    def preset(**overrides: Any) -> ModelConfig:
        return ModelConfig(**{**base, **overrides})

    preset.__name__ = name
    preset.__doc__ = f"Preset {name!r}: " + ", ".join(f"{k}={v!r}" for k, v in base.items())
    PRESETS[name] = preset


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"unknown model preset {name!r}{hint} (see `hybrid-jax models`)")
    return PRESETS[name](**overrides)


# Olmo 3 7B and Olmo Hybrid 7B (docs/architectures.md). olmo_hybrid_7b is the released
# checkpoint, whose attention layers take no positional encoding; olmo_hybrid_7b_rope is the
# same model with RoPE in its attention layers, as in Olmo 3 (docs/hf.md says when each applies).
_register("olmo3_7b", dict(family="transformer", vocab_size=100_352, d_model=4096, n_layers=32,
                           n_heads=32, mlp_hidden=11008, sliding_window=4096))
_OLMO_HYBRID_7B = dict(family="hybrid", vocab_size=100_352, d_model=3840, n_layers=32,
                       n_heads=30, head_dim=128, mlp_hidden=11008, gdn_n_heads=30,
                       gdn_head_k_dim=96, gdn_v_expand=2.0)
_register("olmo_hybrid_7b", dict(_OLMO_HYBRID_7B, rope_layers=""))
_register("olmo_hybrid_7b_rope", dict(_OLMO_HYBRID_7B))

for _size, (_d, _layers, _hd) in LADDER.items():
    _common = dict(vocab_size=100_352, d_model=_d, n_layers=_layers, n_heads=_d // _hd,
                   mlp_hidden=mlp_hidden_for(_d), sliding_window=4096)
    for _family in ("transformer", "hybrid", "gdn"):
        _register(f"{_family}_{_size}", dict(family=_family, **_common))

# Tiny sizes for CPU tests and demos: small enough to train in seconds.
for _family in ("transformer", "hybrid", "gdn"):
    _register(f"{_family}_tiny", dict(family=_family, vocab_size=512, d_model=64, n_layers=4,
                                      n_heads=4, mlp_hidden=192, sliding_window=16,
                                      gdn_chunk_size=16, compute_dtype="float32"))
