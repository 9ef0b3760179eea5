"""Parity and modular counting of a bit stream (the word problems of Z_2, Z_3, Z_5).

Input: bits b_1..b_n as tokens 1 (bit 0) and 2 (bit 1). Target at every position t: the number
of ones in b_1..b_t modulo m, as token 1 + count. Parity is m = 2.

Theory: a linear RNN whose state-transition eigenvalues are all in [0, 1] cannot do parity at
arbitrary length (Grazzi et al., ICLR 2025); GDN with beta in (0, 2) has a transition
eigenvalue 1 - beta in (-1, 1), and beta = 2 gives a reflection, which flips a sign per one-bit.
Counting mod 3 or 5 needs a rotation of order 3 or 5: one reflection per token per layer cannot
produce it in one layer, but products of reflections across layers can (Grazzi et al. show
stacked layers of generalised Householder transitions reach every regular language).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hybrid_jax.expressivity.tasks.base import check_length


@dataclasses.dataclass(frozen=True)
class ModCount:
    modulus: int = 2

    def __post_init__(self) -> None:
        if self.modulus < 2:
            raise ValueError(f"modulus must be >= 2, got {self.modulus}")

    @property
    def name(self) -> str:
        return "parity" if self.modulus == 2 else f"mod{self.modulus}"

    @property
    def vocab_size(self) -> int:
        return 1 + max(2, self.modulus)

    def token_length(self, length: int) -> int:
        return check_length(length)

    def example(self, rng: np.random.Generator, n: int):
        bits = rng.integers(0, 2, size=n)
        counts = np.cumsum(bits) % self.modulus
        return bits + 1, counts + 1, np.ones(n, bool)
