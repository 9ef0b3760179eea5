"""Cached decoding per family: prefill time, per-token decode time, and agreement with the full
forward, on randomly initialised presets.

    python benchmarks/decode.py [--size 190m] [--batch 8] [--prompt 2048[,8192,...]]
        [--new 128] [--dtype bfloat16] [--out benchmarks/results/decode.json]

For each family: the Decoder (hybrid_jax.generate.api) is compiled once, then timed over a
greedy generation of --new tokens after a --prompt-token prompt (prefill and steps timed
separately, after a warm-up call), at each --prompt length, with the bytes its caches hold
(KV and ring caches grow with the context, GDN states do not). Agreement: teacher-forced decoding of the first 32 generated
positions against the full forward's logits over prompt + generated tokens, as the largest
absolute logit difference relative to the largest logit. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hybrid_jax.generate.api import Decoder
from hybrid_jax.generate.decode import decode_step, prefill, prefill_last
from hybrid_jax.models.lm import build_model
from hybrid_jax.presets import get_preset


def agreement(model, tokens_BT: np.ndarray, prompt: int, n: int) -> float:
    graphdef, state = nnx.split(model)
    full = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))(state, jnp.asarray(tokens_BT))
    B, T = tokens_BT.shape
    lengths = jnp.full((B,), prompt, jnp.int32)
    pf = jax.jit(lambda s, t, n: prefill(nnx.merge(graphdef, s), t, n, T))
    step = jax.jit(lambda s, t, p, c: decode_step(nnx.merge(graphdef, s), t, p, c))
    _, caches = pf(state, jnp.asarray(tokens_BT[:, :prompt]), lengths)
    worst, scale = 0.0, float(jnp.max(jnp.abs(full)))
    for i in range(n):
        pos = prompt + i
        out, caches = step(state, jnp.asarray(tokens_BT[:, pos]), jnp.full((B,), pos), caches)
        worst = max(worst, float(jnp.max(jnp.abs(out - full[:, pos]))))
    return worst / scale


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="190m")
    p.add_argument("--families", default="transformer,hybrid,gdn")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt", default="2048", help="prompt length(s), comma-separated")
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--out", default="benchmarks/results/decode.json")
    args = p.parse_args()
    rows = []
    for family in args.families.split(","):
        cfg = get_preset(f"{family}_{args.size}", compute_dtype=args.dtype,
                         vocab_size=args.vocab)
        model = build_model(cfg, seed=0)
        for prompt in [int(n) for n in args.prompt.split(",")]:
            rows.append(measure(model, cfg, family, prompt, args))
    doc = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
           "device": jax.devices()[0].device_kind, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.out}")


def cache_bytes(model, batch: int, prompt: int, cache_len: int) -> int:
    """Bytes of every layer's cache after a prefill (shapes only: nothing is computed)."""
    graphdef, state = nnx.split(model)
    shapes = jax.eval_shape(
        lambda s: prefill_last(nnx.merge(graphdef, s), jnp.zeros((batch, prompt), jnp.int32),
                               jnp.full((batch,), prompt, jnp.int32), cache_len)[1], state)
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))


def measure(model, cfg, family: str, prompt: int, args) -> dict:
    decoder = Decoder(model)
    rng = np.random.default_rng(0)
    prompts = rng.integers(2, cfg.vocab_size, (args.batch, prompt)).tolist()
    eos = -1  # never produced: every row runs all --new tokens
    decoder.decode(prompts, max_new_tokens=args.new, eos_id=eos)  # compile both shapes
    decoder.decode(prompts, max_new_tokens=1, eos_id=eos)
    t0 = time.perf_counter()
    decoder.decode(prompts, max_new_tokens=1, eos_id=eos)
    t_prefill = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = decoder.decode(prompts, max_new_tokens=args.new, eos_id=eos)
    t_all = time.perf_counter() - t0
    per_token = (t_all - t_prefill) / (args.new - 1)
    gen = np.array([toks for toks, _ in out])
    seq = np.concatenate([np.array(prompts), gen], axis=1)[:, :prompt + 32 + 1]
    rel = agreement(model, seq, prompt, min(32, args.new - 1))
    cache = cache_bytes(model, args.batch, prompt, prompt + args.new)
    print(f"{family:12s} prompt {prompt:6d}  prefill {t_prefill * 1e3:8.1f} ms  decode "
          f"{per_token * 1e3:7.2f} ms/token  {args.batch / per_token:9.1f} tok/s  cache "
          f"{cache / 2**20:9.1f} MiB  cached vs full {rel:.2e}")
    return {"family": family, "preset": f"{family}_{args.size}", "dtype": args.dtype,
            "batch": args.batch, "prompt": prompt, "new": args.new,
            "prefill_s": round(t_prefill, 4), "decode_ms_per_token": round(1e3 * per_token, 3),
            "tokens_per_s": round(args.batch / per_token, 1), "cache_bytes": cache,
            "max_rel_logit_diff": rel}


if __name__ == "__main__":
    main()
