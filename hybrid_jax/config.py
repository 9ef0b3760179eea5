"""Model configuration: one frozen dataclass, validated at construction.

Layer patterns use one letter per layer:

    A  full (global) causal attention
    S  sliding-window causal attention
    G  Gated DeltaNet

A pattern shorter than `n_layers` is tiled ("GGGA" over 32 layers gives 24 G and 8 A).
`final_full_attention` forces the last layer to "A" (Olmo 3 and Olmo Hybrid both end on
full attention; the pure-GDN control does not).
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Sequence

FAMILIES = ("transformer", "hybrid", "gdn")
LAYER_LETTERS = {"A": "full attention", "S": "sliding-window attention", "G": "gated deltanet"}
DEFAULT_PATTERNS = {"transformer": "SSSA", "hybrid": "GGGA", "gdn": "G"}
# "auto" plus kernels.gated_delta_rule.IMPLEMENTATIONS (a test keeps the two equal; importing
# the kernels here would pull jax into the config).
GDN_IMPLEMENTATIONS = ("auto", "recurrent", "chunked", "pallas_gpu", "pallas_tpu")
GDN_PRECISIONS = ("highest", "default")
ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn", "splash")
DTYPES = ("float32", "bfloat16", "float16")
UNEMBED_GRAD_DTYPES = ("compute", "float32")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


def _fail(field: str, msg: str) -> None:
    raise ConfigError(f"ModelConfig.{field}: {msg}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of one language model of the transformer / hybrid / gdn families.

    `None` in an optional field means "derive it": n_kv_heads = n_heads (no GQA),
    head_dim = d_model // n_heads, gdn_n_heads = n_heads, gdn_n_v_heads = gdn_n_heads,
    gdn_head_k_dim = 0.75 * d_model / gdn_n_heads (the Olmo Hybrid rule).
    """

    family: str = "transformer"
    vocab_size: int = 100_352
    d_model: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None
    head_dim: int | None = None
    mlp_hidden: int = 11008
    # Empty means the family's default pattern (DEFAULT_PATTERNS).
    layer_pattern: str = ""
    final_full_attention: bool | None = None  # None: True for transformer/hybrid, False for gdn
    sliding_window: int = 4096
    rope_theta: float = 500_000.0
    qk_norm: bool = True
    norm_eps: float = 1e-6
    tie_embeddings: bool = False
    init_std: float = 0.02
    # Gated DeltaNet
    gdn_n_heads: int | None = None
    gdn_n_v_heads: int | None = None
    gdn_head_k_dim: int | None = None
    gdn_v_expand: float = 2.0
    gdn_conv_width: int = 4
    gdn_allow_neg_eigval: bool = True
    gdn_chunk_size: int = 64
    gdn_implementation: str = "auto"
    # Matmul precision inside the gated delta rule: "highest" (fp32 products) or "default"
    # (XLA's default, TF32 on GPU; bf16 operands with fp32 accumulation in pallas_gpu).
    gdn_precision: str = "highest"
    attention_implementation: str = "auto"
    # Parameters are stored in fp32; activations and matmuls run in compute_dtype.
    compute_dtype: str = "bfloat16"
    # The unembedding's backward GEMMs: "compute" rounds the fp32 logits' cotangent to
    # compute_dtype once (models/lm.py `unembed_logits`); "float32" is plain autodiff, whose fp32
    # cotangent makes both GEMMs fp32 (TF32 on a GPU; 23% of a 370M step, LOG). No effect when
    # compute_dtype is float32.
    unembed_grad_dtype: str = "compute"

    def __post_init__(self) -> None:
        if isinstance(self.layer_pattern, (list, tuple)):
            object.__setattr__(self, "layer_pattern", "".join(self.layer_pattern))
        if self.family not in FAMILIES:
            _fail("family", f"unknown family {self.family!r}; expected one of {FAMILIES}"
                  + _suggest(self.family, FAMILIES))
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "mlp_hidden", "gdn_conv_width",
                     "gdn_chunk_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                _fail(name, f"must be a positive integer, got {getattr(self, name)!r}")
        if self.sliding_window <= 0:
            _fail("sliding_window", f"must be > 0, got {self.sliding_window}")
        if self.head_dim is None and self.d_model % self.n_heads:
            _fail("n_heads", f"{self.n_heads} heads do not divide d_model={self.d_model}")
        if self.head_dim is not None and self.head_dim <= 0:
            _fail("head_dim", f"must be > 0, got {self.head_dim}")
        if self.kv_heads <= 0 or self.n_heads % self.kv_heads:
            _fail("n_kv_heads", f"{self.kv_heads} kv heads must divide n_heads={self.n_heads}")
        bad = sorted(set(self.layer_pattern) - set(LAYER_LETTERS))
        if bad:
            _fail("layer_pattern", f"unknown layer letter(s) {bad} in {self.layer_pattern!r}; "
                  f"known: {LAYER_LETTERS}")
        letters = set(self.pattern)
        if self.family == "transformer" and "G" in letters:
            _fail("layer_pattern", f"family 'transformer' has no GDN layers, got {self.pattern!r}")
        if self.family == "gdn" and letters != {"G"}:
            _fail("layer_pattern", f"family 'gdn' is GDN-only, got {self.pattern!r}")
        if self.family == "hybrid" and not ("G" in letters and letters & {"A", "S"}):
            _fail("layer_pattern", f"family 'hybrid' needs both G and A/S letters, got {self.pattern!r}")
        if self.family == "gdn" and self.final_full_attention:
            _fail("final_full_attention", "family 'gdn' is GDN-only; it cannot end on attention")
        if self.gdn_k_heads <= 0 or self.gdn_v_heads % self.gdn_k_heads:
            _fail("gdn_n_v_heads", f"{self.gdn_v_heads} value heads must be a positive multiple "
                  f"of gdn_n_heads={self.gdn_k_heads}")
        if self.gdn_k_dim <= 0:
            _fail("gdn_head_k_dim", f"must be > 0, got {self.gdn_k_dim}")
        if self.gdn_v_expand <= 0 or self.gdn_k_dim * self.gdn_v_expand != int(self.gdn_k_dim * self.gdn_v_expand):
            _fail("gdn_v_expand", f"{self.gdn_v_expand} x key dim {self.gdn_k_dim} must be a positive integer")
        if self.gdn_implementation not in GDN_IMPLEMENTATIONS:
            _fail("gdn_implementation", f"{self.gdn_implementation!r} not in {GDN_IMPLEMENTATIONS}")
        if self.gdn_precision not in GDN_PRECISIONS:
            _fail("gdn_precision", f"{self.gdn_precision!r} not in {GDN_PRECISIONS}"
                  + _suggest(self.gdn_precision, GDN_PRECISIONS))
        if self.attention_implementation not in ATTENTION_IMPLEMENTATIONS:
            _fail("attention_implementation",
                  f"{self.attention_implementation!r} not in {ATTENTION_IMPLEMENTATIONS}")
        if self.compute_dtype not in DTYPES:
            _fail("compute_dtype", f"{self.compute_dtype!r} not in {DTYPES}")
        if self.unembed_grad_dtype not in UNEMBED_GRAD_DTYPES:
            _fail("unembed_grad_dtype", f"{self.unembed_grad_dtype!r} not in {UNEMBED_GRAD_DTYPES}"
                  + _suggest(self.unembed_grad_dtype, UNEMBED_GRAD_DTYPES))
        if self.rope_theta <= 0:
            _fail("rope_theta", f"must be > 0, got {self.rope_theta}")

    # ---- derived values -------------------------------------------------------------------
    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def attn_head_dim(self) -> int:
        return self.d_model // self.n_heads if self.head_dim is None else self.head_dim

    @property
    def gdn_k_heads(self) -> int:
        return self.n_heads if self.gdn_n_heads is None else self.gdn_n_heads

    @property
    def gdn_v_heads(self) -> int:
        return self.gdn_k_heads if self.gdn_n_v_heads is None else self.gdn_n_v_heads

    @property
    def gdn_k_dim(self) -> int:
        if self.gdn_head_k_dim is not None:
            return self.gdn_head_k_dim
        return int(0.75 * self.d_model / self.gdn_k_heads)

    @property
    def gdn_v_dim(self) -> int:
        return int(self.gdn_k_dim * self.gdn_v_expand)

    @property
    def pattern(self) -> str:
        return self.layer_pattern or DEFAULT_PATTERNS[self.family]

    @property
    def layer_types(self) -> tuple[str, ...]:
        """One letter per layer, after tiling the pattern and forcing the final layer."""
        p = self.pattern
        types = [p[i % len(p)] for i in range(self.n_layers)]
        final_full = self.final_full_attention
        if final_full is None:
            final_full = self.family != "gdn"
        if final_full:
            types[-1] = "A"
        return tuple(types)

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _suggest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
