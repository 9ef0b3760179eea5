"""Model configuration: one frozen dataclass, validated at construction.

Layer patterns use one letter per layer:

    A  full (global) causal attention
    S  sliding-window causal attention
    G  Gated DeltaNet

A pattern shorter than `n_layers` is tiled ("GGGA" over 32 layers gives 24 G and 8 A).
`final_full_attention` forces the last layer to "A" (OLMo-core's Olmo 3 and Olmo Hybrid both
end on full attention; the pure-GDN control does not). `layers` gives every layer's letter
explicitly instead, as Hugging Face's `layer_types` does; then neither applies.

Positions: RoPE (rotate-half, theta `rope_theta`) in the attention layers whose letters are in
`rope_layers`; "" is no positional encoding at all (the released Olmo Hybrid checkpoint). GDN
layers never take a positional encoding.
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
GDN_PRECISIONS = ("auto", "highest", "default")
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
    layers: str = ""  # one letter per layer, exactly n_layers; overrides the two fields above
    sliding_window: int = 4096
    rope_theta: float = 500_000.0
    rope_layers: str = "AS"  # the attention letters whose layers apply RoPE; "" for none
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
    # The epsilon of the GDN output's gated RMSNorm. FLA's FusedRMSNormGated, which the paper's
    # training code and Hugging Face's olmo_hybrid both use, fixes it at 1e-5, apart from the
    # model's norm_eps (docs/architectures.md).
    gdn_norm_eps: float = 1e-5
    gdn_implementation: str = "auto"
    # Matmul precision inside the gated delta rule: "highest" (fp32 products), "default" (XLA's
    # default, TF32 on GPU; bf16 operands with fp32 accumulation in pallas_gpu), or "auto":
    # "default" on a GPU, "highest" elsewhere (kernels/gated_delta_rule/api.py: AUTO_PRECISION).
    gdn_precision: str = "auto"
    attention_implementation: str = "auto"
    # Parameters are stored in fp32; activations and matmuls run in compute_dtype.
    compute_dtype: str = "bfloat16"
    # The unembedding's backward GEMMs: "compute" rounds the fp32 logits' cotangent to
    # compute_dtype once (models/lm.py `unembed_logits`); "float32" is plain autodiff, whose fp32
    # cotangent makes both GEMMs fp32 (TF32 on a GPU; 23% of a 370M step, LOG). No effect when
    # compute_dtype is float32.
    unembed_grad_dtype: str = "compute"

    def __post_init__(self) -> None:
        for name in ("layer_pattern", "layers", "rope_layers"):
            if isinstance(getattr(self, name), (list, tuple)):
                object.__setattr__(self, name, "".join(getattr(self, name)))
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
        for name in ("layer_pattern", "layers"):
            bad = sorted(set(getattr(self, name)) - set(LAYER_LETTERS))
            if bad:
                _fail(name, f"unknown layer letter(s) {bad} in {getattr(self, name)!r}; "
                      f"known: {LAYER_LETTERS}")
        if self.layers:
            if len(self.layers) != self.n_layers:
                _fail("layers", f"{len(self.layers)} letters for n_layers={self.n_layers}; give "
                      f"one per layer (or use layer_pattern, which is tiled)")
            if self.layer_pattern or self.final_full_attention is not None:
                _fail("layers", "gives every layer explicitly; leave layer_pattern and "
                      "final_full_attention unset")
        bad = sorted(set(self.rope_layers) - {"A", "S"})
        if bad:
            _fail("rope_layers", f"{self.rope_layers!r} has {bad}; RoPE applies only to "
                  f"attention layers: a subset of 'AS', or '' for none")
        if self.family == "gdn" and self.final_full_attention:
            _fail("final_full_attention", "family 'gdn' is GDN-only; it cannot end on attention")
        letters, shown = set(self.layer_types), "".join(self.layer_types)
        field = "layers" if self.layers else "layer_pattern"
        if self.family == "transformer" and "G" in letters:
            _fail(field, f"family 'transformer' has no GDN layers, got {shown!r}")
        if self.family == "gdn" and letters != {"G"}:
            _fail(field, f"family 'gdn' is GDN-only, got {shown!r}")
        if self.family == "hybrid" and not ("G" in letters and letters & {"A", "S"}):
            _fail(field, f"family 'hybrid' needs both G and A/S letters, got {shown!r}")
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
        for name in ("norm_eps", "gdn_norm_eps"):
            if not getattr(self, name) > 0:
                _fail(name, f"must be > 0, got {getattr(self, name)!r}")

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
        """One letter per layer: `layers`, or the pattern tiled with the final layer forced."""
        if self.layers:
            return tuple(self.layers)
        p = self.pattern
        types = [p[i % len(p)] for i in range(self.n_layers)]
        final_full = self.final_full_attention
        if final_full is None:
            final_full = self.family != "gdn"
        if final_full:
            types[-1] = "A"
        return tuple(types)

    def architecture(self) -> dict[str, Any]:
        """What the weights mean: every field that changes the function a set of parameters
        computes, with derived values written out (so two spellings of one model compare
        equal). Leaves out how it is computed: dtypes, kernels, chunk size, init scale."""
        d = self.to_dict()
        for name in ("compute_dtype", "gdn_implementation", "gdn_precision",
                     "attention_implementation", "unembed_grad_dtype", "init_std",
                     "gdn_chunk_size", "layer_pattern", "final_full_attention"):
            d.pop(name)
        d.update(head_dim=self.attn_head_dim, n_kv_heads=self.kv_heads,
                 gdn_n_heads=self.gdn_k_heads, gdn_n_v_heads=self.gdn_v_heads,
                 gdn_head_k_dim=self.gdn_k_dim, layers="".join(self.layer_types))
        types = set(self.layer_types)
        d["rope_layers"] = "".join(t for t in "AS" if t in self.rope_layers and t in types)
        if not d["rope_layers"]:
            d.pop("rope_theta")
        if "S" not in types:
            d.pop("sliding_window")
        if not types & {"A", "S"}:
            for name in ("n_heads", "n_kv_heads", "head_dim", "qk_norm", "rope_theta",
                         "rope_layers"):
                d.pop(name, None)
        if "G" not in types:
            d = {k: v for k, v in d.items() if not k.startswith("gdn_")}
        return d

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _suggest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
