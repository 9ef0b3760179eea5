"""The ladder recipe the paper used: OLMo-core's WSD-S Chinchilla configurator
(docs/scaling-recipe.md).

For a model of N non-embedding parameters (hybrid_jax.flops.param_count(cfg).non_embedding):

    batch   = 327,680 (N / 108M)^(2/3) tokens, rounded to whole sequences (below)
    lr      = 0.00235 (N / 108M)^(-1/3)
    AdamW weight decay 0.1;  beta2 = 0.95 if batch >= 524,288 tokens else 0.99
    warmup  = N tokens
    WSD-S:  one decay of 10% of each phase, bottoming out at D = ratio x N for each D/N ratio

Rounding, so that every number the schedule sees is exact:

* batch: sequences = max(dp, dp * round(batch_tokens / (seq_len * dp))), dp = `data_parallel`,
  i.e. the nearest multiple of dp whole sequences, at least one sequence per data-parallel
  device. dp is a ladder setting, not the device count of the machine that runs it, so a run's
  identity (and its batch) does not change with the machine. The beta2 threshold is applied to
  the rounded batch, the batch actually trained.
* decay points: D_i = max(1, round(ratio_i N / batch)) whole steps of the rounded batch, so a
  scaling point lands exactly on a step and its token count is D_i (what the result row says).
* warmup: N tokens; the schedule rounds it to steps.

Every field of `Recipe` can be overridden per ladder, per family or per size (`recipe:` in the
ladder YAML); `lr`, `batch_tokens`, `b2` and `warmup_tokens` replace the formula outright.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hybrid_jax.config import ConfigError


@dataclasses.dataclass(frozen=True)
class Recipe:
    n_ref: float = 108e6
    batch_ref_tokens: float = 327_680
    batch_exponent: float = 2 / 3
    lr_ref: float = 0.00235
    lr_exponent: float = -1 / 3
    weight_decay: float = 0.1
    b1: float = 0.9
    b2_small_batch: float = 0.99
    b2_large_batch: float = 0.95
    b2_batch_threshold: int = 524_288      # tokens; batch >= threshold takes b2_large_batch
    warmup_tokens_per_param: float = 1.0
    decay_fraction: float = 0.1
    final_lr_ratio: float = 0.0
    data_parallel: int = 1                 # batch rounded to a multiple of this many sequences
    # Explicit values that replace the formulas (None: use the formula).
    lr: float | None = None
    batch_tokens: int | None = None
    b2: float | None = None
    warmup_tokens: int | None = None

    def __post_init__(self):
        for name in ("n_ref", "batch_ref_tokens", "lr_ref", "decay_fraction"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"recipe.{name}: must be > 0, got {getattr(self, name)!r}")
        if not isinstance(self.data_parallel, int) or self.data_parallel < 1:
            raise ConfigError(f"recipe.data_parallel: must be a positive integer, "
                              f"got {self.data_parallel!r}")
        if not 0 < self.decay_fraction <= 1:
            raise ConfigError(f"recipe.decay_fraction: must be in (0, 1], "
                              f"got {self.decay_fraction}")

    def replace(self, **changes: Any) -> "Recipe":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class Hyper:
    """The recipe's numbers for one model: what goes into a RunConfig."""

    n_params: int
    seq_len: int
    batch_sequences: int
    lr: float
    b1: float
    b2: float
    weight_decay: float
    warmup_tokens: int
    ratios: tuple[float, ...]
    decay_tokens: tuple[int, ...]
    decay_fraction: float
    final_lr_ratio: float

    @property
    def batch_tokens(self) -> int:
        return self.batch_sequences * self.seq_len

    @property
    def steps(self) -> tuple[int, ...]:
        return tuple(d // self.batch_tokens for d in self.decay_tokens)

    def run_sections(self) -> dict[str, dict[str, Any]]:
        """RunConfig sections (as nested dicts) that the recipe sets."""
        return {
            "train": {"global_batch": self.batch_sequences, "seq_len": self.seq_len},
            "optim": {"lr": self.lr, "b1": self.b1, "b2": self.b2,
                      "weight_decay": self.weight_decay},
            "schedule": {"kind": "wsds", "warmup_tokens": self.warmup_tokens,
                         "decay_fraction": self.decay_fraction,
                         "decay_tokens": list(self.decay_tokens),
                         "final_lr_ratio": self.final_lr_ratio},
        }


def batch_sequences(batch_tokens: float, seq_len: int, data_parallel: int = 1) -> int:
    """Whole sequences nearest to batch_tokens, a multiple of data_parallel, at least dp."""
    dp = data_parallel
    return max(dp, dp * round(batch_tokens / (seq_len * dp)))


def resolve(recipe: Recipe, n_params: int, seq_len: int, ratios: tuple[float, ...] | list[float]
            ) -> Hyper:
    """The recipe's hyperparameters for N = n_params at sequence length seq_len, with WSD-S
    decays bottoming out at D/N = ratios. Raises ConfigError where the numbers cannot work."""
    if n_params <= 0 or seq_len <= 0:
        raise ConfigError(f"recipe: n_params and seq_len must be > 0, got {n_params}, {seq_len}")
    ratios = tuple(float(r) for r in ratios)
    if not ratios or any(b <= a for a, b in zip((0.0,) + ratios, ratios)):
        raise ConfigError(f"decay_ratios: must be positive and strictly increasing, got "
                          f"{list(ratios)}")
    scale = n_params / recipe.n_ref
    batch = (recipe.batch_tokens if recipe.batch_tokens is not None
             else recipe.batch_ref_tokens * scale ** recipe.batch_exponent)
    seqs = batch_sequences(batch, seq_len, recipe.data_parallel)
    batch_tokens = seqs * seq_len
    lr = recipe.lr if recipe.lr is not None else recipe.lr_ref * scale ** recipe.lr_exponent
    if recipe.b2 is not None:
        b2 = recipe.b2
    else:
        b2 = (recipe.b2_large_batch if batch_tokens >= recipe.b2_batch_threshold
              else recipe.b2_small_batch)
    warmup = (recipe.warmup_tokens if recipe.warmup_tokens is not None
              else round(recipe.warmup_tokens_per_param * n_params))
    steps = tuple(max(1, round(r * n_params / batch_tokens)) for r in ratios)
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ConfigError(f"decay_ratios {list(ratios)} are {list(steps)} steps of "
                          f"{batch_tokens} tokens at N={n_params:,}; two points fall on one step")
    # The warmup must end before the first decay starts (the schedule's own rule).
    first_decay = steps[0] - max(1, round(recipe.decay_fraction * steps[0]))
    warmup_steps = round(warmup / batch_tokens)
    if warmup_steps > first_decay:
        raise ConfigError(f"recipe: the warmup ({warmup_steps} steps of {batch_tokens} tokens) "
                          f"runs past the start of the first decay (step {first_decay}); the "
                          f"first D/N ratio {ratios[0]} is too small for this warmup")
    return Hyper(n_params=n_params, seq_len=seq_len, batch_sequences=seqs, lr=lr, b1=recipe.b1,
                 b2=b2, weight_decay=recipe.weight_decay, warmup_tokens=warmup, ratios=ratios,
                 decay_tokens=tuple(s * batch_tokens for s in steps),
                 decay_fraction=recipe.decay_fraction, final_lr_ratio=recipe.final_lr_ratio)


def describe(h: Hyper) -> str:
    return (f"N={h.n_params:,} batch={h.batch_sequences}x{h.seq_len}={h.batch_tokens:,} "
            f"lr={h.lr:.4g} b2={h.b2} warmup={h.warmup_tokens:,} D={list(h.decay_tokens)}")

