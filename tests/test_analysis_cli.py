"""`hybrid-jax fit` end to end on synthetic results, and its bad-input behaviour."""

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from analysis.cli import main
from analysis.plots import FIGURES
from analysis.synthetic import make_rows, two_family_rows, write_jsonl

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fit")
    results = write_jsonl(two_family_rows(1.5, noise=0.004, run_noise=0.002, seed=3),
                          tmp / "results.jsonl")
    out = tmp / "report"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier run")
    rc = main([str(results), "--out", str(out), "--bootstrap", "8", "--seed", "1"])
    return rc, out


def test_cli_writes_complete_report(report, capsys):
    rc, out = report
    assert rc == 0
    fits = json.loads((out / "fits.json").read_text())  # strict JSON: no NaN/Infinity
    assert set(fits["families"]) == {"hybrid", "transformer"}
    for fam in fits["families"].values():
        assert set(fam["law"]) >= {"E", "A", "B", "alpha", "beta"}
        assert fam["law_ci"]["alpha"]["n"] == 8
        assert fam["frontier"]["gamma"] > 0
        assert "mean_abs_rel_error" in fam["rollout"]
    (comp,) = fits["comparisons"]
    assert comp["baseline"] == "transformer" and comp["savings_factor"]["ci"]["n"] == 8
    assert fits["inputs"]["git_shas"] == ["0" * 40]
    assert fits["inputs"]["device_kinds"] == ["synthetic"]
    assert fits["settings"]["n_bootstrap"] == 8 and fits["settings"]["seed"] == 1
    md = (out / "REPORT.md").read_text()
    for heading in ("## Parametric law", "## Compute frontier", "## Comparisons",
                    "## Rollout validation", "## Caveats"):
        assert heading in md
    assert "Only 8 bootstrap replicates" in md
    for name in FIGURES:
        image = matplotlib.image.imread(out / f"{name}.png")
        assert image.shape[0] > 300 and image.shape[1] > 300
        assert (out / f"{name}.pdf").read_bytes().startswith(b"%PDF")


def test_cli_replaces_existing_report_whole(report):
    rc, out = report
    assert rc == 0
    assert not (out / "stale.txt").exists() and (out / "fits.json").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["report", "results.jsonl"]


@pytest.mark.parametrize("case, message", [
    ("missing", "not found"),
    ("empty", "no result rows"),
    ("too_few", "family 'gdn' has 4 points"),
    ("bad_row", "line 1: missing field 'flops'"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, case, message):
    path = tmp_path / "results.jsonl"
    law = {"E": 2.0, "A": 100.0, "B": 300.0, "alpha": 0.3, "beta": 0.3}
    if case == "empty":
        path.write_text("")
    elif case == "too_few":
        write_jsonl(make_rows({"transformer": law}, sizes=(20e6, 40e6), ratios=(10, 20, 40))
                    + make_rows({"gdn": law}, sizes=(20e6, 40e6), ratios=(10, 20)), path)
    elif case == "bad_row":
        rows = make_rows({"transformer": law})
        del rows[0]["flops"]
        write_jsonl(rows, path)
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bad_option_exits_2(tmp_path, capsys):
    assert main([str(tmp_path / "x.jsonl"), "--bootstrap", "-1"]) == 2
    assert main([str(tmp_path / "x.jsonl"), "--recipe", "kaplan"]) == 2


def test_runs_as_python_module(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "analysis.cli", str(tmp_path / "none.jsonl")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not found" in proc.stderr
