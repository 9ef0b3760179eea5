"""Permutation groups S_n as index tables: element i is the tuple PERMS[i] (a bijection of
{0..n-1}, listed in itertools order, so index 0 is the identity).

Composition convention used by every word-problem task: the running product after reading
g_1 ... g_t is p_t = g_t o ... o g_1, i.e. apply g_1 first:  p_t(x) = g_t(p_{t-1}(x)).
"""

from __future__ import annotations

import functools
import itertools

import numpy as np


@functools.lru_cache(maxsize=None)
def symmetric_group(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(perms [n!, n], table [n!, n!]) with table[a, b] = index of (b o a) = "a, then b"."""
    perms = np.array(list(itertools.permutations(range(n))), dtype=np.int64)
    index = {tuple(p): i for i, p in enumerate(perms)}
    table = np.empty((len(perms), len(perms)), np.int64)
    for a, pa in enumerate(perms):
        for b, pb in enumerate(perms):
            table[a, b] = index[tuple(pb[pa])]
    return perms, table


def running_products(table: np.ndarray, elems: np.ndarray) -> np.ndarray:
    """Indices of p_1..p_t for a sequence of element indices (p_0 = identity = 0)."""
    out = np.empty(len(elems), np.int64)
    p = 0
    for t, g in enumerate(elems):
        p = table[p, g]
        out[t] = p
    return out


def transpositions(n: int) -> np.ndarray:
    """Indices of the n(n-1)/2 transpositions of S_n (each is a reflection of R^n)."""
    perms, _ = symmetric_group(n)
    moved = (perms != np.arange(n)).sum(axis=1)
    return np.flatnonzero(moved == 2)
