"""Task registry. `get_task(name)` returns a task object; see each module for its definition."""

from __future__ import annotations

import difflib

from hybrid_jax.expressivity.tasks.base import PAD, VOCAB_SIZE, Batch, generate, sample
from hybrid_jax.expressivity.tasks.code_exec import CodeExec
from hybrid_jax.expressivity.tasks.counting import ModCount
from hybrid_jax.expressivity.tasks.mqar import MQAR
from hybrid_jax.expressivity.tasks.state_recall import StateRecall
from hybrid_jax.expressivity.tasks.word_problem import WordProblem

TASKS = {
    "parity": ModCount(2),
    "mod3": ModCount(3),
    "mod5": ModCount(5),
    "s3": WordProblem(3),
    "s5": WordProblem(5),
    "mqar": MQAR(),
    "state_recall": StateRecall(),
    "code": CodeExec(),
    # Positive-control variants (see suite.py's controls); not tasks of any suite.
    "s3_swaps": WordProblem(3, swaps_only=True),
    "s5_swaps": WordProblem(5, swaps_only=True),
}
assert all(t.vocab_size <= VOCAB_SIZE and t.name == n for n, t in TASKS.items())


def get_task(name: str):
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown task {name!r}{hint}; known: {sorted(TASKS)}")
    return TASKS[name]


__all__ = ["PAD", "VOCAB_SIZE", "Batch", "TASKS", "get_task", "generate", "sample"]
