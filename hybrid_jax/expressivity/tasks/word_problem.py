"""Word problems of the symmetric groups S_5 (non-solvable) and S_3 (solvable contrast).

Input: n permutations g_1..g_n, each as token 1 + its index in `groups.symmetric_group(k)`.
Target at every position t: the running product p_t = g_t o ... o g_1 (apply g_1 first), as
token 1 + its index.

Theory: the S_5 word problem is NC1-complete, so constant-depth transformers (TC0) cannot solve
it at arbitrary length unless TC0 = NC1 (Merrill, Petty & Sabharwal 2024). S_3 is solvable, so
its word problem is in TC0. A GDN layer with beta in (0, 2) realises one reflection per token;
a general permutation of S_5 is a product of up to 4 transpositions, so exact tracking with
arbitrary generators needs several layers (or several Householder factors per token).

`swaps_only=True` draws every input from the transpositions alone (tasks "s3_swaps",
"s5_swaps"): each input then acts on R^k as one reflection I - 2 u u^T, so a single GDN layer
with beta in (0, 2) can track the running product exactly at any length (beta -> 2, decay -> 1).
The suite uses these as positive controls of the word-problem pipeline, not as results.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from hybrid_jax.expressivity.tasks.base import check_length
from hybrid_jax.expressivity.tasks.groups import running_products, symmetric_group, transpositions


@dataclasses.dataclass(frozen=True)
class WordProblem:
    degree: int = 5
    swaps_only: bool = False

    def __post_init__(self) -> None:
        if not 2 <= self.degree <= 5:
            raise ValueError(f"degree must be in [2, 5], got {self.degree}")

    @property
    def name(self) -> str:
        return f"s{self.degree}" + ("_swaps" if self.swaps_only else "")

    @property
    def vocab_size(self) -> int:
        return 1 + math.factorial(self.degree)

    def token_length(self, length: int) -> int:
        return check_length(length)

    def example(self, rng: np.random.Generator, n: int):
        _, table = symmetric_group(self.degree)
        if self.swaps_only:
            swaps = transpositions(self.degree)
            elems = swaps[rng.integers(0, len(swaps), size=n)]
        else:
            elems = rng.integers(0, len(table), size=n)
        return elems + 1, running_products(table, elems) + 1, np.ones(n, bool)
