"""Result rows as one object each, on a local directory and on gs:// (the emulator): a row
appended twice (or by two racing drivers) is stored once, an interrupted append is completed by
running it again, and what is not a row of its own name is refused by name."""

import json

import pytest

from hybrid_jax.storage import objects, results
from hybrid_jax.storage.paths import read_text_or_none

from tests.helpers.threads import race


def rows(run_id: str, *tokens: int) -> list[dict]:
    return [{"run_id": run_id, "tokens": t, "loss": 3.0 - t / 1e6} for t in tokens]


def test_rows_appended_twice_appear_once(root):
    assert results.read_rows(root) == []
    assert results.append_rows(root, rows("b", 200, 100)) == 2
    assert results.append_rows(root, rows("b", 100) + rows("a", 100)) == 1
    assert results.append_rows(root, rows("b", 200)) == 0
    got = results.read_rows(root)
    assert [(r["run_id"], r["tokens"]) for r in got] == [("a", 100), ("b", 100), ("b", 200)]
    assert got[1] == rows("b", 100)[0]


def test_racing_drivers_store_each_row_once(root):
    written = race(4, lambda i: results.append_rows(root, rows("r", 1, 2, 3)))
    assert sum(written) == 3, written  # every row written by exactly one driver
    assert len(results.read_rows(root)) == 3


def test_the_first_row_for_a_key_is_kept(root):
    results.append_rows(root, [{"run_id": "a", "tokens": 5, "loss": 1.0}])
    assert results.append_rows(root, [{"run_id": "a", "tokens": 5, "loss": 2.0}]) == 0
    assert results.read_rows(root)[0]["loss"] == 1.0


def test_an_interrupted_append_is_completed_by_running_it_again(root, monkeypatch):
    create, calls = objects.create, []

    def dies_on_the_third(path, data):
        calls.append(path)
        if len(calls) == 3:
            raise ConnectionError("connection reset")
        return create(path, data)

    monkeypatch.setattr(objects, "create", dies_on_the_third)
    with pytest.raises(ConnectionError):
        results.append_rows(root, rows("x", 1, 2, 3, 4))
    assert [r["tokens"] for r in results.read_rows(root)] == [1, 2]
    monkeypatch.setattr(objects, "create", create)
    assert results.append_rows(root, rows("x", 1, 2, 3, 4)) == 2
    assert [r["tokens"] for r in results.read_rows(root)] == [1, 2, 3, 4]


def test_export_jsonl_is_state_results_format(root, tmp_path):
    results.append_rows(root, rows("b", 2) + rows("a", 1))
    for out in (tmp_path / "results.jsonl", root / "export" / "results.jsonl"):
        assert results.export_jsonl(root, out) == 2
        lines = read_text_or_none(out).splitlines()
        assert [json.loads(line)["run_id"] for line in lines] == ["a", "b"]
        assert lines[0] == json.dumps(rows("a", 1)[0], sort_keys=True)


@pytest.mark.parametrize("name, data, problem", [
    ("notes.txt", b"{}", "not result rows"),
    ("a-1.json", b'{"run_id": "a", "tok', "not a JSON result row"),
    ("a-1.json", b'{"run_id": "b", "tokens": 1}', "not of its own name"),
    ("a-1.json", b"[1]", "not a JSON object")])
def test_what_is_not_a_row_of_its_name_is_refused(root, name, data, problem):
    results.append_rows(root, rows("ok", 1))
    objects.create(root / results.ROWS_DIR / name, data)
    with pytest.raises(ValueError, match=problem):
        results.read_rows(root)


@pytest.mark.parametrize("row, problem", [
    ({"tokens": 1}, "needs run_id and tokens"), ({"run_id": "a/b", "tokens": 1}, "run_id"),
    ({"run_id": "a", "tokens": -1}, "whole number"), ({"run_id": "a", "tokens": "1"},
                                                      "whole number"),
    ({"run_id": "a", "tokens": 1.5}, "whole number")])
def test_bad_rows_are_refused_before_anything_is_written(tmp_path, row, problem):
    with pytest.raises(ValueError, match=problem):
        results.append_rows(tmp_path, rows("fine", 1) + [row])
    assert results.read_rows(tmp_path) == []
