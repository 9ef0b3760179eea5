"""State-based recall: track a group state and retrieve values written under a given state.

The exact definition implemented here (our own; see "Relation to the paper" below).

  Hidden state s_t in S_3 (6 states), s_0 = identity. The stream has n items; each is either
    * a generator token: one of the 3 transpositions tau of S_3; it updates s_t = tau o s_{t-1}
      (the convention of `groups.py`), or
    * a write token W_v, v in 0..9: it leaves the state unchanged (s_t = s_{t-1}) and stores
      value v under the current state s_t, overwriting any earlier value stored under s_t.
  Item kinds are drawn with probability 1/2 each; if no item is a write, the last item becomes one.
  Then come `n_queries` query tokens Q_s, each naming a state s drawn uniformly from the states
  that received at least one write. Target at a query: the value most recently written while
  the state was s (as the write token W_v). Only query positions are scored. T = n + n_queries.

  Token ids: generators 1..3, writes 4..13, queries 14..19.

Why both abilities are needed: the answer to Q_s depends on which write positions had state s,
which is the S_3 word problem on the prefix (state tracking), and on retrieving the value at
the last such position among up to n items (associative recall keyed by a computed state).

Relation to the paper. arXiv 2604.03444 states (docs/paper.md) that one GDN layer with
negative eigenvalues followed by one attention layer solves state-based recall, which neither
pure family can. We could not read the theorem's text on this machine (no network), so the
definition above is ours, built to match that summary: the generators are transpositions, which
act on R^3 as reflections I - 2 u u^T (u = (e_i - e_j)/sqrt 2), i.e. GDN transitions with unit
k = u, beta -> 2 and decay -> 1 (limits of the open ranges). A GDN layer whose state holds
w v^T, for a w with distinct coordinates written at the first token, holds (s_t w) v^T after
the generators, and s_t w determines s_t; so one GDN layer with beta in (0, 2) can expose the
state at every position, and one attention layer can then match Q_s against the states at the
write positions and pick the most recent match. A transformer must compute S_3 states positionally (possible in TC0 for
a solvable group, but only with depth and width that grow with the shortcut), and a GDN with
beta in (0, 1) cannot realise the reflections at all; a pure GDN stack with beta in (0, 2) can
track the state but must store up to 6 state-value associations in a fixed-size state.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hybrid_jax.expressivity.tasks.base import check_length
from hybrid_jax.expressivity.tasks.groups import symmetric_group, transpositions

N_VALUES = 10
GEN0, WRITE0 = 1, 4
QUERY0 = WRITE0 + N_VALUES


@dataclasses.dataclass(frozen=True)
class StateRecall:
    n_queries: int = 4

    def __post_init__(self) -> None:
        if self.n_queries < 1:
            raise ValueError(f"n_queries must be >= 1, got {self.n_queries}")

    name = "state_recall"
    vocab_size = QUERY0 + 6

    def token_length(self, length: int) -> int:
        return check_length(length) + self.n_queries

    def example(self, rng: np.random.Generator, n: int):
        _, table = symmetric_group(3)
        gens = transpositions(3)
        is_write = rng.random(n) < 0.5
        if not is_write.any():
            is_write[-1] = True
        gen_choice = rng.integers(0, len(gens), size=n)
        values = rng.integers(0, N_VALUES, size=n)
        x = np.empty(n + self.n_queries, np.int64)
        y = np.zeros(n + self.n_queries, np.int64)
        m = np.zeros(n + self.n_queries, bool)
        state, last = 0, {}
        for t in range(n):
            if is_write[t]:
                last[state] = values[t]
                x[t] = WRITE0 + values[t]
            else:
                state = table[state, gens[gen_choice[t]]]
                x[t] = GEN0 + gen_choice[t]
        written = np.array(sorted(last))
        for j, s in enumerate(rng.choice(written, size=self.n_queries)):
            x[n + j] = QUERY0 + s
            y[n + j] = WRITE0 + last[int(s)]
            m[n + j] = True
        return x, y, m
