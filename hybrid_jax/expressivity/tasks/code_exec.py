"""Code execution: straight-line programs over a few variables, printed as text tokens.

A program of n statements over variables a, b, c, ... (n_vars of them) is

    a = 3 ; b = 7 ; c = 0 ;         initialisation, one assignment per variable, in order
    <n statements>                  each drawn uniformly from
        x = d ;                     assign a digit
        x = y ;                     copy (y != x)
        swap x y ;                  swap (y != x)
        x += y ;                    add modulo 10 (y may equal x)
    ? x  ? y ...                    n_queries queries of uniformly drawn variables

Every statement is 4 tokens. The target sits on the variable token of each query: the final
value of that variable as a digit token. T = 4 (n_vars + n) + 2 n_queries.

Token ids: variables 1..n_vars, digits 5..14, "=" 15, "+=" 16, "swap" 17, ";" 18, "?" 19.
`render` prints a program as text (used by tests and for reading failures).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hybrid_jax.expressivity.tasks.base import check_length

VAR0, DIGIT0 = 1, 5
EQ, ADD, SWAP, SEMI, QUERY = 15, 16, 17, 18, 19
VAR_NAMES = "abcd"


@dataclasses.dataclass(frozen=True)
class CodeExec:
    n_vars: int = 3
    n_queries: int = 2

    def __post_init__(self) -> None:
        if not 2 <= self.n_vars <= len(VAR_NAMES):
            raise ValueError(f"n_vars must be in [2, {len(VAR_NAMES)}], got {self.n_vars}")
        if self.n_queries < 1:
            raise ValueError(f"n_queries must be >= 1, got {self.n_queries}")

    name = "code"
    vocab_size = QUERY + 1

    def token_length(self, length: int) -> int:
        return 4 * (self.n_vars + check_length(length)) + 2 * self.n_queries

    def example(self, rng: np.random.Generator, n: int):
        nv = self.n_vars
        env = list(rng.integers(0, 10, size=nv))
        toks: list[int] = []
        for v in range(nv):
            toks += [VAR0 + v, EQ, DIGIT0 + env[v], SEMI]
        kinds = rng.integers(0, 4, size=n)
        for kind in kinds:
            x = int(rng.integers(nv))
            if kind == 3:
                y = int(rng.integers(nv))
            else:
                y = int((x + 1 + rng.integers(nv - 1)) % nv)  # any variable but x
            if kind == 0:
                d = int(rng.integers(10))
                env[x] = d
                toks += [VAR0 + x, EQ, DIGIT0 + d, SEMI]
            elif kind == 1:
                env[x] = env[y]
                toks += [VAR0 + x, EQ, VAR0 + y, SEMI]
            elif kind == 2:
                env[x], env[y] = env[y], env[x]
                toks += [SWAP, VAR0 + x, VAR0 + y, SEMI]
            else:
                env[x] = (env[x] + env[y]) % 10
                toks += [VAR0 + x, ADD, VAR0 + y, SEMI]
        body = len(toks)
        queried = rng.integers(0, nv, size=self.n_queries)
        for q in queried:
            toks += [QUERY, VAR0 + int(q)]
        x = np.array(toks, np.int64)
        y = np.zeros(len(toks), np.int64)
        m = np.zeros(len(toks), bool)
        pos = body + 1 + 2 * np.arange(self.n_queries)
        y[pos] = [DIGIT0 + env[int(q)] for q in queried]
        m[pos] = True
        return x, y, m


def render(tokens) -> str:
    """Text of a (possibly padded) code-execution token sequence."""
    names = {EQ: "=", ADD: "+=", SWAP: "swap", SEMI: ";", QUERY: "?"}
    out = []
    for t in map(int, tokens):
        if t == 0:
            break
        if VAR0 <= t < VAR0 + len(VAR_NAMES):
            out.append(VAR_NAMES[t - VAR0])
        elif DIGIT0 <= t < DIGIT0 + 10:
            out.append(str(t - DIGIT0))
        else:
            out.append(names[t])
    return " ".join(out)
