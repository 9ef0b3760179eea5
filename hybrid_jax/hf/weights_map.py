"""Which of our parameters each Hugging Face tensor is, and how it is laid out.

Our parameters are the pure dict of `nnx.state(model, nnx.Param)`: Linear kernels are [in, out]
(HF's nn.Linear weight is [out, in]) and the unembedding is [D, Y] (HF's lm_head is [Y, D]).
Our GDN layer has a depthwise conv kernel [W, C] for each of q, k and v; HF's files hold them as
`q_conv1d`, `k_conv1d`, `v_conv1d` of [C, 1, W]. Everything else (the embedding, norm weights,
A_log, dt_bias, the GDN output norm) is the same array.

olmo_hybrid files use the names of the released checkpoint, which transformers maps onto its
modules when it loads them and back when it saves (its conversion_mapping.py): in every layer
`attention_layer_norm` is the module `input_layernorm` and `feedforward_layer_norm` is
`post_attention_layernorm`, and the three convs are one module `conv1d` over [q | k | v].
`tensors()` lists the file names; the importer also takes the module names (FILE_NAMES).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from hybrid_jax.config import ModelConfig

# olmo_hybrid: module name -> the name in the released checkpoint's files.
FILE_NAMES = {"input_layernorm": "attention_layer_norm",
              "post_attention_layernorm": "feedforward_layer_norm"}


@dataclasses.dataclass(frozen=True)
class Tensor:
    """HF tensor `name` is our parameter `part`, laid out as `layout` says: "same",
    "transpose" (2-D, swapped) or "conv" (our [W, C] as HF's [C, 1, W])."""
    name: str
    part: tuple[Any, ...]
    layout: str


def tensors(cfg: ModelConfig) -> list[Tensor]:
    """Every HF tensor of the model `cfg`, by its name in the files."""
    hybrid = cfg.family != "transformer"
    names = FILE_NAMES if hybrid else {}
    out = [Tensor("model.embed_tokens.weight", ("embed",), "same")]
    for i, letter in enumerate(cfg.layer_types):
        hf, ours = f"model.layers.{i}", ("blocks", i)

        def norm(module: str, part: str) -> Tensor:
            return Tensor(f"{hf}.{names.get(module, module)}.weight", (*ours, part, "scale"),
                          "same")

        mlp = [Tensor(f"{hf}.mlp.{n}_proj.weight", (*ours, "mlp", n, "kernel"), "transpose")
               for n in ("gate", "up", "down")]
        if letter in "AS":
            attn = f"{hf}.self_attn"
            out += [Tensor(f"{attn}.{n}_proj.weight", (*ours, "mixer", n, "kernel"), "transpose")
                    for n in "qkvo"]
            if cfg.qk_norm:
                out += [Tensor(f"{attn}.{n}_norm.weight", (*ours, "mixer", f"{n}_norm", "scale"),
                               "same") for n in "qk"]
            out += mlp + [norm("post_attention_layernorm", "mixer_norm"),
                          norm("post_feedforward_layernorm", "mlp_norm")]
        else:
            gdn, mixer = f"{hf}.linear_attn", (*ours, "mixer")
            out += [Tensor(f"{gdn}.{n}_proj.weight", (*mixer, n, "kernel"), "transpose")
                    for n in "qkvabgo"]
            out += [Tensor(f"{gdn}.{n}_conv1d.weight", (*mixer, f"{n}_conv", "kernel"), "conv")
                    for n in "qkv"]
            out += [Tensor(f"{gdn}.A_log", (*mixer, "A_log"), "same"),
                    Tensor(f"{gdn}.dt_bias", (*mixer, "dt_bias"), "same"),
                    Tensor(f"{gdn}.o_norm.weight", (*mixer, "o_norm_scale"), "same")]
            out += mlp + [norm("input_layernorm", "mixer_norm"),
                          norm("post_attention_layernorm", "mlp_norm")]
    out.append(Tensor("model.norm.weight", ("final_norm", "scale"), "same"))
    if not cfg.tie_embeddings:
        out.append(Tensor("lm_head.weight", ("unembed",), "transpose"))
    return out


def leaf(params: dict, path: tuple) -> Any:
    """Our parameter at `path` (a Tensor's `part`) in a pure dict of parameters."""
    for key in path:
        params = params[key]
    return params


def hf_shape(t: Tensor, shape: tuple[int, ...]) -> tuple[int, ...]:
    """HF's shape of `t`, from our shape."""
    if t.layout == "same":
        return shape
    if t.layout == "transpose":
        return shape[::-1]
    return (shape[1], 1, shape[0])


def to_hf(t: Tensor, array: np.ndarray) -> np.ndarray:
    if t.layout == "same":
        return array
    if t.layout == "transpose":
        return array.T
    return array.T[:, None, :]  # [W, C] -> [C, 1, W]


def from_hf(t: Tensor, array: np.ndarray) -> np.ndarray:
    if t.layout == "same":
        return array
    if t.layout == "transpose":
        return array.T
    return array[:, 0, :].T
