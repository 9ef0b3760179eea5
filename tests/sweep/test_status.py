"""`sweep status` without training: rows counted as `sweep run` will keep them (a torn last line
of results.jsonl is not a row), done runs' missing rows and the command that restores them, and
tries counted from start events."""

import json

import pytest

from hybrid_jax.sweep import cli
from hybrid_jax.sweep.ladder import load_ladder
from hybrid_jax.sweep.runner import Sweep
from hybrid_jax.sweep.state import append_line, write_json

from tests.helpers.sweeps import micro_ladder


def row(run_id, tokens):
    return {"run_id": run_id, "tokens": tokens, "loss": 1.0}


def line(r):
    return json.dumps(r, sort_keys=True) + "\n"


@pytest.mark.parametrize("cut", ["mid-row", "before-newline"])
def test_torn_results_line_shows_missing_rows_and_the_repair(tmp_path, capsys, cut):
    ladder = micro_ladder(tmp_path / "l.yaml", tmp_path / "store")
    sweep = Sweep(load_ladder(ladder), tmp_path / "root")
    a, b = (s.run_id for s in sweep.runs)
    for spec in sweep.runs:
        spec.run_dir.mkdir(parents=True)
        write_json(spec.run_dir / "done.json", {"run_id": spec.run_id,
                                                "rows": [row(spec.run_id, 10),
                                                         row(spec.run_id, 20)]})
    last = line(row(b, 20))[:-1]  # a kill cut the write: no newline, maybe less
    torn = last[:len(last) // 2] if cut == "mid-row" else last
    sweep.results.write_text(line(row(a, 10)) + line(row(a, 20)) + line(row(b, 10)) + torn)
    args = ["status", str(ladder), "--root", str(sweep.root)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    table = {t[0]: t for t in (s.split() for s in out.splitlines()) if t[0] in (a, b)}
    assert table[a][7] == "2/2" and table[b][7] == "1/2"  # run state N tokens / total % rows
    assert " ".join(table[b]).endswith("1 row(s) missing from results.jsonl")
    assert "3/4 result rows" in out
    hint = out.splitlines()[-1]
    assert hint == (f"results.jsonl has a torn last line ({len(torn)} bytes) and 1 row(s) of "
                    f"done runs missing: `hybrid-jax sweep run {ladder} --root {sweep.root}` "
                    "repairs it (rows are restored from done.json)")
    assert cli.main(args + ["--json"]) == 0
    captured = capsys.readouterr()
    rows = {r["run_id"]: r for r in json.loads(captured.out)}
    assert (rows[b]["rows"], rows[b]["rows_missing"]) == (1, 1)
    assert captured.err == hint + "\n"
    sweep.prepare()  # what `sweep run` does before anything else
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "4/4 result rows" in out and "torn last line" not in out and "missing" not in out


def test_tries_count_started_attempts_killed_ones_included(tmp_path, capsys):
    ladder = micro_ladder(tmp_path / "l.yaml", tmp_path / "store")
    sweep = Sweep(load_ladder(ladder), tmp_path / "root")
    a, b = sweep.runs
    for spec in sweep.runs:
        spec.run_dir.mkdir(parents=True)
    # a: attempt 1 ended, attempt 2's runner was SIGKILLed (a start, no exit)
    for event in ({"event": "start", "attempt": 1}, {"event": "exit", "attempt": 1},
                  {"event": "start", "attempt": 2}):
        append_line(a.run_dir / "attempts.jsonl", event)
    assert cli.main(["status", str(ladder), "--root", str(sweep.root)]) == 0
    table = {t[0]: t for t in (s.split() for s in capsys.readouterr().out.splitlines())}
    assert table[a.run_id][8] == "2" and table[b.run_id][8] == "0"  # ... rows tries eta
