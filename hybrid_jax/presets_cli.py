"""`hybrid-jax models`: every preset with its exact parameter and FLOP counts."""

from __future__ import annotations

import argparse
import json

from hybrid_jax.flops import forward_flops_per_token, param_count
from hybrid_jax.presets import PRESETS, get_preset


def preset_table(seq_len: int) -> list[dict]:
    rows = []
    for name in PRESETS:
        cfg = get_preset(name)
        pc = param_count(cfg)
        rows.append(dict(preset=name, family=cfg.family, layers=cfg.n_layers, d_model=cfg.d_model,
                         pattern="".join(cfg.layer_types), params_total=pc.total,
                         params_non_embedding=pc.non_embedding,
                         fwd_flops_per_token=forward_flops_per_token(cfg, seq_len)))
    return rows


def format_table(rows: list[dict], seq_len: int) -> str:
    head = (f"{'preset':<18}{'family':<12}{'L':>3}{'D':>6}{'N total':>10}{'N non-emb':>11}"
            f"{f'fwd GFLOP/tok @T={seq_len}':>24}{'6N GFLOP/tok':>14}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['preset']:<18}{r['family']:<12}{r['layers']:>3}{r['d_model']:>6}"
                     f"{r['params_total'] / 1e6:>9.1f}M{r['params_non_embedding'] / 1e6:>10.1f}M"
                     f"{r['fwd_flops_per_token'] / 1e9:>24.3f}"
                     f"{6 * r['params_non_embedding'] / 1e9:>14.3f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hybrid-jax models", description=__doc__)
    parser.add_argument("--seq-len", type=int, default=8192)
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args(argv)
    rows = preset_table(args.seq_len)
    print(json.dumps(rows, indent=1) if args.json else format_table(rows, args.seq_len))
    return 0
