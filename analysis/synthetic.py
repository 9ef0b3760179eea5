"""Synthetic result rows drawn from known Chinchilla laws, for tests, demos and the notebook.

Why: every estimator here (fit, bootstrap, savings, frontier) needs a case with a known
answer, and the analysis has to be runnable before the first GPU ladder finishes. The
rows have exactly the format `analysis.results` reads, with C = 6ND.

The default ladder mirrors the paper's recipe at small scale: sizes 20M-160M, WSD-S
decays ending at D/N = 10, 20, 40, 80. Noise is multiplicative (log-normal) per point,
plus an optional per-run offset that mimics seed-to-seed variation shared by all of a
run's decays (that shared part is why the bootstrap resamples whole runs).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

# Sizes a factor sqrt(2) apart, so that with D/N doubling C = 6 N^2 (D/N) lands on shared
# budgets for up to four sizes and IsoFLOP parabolas have something to fit.
DEFAULT_SIZES = tuple(20e6 * 2 ** (k / 2) for k in range(7))
DEFAULT_RATIOS = (10, 20, 40, 80)
VAL_SET = "c4_en"
# Roughly the transformer numbers the Olmo Hybrid paper reports (alpha, beta), with E, A,
# B in the range of Hoffmann et al.'s fit.
TRANSFORMER_LAW = {"E": 1.9, "A": 120.0, "B": 300.0, "alpha": 0.3, "beta": 0.28}


def law_with_savings(base: dict, savings: float) -> dict:
    """A law that needs `savings` times fewer tokens than `base` at every N and loss.

    With only B changed, D_base / D_new = (B_base / B_new)^(1/beta) exactly, so
    B_new = B_base / savings^beta.
    """
    return {**base, "B": base["B"] / savings ** base["beta"]}


def loss_of(law: dict, n_params, tokens):
    return law["E"] + law["A"] / np.asarray(n_params) ** law["alpha"] \
        + law["B"] / np.asarray(tokens) ** law["beta"]


def make_rows(laws: dict[str, dict], *, sizes=DEFAULT_SIZES, ratios=DEFAULT_RATIOS,
              noise: float = 0.005, run_noise: float = 0.0, seed: int = 0,
              val_sets=(VAL_SET,)) -> list[dict]:
    """One row per (family, size, D/N ratio); `noise` and `run_noise` are log-space SDs."""
    rng = np.random.default_rng(seed)
    rows = []
    for family in sorted(laws):
        law = laws[family]
        for n in sizes:
            run_id = f"{family}-{int(round(n / 1e6))}m-s{seed}"
            run_offset = rng.normal(0.0, run_noise) if run_noise > 0 else 0.0
            for ratio in ratios:
                d = int(round(ratio * n))
                true = float(loss_of(law, n, d))
                val = {}
                for k, name in enumerate(val_sets):
                    eps = rng.normal(0.0, noise) if noise > 0 else 0.0
                    loss = true * math.exp(run_offset + eps) * (1.0 + 0.02 * k)
                    val[name] = {"loss": loss, "bpb": loss / math.log(2) / 4.0}
                rows.append({
                    "run_id": run_id, "family": family, "size": f"{int(round(n / 1e6))}m",
                    "n_params": int(n),
                    "n_params_total": int(n) + 8_000_000, "tokens": d, "flops": 6.0 * n * d,
                    "val": val, "git_sha": "0" * 40, "versions": {"analysis": "synthetic"},
                    "device_kind": "synthetic", "true_loss": true,
                })
    return rows


def write_jsonl(rows, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return path


def two_family_rows(savings: float = 1.5, **kwargs) -> list[dict]:
    """Transformer vs a hybrid that is `savings` times more token-efficient (only B differs)."""
    return make_rows({"transformer": TRANSFORMER_LAW,
                      "hybrid": law_with_savings(TRANSFORMER_LAW, savings)}, **kwargs)
