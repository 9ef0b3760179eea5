"""Multi-query associative recall (Arora et al. 2024, "Zoology"), as a transduction.

Input for n pairs: k_1 v_1 k_2 v_2 ... k_n v_n, then the n keys again in a random order.
Keys are distinct draws from `n_keys` key tokens (1..n_keys); values are independent draws from
`n_values` value tokens (n_keys+1 .. n_keys+n_values). Target at each query position: the value
paired with that key. T = 3n. `length` is the number of pairs, so evaluating at 2L and 4L both
lengthens the sequence and doubles the number of keys to hold.

Expectation: attention retrieves exactly at any number of keys; a linear RNN's fixed-size state
(per head K x V) degrades as the number of keys grows past what it can store without
interference.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hybrid_jax.expressivity.tasks.base import check_length


@dataclasses.dataclass(frozen=True)
class MQAR:
    n_keys: int = 64
    n_values: int = 64

    def __post_init__(self) -> None:
        if self.n_keys < 1 or self.n_values < 1:
            raise ValueError(f"n_keys and n_values must be >= 1, got {self.n_keys}, {self.n_values}")

    name = "mqar"

    @property
    def vocab_size(self) -> int:
        return 1 + self.n_keys + self.n_values

    def token_length(self, length: int) -> int:
        length = check_length(length)
        if length > self.n_keys:
            raise ValueError(f"mqar: {length} pairs need distinct keys, but n_keys={self.n_keys}")
        return 3 * length

    def example(self, rng: np.random.Generator, n: int):
        keys = rng.choice(self.n_keys, size=n, replace=False) + 1
        values = rng.integers(0, self.n_values, size=n) + 1 + self.n_keys
        order = rng.permutation(n)
        x = np.concatenate([np.stack([keys, values], 1).reshape(-1), keys[order]])
        y = np.zeros(3 * n, np.int64)
        y[2 * n:] = values[order]
        m = np.zeros(3 * n, bool)
        m[2 * n:] = True
        return x, y, m
