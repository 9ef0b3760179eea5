"""`hybrid-jax generate CHECKPOINT --prompt TEXT [--prompt TEXT ...]`: complete prompts.

    hybrid-jax generate RUN_DIR --prompt "def main(" --max-new-tokens 64
    hybrid-jax generate MODEL_DIR --prompt "Once" --temperature 0.8 --top-p 0.95 --seed 1

Greedy unless --temperature > 0. Each completion is printed after its prompt; --json prints one
JSON object per prompt instead. Exit codes: 0 done, 2 refused (bad input: nothing generated).
"""

from __future__ import annotations

import argparse
import json
import sys


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hybrid-jax generate", description=(
        "Complete prompts with a checkpoint: decoding with per-layer caches, greedy by default, "
        "stopping at EOS or --max-new-tokens."))
    p.add_argument("checkpoint", help="run dir, RUN/checkpoints/STEP or model dir (local or "
                   "gs://)")
    p.add_argument("--prompt", action="append", required=True, help="repeat for a batch")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=0, help="0 keeps every token")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", help="byte | hf:PATH | MODEL_FILE (default: the run's own)")
    p.add_argument("--mesh", help="DATA,FSDP,TENSOR sizes over the local devices (one may be "
                   "-1), e.g. -1,1,1: rows split over devices. Default: one device")
    p.add_argument("--json", action="store_true", help="one JSON object per prompt")
    return p


def parse_mesh(text: str | None):
    if text is None:
        return None
    from hybrid_jax.sharding import make_mesh
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ValueError(f"--mesh {text!r}: expected three ints DATA,FSDP,TENSOR") from None
    if len(shape) != 3:
        raise ValueError(f"--mesh {text!r}: expected three ints DATA,FSDP,TENSOR")
    return make_mesh(shape)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from hybrid_jax.generate.api import generate
    from hybrid_jax.generate.loading import LoadError, load_checkpoint
    from hybrid_jax.generate.sampling import Sampling

    try:
        sampling = Sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                            seed=args.seed)
        if args.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
        mesh = parse_mesh(args.mesh)
        model, tokenizer, _ = load_checkpoint(args.checkpoint, args.tokenizer, mesh=mesh)
        completions = generate(model, tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
                               sampling=sampling, mesh=mesh)
    except (LoadError, ValueError) as e:
        print(f"hybrid-jax generate: refused: {e}", file=sys.stderr)
        return 2
    for prompt, c in zip(args.prompt, completions):
        if args.json:
            print(json.dumps({"prompt": prompt, "completion": c.text, "tokens": c.tokens,
                              "stop": c.stop}))
        else:
            print(f"{prompt}{c.text}\n[{len(c.tokens)} tokens, stop: {c.stop}]")
    return 0
