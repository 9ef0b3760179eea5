"""Our ModelConfig to and from a Hugging Face config.json (`olmo3` and `olmo_hybrid`).

transformer -> olmo3 (Olmo3ForCausalLM); hybrid -> olmo_hybrid (OlmoHybridForCausalLM). The
gdn family is written as olmo_hybrid with every layer linear attention: our import reads it
back, but transformers refuses to load it (its OlmoHybridConfig requires an attention layer).
What the two architectures cannot express is refused in one line naming the field, never
approximated: the facts behind each refusal are in docs/hf.md.
"""

from __future__ import annotations

from typing import Any

from hybrid_jax.config import ModelConfig

HF_LAYER_TYPES = {"A": "full_attention", "S": "sliding_attention", "G": "linear_attention"}
LETTERS = {v: k for k, v in HF_LAYER_TYPES.items()}
ARCHITECTURES = {"olmo3": "Olmo3ForCausalLM", "olmo_hybrid": "OlmoHybridForCausalLM"}
# transformers' olmo_hybrid hard-codes the GDN output norm's epsilon (after FLA's
# FusedRMSNormGated); a model with another value has no olmo_hybrid equivalent.
HF_GDN_NORM_EPS = 1e-5
DTYPES = ("float32", "bfloat16", "float16")
# Our fields with no HF counterpart, kept under config.json's "hybrid_jax" key so that an
# export read back by our import is the same model (transformers ignores the key).
EXTRA_FIELDS = ("gdn_chunk_size", "sliding_window", "init_std", "gdn_implementation", "gdn_precision",
                "attention_implementation", "unembed_grad_dtype")


class HFConfigError(ValueError):
    """A config cannot be expressed in the other format; the message names the field."""


def model_type(cfg: ModelConfig) -> str:
    return "olmo3" if cfg.family == "transformer" else "olmo_hybrid"


def to_hf_config(cfg: ModelConfig, *, dtype: str = "float32",
                 special_ids: dict[str, int | None] | None = None) -> dict[str, Any]:
    """config.json for `cfg`, its weights stored in `dtype`; `special_ids` (pad, bos, eos
    token ids, from the run's tokenizer) are written where given, else null."""
    if dtype not in DTYPES:
        raise HFConfigError(f"dtype={dtype!r}; expected one of {DTYPES}")
    kind = model_type(cfg)
    types = cfg.layer_types
    present = {t for t in types if t in "AS"}
    ids = {"pad_token_id": None, "bos_token_id": None, "eos_token_id": None,
           **{f"{k}_token_id": v for k, v in (special_ids or {}).items()}}
    out: dict[str, Any] = {
        "architectures": [ARCHITECTURES[kind]], "model_type": kind, "dtype": dtype,
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
        "intermediate_size": cfg.mlp_hidden, "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.attn_head_dim, "hidden_act": "silu", "rms_norm_eps": cfg.norm_eps,
        "attention_bias": False, "attention_dropout": 0.0, "tie_word_embeddings":
        cfg.tie_embeddings, "max_position_embeddings": 65536, "use_cache": True,
        "layer_types": [HF_LAYER_TYPES[t] for t in types], **ids,
        "hybrid_jax": {name: getattr(cfg, name) for name in EXTRA_FIELDS}}
    if not cfg.qk_norm:
        raise HFConfigError(f"qk_norm=False: {kind} always normalises q and k")
    rope = {"rope_type": "default", "rope_theta": float(cfg.rope_theta)}
    if kind == "olmo3":
        missing = sorted(present - set(cfg.rope_layers))
        if missing:
            raise HFConfigError(f"rope_layers={cfg.rope_layers!r}: olmo3 applies RoPE in every "
                                f"attention layer, and this model has {missing} layers without")
        out["sliding_window"] = cfg.sliding_window
        out["rope_parameters"] = {HF_LAYER_TYPES[t]: dict(rope) for t in "SA"}
        return out
    if "S" in present:
        raise HFConfigError("layers: olmo_hybrid has no sliding-window attention layers, and "
                            f"this model has some ({''.join(types)!r})")
    if cfg.gdn_norm_eps != HF_GDN_NORM_EPS:
        raise HFConfigError(f"gdn_norm_eps={cfg.gdn_norm_eps}: transformers' olmo_hybrid fixes "
                            f"the GDN output norm's eps at {HF_GDN_NORM_EPS}")
    # No RoPE is rope_theta null: a null rope_parameters makes transformers fill in RoPE at
    # its default theta (1e4), which the released checkpoint's config avoids the same way.
    out["rope_parameters"] = rope if "A" in cfg.rope_layers else {"rope_type": "default",
                                                                   "rope_theta": None}
    out.update({"linear_num_key_heads": cfg.gdn_k_heads,
                "linear_num_value_heads": cfg.gdn_v_heads,
                "linear_key_head_dim": cfg.gdn_k_dim, "linear_value_head_dim": cfg.gdn_v_dim,
                "linear_conv_kernel_dim": cfg.gdn_conv_width,
                "linear_allow_neg_eigval": cfg.gdn_allow_neg_eigval})
    return out


def _rope(hf: dict, kind: str) -> tuple[float | None, str]:
    """(theta, rope_layers) from an HF config's RoPE fields."""
    if hf.get("rope_scaling"):
        raise HFConfigError(f"rope_scaling={hf['rope_scaling']!r}: only plain RoPE is supported")
    params = hf.get("rope_parameters")
    if kind == "olmo_hybrid":
        if params is None or params.get("rope_theta") is None:
            return None, ""
        per_type = {"full_attention": params}
    else:
        default = {"rope_type": "default", "rope_theta": hf.get("rope_theta", 500_000.0)}
        per_type = params if params else {"full_attention": default, "sliding_attention": default}
    thetas = set()
    for layer_type, p in per_type.items():
        if p is None:
            raise HFConfigError(f"rope_parameters.{layer_type} is null: olmo3 applies RoPE in "
                                f"every attention layer")
        if p.get("rope_type", "default") != "default":
            raise HFConfigError(f"rope_parameters.{layer_type}.rope_type="
                                f"{p.get('rope_type')!r}: only plain RoPE ('default') is "
                                f"supported (no YaRN or other scaling)")
        thetas.add(float(p.get("rope_theta", hf.get("rope_theta", 500_000.0))))
    if len(thetas) > 1:
        raise HFConfigError(f"rope_parameters: one RoPE theta for all layer types is supported, "
                            f"got {sorted(thetas)}")
    return thetas.pop(), "AS"


def from_hf_config(hf: dict[str, Any], *, compute_dtype: str | None = None) -> ModelConfig:
    """The ModelConfig of an HF config.json dict. compute_dtype None: the checkpoint's own
    dtype (`dtype`, or `torch_dtype` in older files), float32 if it names none."""
    kind = hf.get("model_type")
    if kind not in ARCHITECTURES:
        raise HFConfigError(f"model_type={kind!r}; this reads {sorted(ARCHITECTURES)}")
    for key, want in (("hidden_act", "silu"), ("attention_bias", False)):
        if hf.get(key, want) != want:
            raise HFConfigError(f"{key}={hf[key]!r}: {kind} as we build it has {want!r}")
    dtype = compute_dtype or hf.get("dtype") or hf.get("torch_dtype") or "float32"
    if dtype not in DTYPES:
        raise HFConfigError(f"dtype={dtype!r}; expected one of {DTYPES}")
    n_layers, d, heads = hf["num_hidden_layers"], hf["hidden_size"], hf["num_attention_heads"]
    types = hf.get("layer_types")
    if types is None:
        raise HFConfigError("layer_types is missing; write it out (transformers' config "
                            "objects always carry it)")
    unknown = sorted(set(types) - set(LETTERS))
    if unknown or len(types) != n_layers:
        raise HFConfigError(f"layer_types: {len(types)} entries for {n_layers} layers, "
                            f"unknown {unknown}; known {sorted(LETTERS)}")
    letters = "".join(LETTERS[t] for t in types)
    theta, rope_layers = _rope(hf, kind)
    fields: dict[str, Any] = dict(
        vocab_size=hf["vocab_size"], d_model=d, n_layers=n_layers, n_heads=heads,
        n_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or d // heads, mlp_hidden=hf["intermediate_size"],
        layers=letters, norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)), rope_layers=rope_layers,
        compute_dtype=dtype)
    extra = hf.get("hybrid_jax") or {}
    fields.update({k: v for k, v in extra.items() if k in EXTRA_FIELDS})
    if theta is not None:
        fields["rope_theta"] = theta
    if kind == "olmo3":
        if "G" in letters:
            raise HFConfigError("layer_types: olmo3 has no linear_attention layers")
        fields.update(family="transformer", sliding_window=hf.get("sliding_window") or 4096)
        return ModelConfig(**fields)
    if "S" in letters:
        raise HFConfigError("layer_types: olmo_hybrid has no sliding_attention layers")
    k_heads = hf.get("linear_num_key_heads") or heads
    k_dim = hf.get("linear_key_head_dim") or int(0.75 * d / k_heads)
    v_dim = hf.get("linear_value_head_dim") or 2 * k_dim
    expand = v_dim / k_dim
    if int(k_dim * expand) != v_dim:
        raise HFConfigError(f"linear_value_head_dim={v_dim} is not linear_key_head_dim={k_dim} "
                            f"times a ratio that our gdn_v_expand can hold")
    fields.update(family="hybrid" if set(letters) != {"G"} else "gdn",
                  gdn_n_heads=k_heads, gdn_n_v_heads=hf.get("linear_num_value_heads") or heads,
                  gdn_head_k_dim=k_dim, gdn_v_expand=expand,
                  gdn_conv_width=hf.get("linear_conv_kernel_dim", 4),
                  gdn_allow_neg_eigval=bool(hf.get("linear_allow_neg_eigval", True)),
                  gdn_norm_eps=HF_GDN_NORM_EPS)
    return ModelConfig(**fields)
