"""Result-row loading and validation: every problem names its line and field."""

import json

import numpy as np
import pytest

from analysis.pipeline import check_fittable
from analysis.results import ResultsError, load_results, rows_to_result_set
from analysis.synthetic import make_rows, two_family_rows, write_jsonl


def _rows(**kwargs):
    return two_family_rows(1.5, sizes=(20e6, 40e6, 80e6), ratios=(10, 20), **kwargs)


def test_loads_synthetic_file(tmp_path):
    rows = _rows(val_sets=("c4_en",))
    rs = load_results(write_jsonl(rows, tmp_path / "r.jsonl"))
    assert len(rs.points) == len(rows) == 12
    assert rs.points.families == ["hybrid", "transformer"]
    assert rs.val_set == "c4_en"
    assert rs.git_shas == ["0" * 40] and rs.device_kinds == ["synthetic"]
    np.testing.assert_allclose(rs.points.loss, [r["val"]["c4_en"]["loss"] for r in rows])


def test_blank_lines_are_skipped_and_line_numbers_count_them(tmp_path):
    rows = _rows()
    path = tmp_path / "r.jsonl"
    bad = dict(rows[1])
    del bad["tokens"]
    path.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(ResultsError, match=r"line 3: missing field 'tokens'"):
        load_results(path)


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.update(n_params="big"), r"line 2: field 'n_params' must be int, got str"),
    (lambda r: r.update(n_params=True), r"line 2: field 'n_params' must be int, got bool"),
    (lambda r: r.update(flops=-1.0), r"line 2: field 'flops' must be positive"),
    (lambda r: r.update(n_params_total=1), r"line 2: n_params_total \(1\) is smaller"),
    (lambda r: r.update(family=" "), r"line 2: field 'family' is empty"),
    (lambda r: r.update(val={}), r"line 2: field 'val' has no validation sets"),
    (lambda r: r["val"]["c4_en"].update(loss=float("nan")),
     r"line 2: val\['c4_en'\]\['loss'\] must be a positive finite number"),
    (lambda r: r.update(tokens=r["tokens"] - 1, n_params=r["n_params"] + 1),
     r"line 2: run .* has family/n_params"),
    (lambda r: r.update(size=""), r"line 2: optional field 'size' must be a non-empty string"),
    (lambda r: r.update(size="d999"), r"line 2: run .* has size label 'd999', but line 1 gave"),
])
def test_row_errors_name_line_and_field(mutate, message):
    rows = _rows()
    mutate(rows[1])
    with pytest.raises(ResultsError, match=message):
        rows_to_result_set(rows)


def test_duplicate_point_is_an_error():
    rows = _rows()
    rows.insert(1, dict(rows[0]))
    with pytest.raises(ResultsError, match=r"line 2: duplicate point .* already on line 1"):
        rows_to_result_set(rows)


def test_validation_set_choice():
    rows = _rows(val_sets=("c4_en", "wiki"))
    with pytest.raises(ResultsError, match=r"several validation sets \['c4_en', 'wiki'\]"):
        rows_to_result_set(rows)
    wiki = rows_to_result_set(rows, val_set="wiki")
    mean = rows_to_result_set(rows, val_set="mean")
    c4 = rows_to_result_set(rows, val_set="c4_en")
    np.testing.assert_allclose(mean.points.loss, (wiki.points.loss + c4.points.loss) / 2)
    with pytest.raises(ResultsError, match=r"line 1: validation set 'pile' missing"):
        rows_to_result_set(rows, val_set="pile")


def test_missing_empty_and_garbage_files(tmp_path):
    with pytest.raises(ResultsError, match="not found"):
        load_results(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ResultsError, match="no result rows"):
        load_results(tmp_path / "empty.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"run_id": 1}\n{not json\n')
    with pytest.raises(ResultsError, match="line 2: not valid JSON"):
        load_results(tmp_path / "bad.jsonl")
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    with pytest.raises(ResultsError, match="line 1: expected a JSON object"):
        load_results(tmp_path / "list.jsonl")


def test_family_with_fewer_points_than_parameters():
    law = {"E": 2.0, "A": 100.0, "B": 300.0, "alpha": 0.3, "beta": 0.3}
    rows = make_rows({"transformer": law}, sizes=(20e6, 40e6), ratios=(10, 20, 40)) \
        + make_rows({"gdn": law}, sizes=(20e6, 40e6), ratios=(10, 20))
    with pytest.raises(ResultsError, match=r"family 'gdn' has 4 points; .* at least 5"):
        check_fittable(rows_to_result_set(rows).points)
