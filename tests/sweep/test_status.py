"""`sweep status` without training: rows counted from results.d, done runs' missing rows and a
stale results.jsonl with the command that restores them, and tries counted from start events."""

import json

from hybrid_jax.storage.results import append_rows
from hybrid_jax.sweep import cli
from hybrid_jax.sweep.ladder import load_ladder
from hybrid_jax.sweep.runner import Sweep
from hybrid_jax.sweep.state import append_line, write_json

from tests.helpers.sweeps import micro_ladder


def row(run_id, tokens):
    return {"run_id": run_id, "tokens": tokens, "loss": 1.0}


def test_missing_rows_and_a_stale_export_show_the_repair(tmp_path, capsys):
    ladder = micro_ladder(tmp_path / "l.yaml", tmp_path / "store")
    sweep = Sweep(load_ladder(ladder), tmp_path / "root")
    a, b = (s.run_id for s in sweep.runs)
    for spec in sweep.runs:
        spec.run_dir.mkdir(parents=True)
        write_json(spec.run_dir / "done.json", {"run_id": spec.run_id,
                                                "rows": [row(spec.run_id, 10),
                                                         row(spec.run_id, 20)]})
    append_rows(sweep.root, [row(a, 10), row(a, 20)])
    sweep.export_results()  # results.jsonl: 2 rows; then a runner died after one more row
    append_rows(sweep.root, [row(b, 10)])
    args = ["status", str(ladder), "--root", str(sweep.root)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    table = {t[0]: t for t in (s.split() for s in out.splitlines()) if t[0] in (a, b)}
    assert table[a][7] == "2/2" and table[b][7] == "1/2"  # run state N tokens / total % rows
    assert " ".join(table[b]).endswith("1 row(s) missing from results.d")
    assert "3/4 result rows" in out
    hint = out.splitlines()[-1]
    assert hint == (f"1 row(s) of done runs missing from results.d and results.jsonl lacks 1 "
                    f"row(s) of results.d: `hybrid-jax sweep run {ladder} --root {sweep.root}` "
                    "repairs it (rows are restored from done.json)")
    assert cli.main(args + ["--json"]) == 0
    captured = capsys.readouterr()
    rows = {r["run_id"]: r for r in json.loads(captured.out)}
    assert (rows[b]["rows"], rows[b]["rows_missing"]) == (1, 1)
    assert captured.err == hint + "\n"
    sweep.prepare()  # what `sweep run` does before anything else
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "4/4 result rows" in out and "repairs it" not in out
    assert len(sweep.results.read_text().splitlines()) == 4


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
