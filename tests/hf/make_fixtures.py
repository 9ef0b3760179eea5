"""Write the Hugging Face golden fixtures that tests/hf/test_hf_fixtures.py reads.

Run once where torch and transformers (>= 5.17, which has olmo_hybrid) are installed; the
CI test itself needs neither:

    python tests/hf/make_fixtures.py [--out tests/hf/fixtures]

For each case: a small random transformers model saved with save_pretrained (config.json and
model.safetensors, fp32), input ids, and transformers' own fp32 logits for them
(`golden.npz`). The cases cover what our import must get right: T = 150 (not a multiple of
the chunk size 64), a sliding window (32) shorter than T, GQA, more GDN value heads than key
heads, RoPE and no RoPE, and depths whose layer types are not a repeat of four. Also writes
reference_configs.json: transformers' default OlmoHybridConfig and Olmo3Config, for the
preset tests. Weights are drawn with initializer_range 0.08 so that a wrong layout moves the
logits well past the tolerance.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import (Olmo3Config, Olmo3ForCausalLM, OlmoHybridConfig,
                          OlmoHybridForCausalLM)

T, BATCH, VOCAB = 150, 2, 96
COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, initializer_range=0.08,
              pad_token_id=0, eos_token_id=1, tie_word_embeddings=False)
CASES = {
    # Olmo 3: GQA (4 query heads, 2 kv), window 32 < T, 5 layers (HF's default types end on a
    # sliding layer, where OLMo-core's pattern would force full attention), RoPE theta 1e4.
    "olmo3_gqa_window": (Olmo3Config, Olmo3ForCausalLM, dict(
        num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=2, sliding_window=32,
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                         "full_attention": {"rope_type": "default", "rope_theta": 1e4}})),
    # Olmo Hybrid with RoPE in its attention layers (as pretrained), GQA, and 4 GDN value
    # heads on 2 key heads.
    "olmo_hybrid_rope_gva": (OlmoHybridConfig, OlmoHybridForCausalLM, dict(
        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
        linear_value_head_dim=32, rope_parameters={"rope_type": "default", "rope_theta": 1e4})),
    # Olmo Hybrid as released: no RoPE, which its config says as rope_theta null (a missing
    # rope_parameters makes transformers fill in RoPE at theta 1e4); 6 layers, so HF's default
    # types are GGGAGG.
    "olmo_hybrid_nope": (OlmoHybridConfig, OlmoHybridForCausalLM, dict(
        num_hidden_layers=6, num_attention_heads=4, linear_key_head_dim=8,
        linear_value_head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": None})),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "fixtures")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (name, (config_cls, model_cls, fields)) in enumerate(CASES.items()):
        torch.manual_seed(i)
        model = model_cls(config_cls(**COMMON, **fields)).float().eval()
        with torch.no_grad():  # GDN parameters HF draws outside initializer_range
            for layer in model.model.layers:
                if hasattr(layer, "linear_attn"):
                    layer.linear_attn.o_norm.weight.uniform_(0.5, 1.5)
                    layer.linear_attn.conv1d.weight.normal_(0.0, 0.3)
        ids = torch.randint(2, VOCAB, (BATCH, T), generator=torch.Generator().manual_seed(i))
        with torch.no_grad():
            logits = model(input_ids=ids).logits.float().numpy()
        case = args.out / name
        model.save_pretrained(case, safe_serialization=True)
        np.savez_compressed(case / "golden.npz", input_ids=ids.numpy().astype(np.int32),
                            logits=logits)
        size = sum(f.stat().st_size for f in case.iterdir())
        print(f"{name}: logits {logits.shape}, std {logits.std():.3f}, {size / 1e3:.0f} kB")
    reference = {"transformers": transformers.__version__,
                 "OlmoHybridConfig": OlmoHybridConfig().to_dict(),
                 "Olmo3Config(vocab_size=100352)": Olmo3Config(vocab_size=100352).to_dict()}
    (args.out / "reference_configs.json").write_text(json.dumps(reference, indent=1,
                                                                sort_keys=True) + "\n")
    total = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"total {total / 1e6:.2f} MB in {args.out}")


if __name__ == "__main__":
    main()
