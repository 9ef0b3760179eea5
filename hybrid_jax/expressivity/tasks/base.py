"""What every task provides, and the padding rule shared by all of them.

A task maps (seed, length) to a Batch of int32 inputs [B, T], int32 targets [B, T] and a bool
loss mask [B, T]. `length` is the task's own size unit (bits, permutations, key-value pairs,
stream items, statements); `token_length(length)` is the T it occupies. Token 0 is PAD in every
task; a batch whose examples are shorter than the batch's `length` is right-padded with PAD,
target 0 and mask False, which a causal model cannot see from earlier positions.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

PAD = 0
# One vocabulary for every task, so a model's parameter count does not depend on the task.
VOCAB_SIZE = 160


@dataclasses.dataclass(frozen=True)
class Batch:
    inputs: np.ndarray   # [B, T] int32
    targets: np.ndarray  # [B, T] int32
    mask: np.ndarray     # [B, T] bool

    def __post_init__(self) -> None:
        assert self.inputs.shape == self.targets.shape == self.mask.shape, (
            self.inputs.shape, self.targets.shape, self.mask.shape)


class Task(Protocol):
    name: str
    vocab_size: int  # tokens used by inputs and targets are < vocab_size <= VOCAB_SIZE

    def token_length(self, length: int) -> int: ...

    def example(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One unpadded example of size n: (inputs [T_n], targets [T_n], mask [T_n])."""
        ...


def check_length(length: int, what: str = "length") -> int:
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length <= 0:
        raise ValueError(f"{what} must be a positive integer, got {length!r}")
    return int(length)


def sample(task: Task, rng: np.random.Generator, batch: int, length: int,
           *, min_length: int | None = None) -> Batch:
    """`batch` examples, each of size drawn uniformly from [min_length, length] (all of size
    `length` when min_length is None), right-padded to task.token_length(length)."""
    length = check_length(length)
    check_length(batch, "batch")
    lo = length if min_length is None else check_length(min_length, "min_length")
    if lo > length:
        raise ValueError(f"min_length={lo} exceeds length={length}")
    T = task.token_length(length)
    inputs = np.full((batch, T), PAD, np.int32)
    targets = np.full((batch, T), PAD, np.int32)
    mask = np.zeros((batch, T), bool)
    sizes = rng.integers(lo, length + 1, size=batch)
    for b, n in enumerate(sizes):
        x, y, m = task.example(rng, int(n))
        inputs[b, :len(x)], targets[b, :len(y)], mask[b, :len(m)] = x, y, m
    return Batch(inputs, targets, mask)


def generate(task: Task, seed: int, length: int, *, batch: int = 1,
             min_length: int | None = None) -> Batch:
    """Deterministic in (task parameters, seed, length, batch, min_length)."""
    return sample(task, np.random.default_rng(seed), batch, length, min_length=min_length)
