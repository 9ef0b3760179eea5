"""A sweep's state under its root, a local directory or gs://bucket/... (run claims:
storage/claims.py; result rows: storage/results.py).

    {root}/results.d/             one object per row, unique by (run_id, tokens): the rows
    {root}/results.jsonl          every row, one JSON line each: an export of results.d for
                                  `hybrid-jax fit`, rewritten by each runner after each
                                  completed run and when it stops
    {root}/runs/{run_id}/         the training run directory (hybrid_jax.train) plus:
        spec.json                 the run's ladder entry and resolved config
        lock                      the claim (storage/claims.py): host, pids, heartbeat time
        attempts.jsonl            events: an attempt's start and exit (runner, worker, exit code,
                                  error), its training summary, and resets of its failures
        done.json                 the run completed and its rows are in results.d
        failed.json               retries exhausted or refused; the last traceback
        last_error.json           written by a worker that raised (the runner collects it)
        worker.log                the workers' stdout and stderr (on a gs:// root: written on
                                  the runner's host, and appended to this object when the
                                  attempt ends)

Every write is one of storage.objects' operations, so a local root and a gs:// root behave the
same: markers are whole-file atomic writes, attempts.jsonl takes appends (a conditional rewrite
on gs://: the log is a few lines per attempt), result rows are created if absent.
"""

from __future__ import annotations

import json
import os
from typing import Any

from hybrid_jax.procs import HOST  # noqa: F401 (re-exported)
from hybrid_jax.storage import objects
from hybrid_jax.storage.paths import read_text_or_none, write_text_atomic


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Atomic: a reader sees the old file or the whole new one."""
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def read_json(path: str | os.PathLike) -> Any | None:
    text = read_text_or_none(path)
    try:
        return None if text is None else json.loads(text)
    except json.JSONDecodeError:
        return None


def append_line(path: str | os.PathLike, record: dict) -> None:
    objects.append(path, (json.dumps(record) + "\n").encode())


def read_lines(path: str | os.PathLike) -> list[dict]:
    text = read_text_or_none(path)
    out = []
    for line in (text or "").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    return out

