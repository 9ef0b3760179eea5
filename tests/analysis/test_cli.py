"""`hybrid-jax fit` end to end on synthetic results, and its bad-input behaviour."""

import json
import os
import stat
import subprocess
import sys

import matplotlib.image
import pytest

import analysis.cli
import analysis.report
from analysis.cli import main
from analysis.pipeline import analyse
from analysis.plots import FIGURES
from analysis.report import OUTPUTS_JSON, publish_files
from analysis.synthetic import make_rows, two_family_rows, write_jsonl
from tests.helpers import REPO


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A fit whose --out is the directory holding its input and a user's notes."""
    out = tmp_path_factory.mktemp("fit") / "report"
    out.mkdir()
    results = write_jsonl(two_family_rows(1.5, noise=0.004, run_noise=0.002, seed=3),
                          out / "results.jsonl")
    (out / "NOTES.txt").write_text("mine, not fit's")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    analyses = []

    def keep(*args, **kwargs):  # the Analysis, so a second fit need not redo the work
        analyses.append(analyse(*args, **kwargs))
        return analyses[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(analysis.cli, "analyse", keep)
        rc = main([str(results), "--out", str(out), "--bootstrap", "8", "--seed", "1"])
    return rc, out, before, analyses[0]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_cli_writes_complete_report(report, capsys):
    rc, out, *_ = report
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


def test_fit_keeps_files_it_did_not_write(report):
    rc, out, before, _ = report
    assert rc == 0
    for name, data in before.items():  # the input itself and the notes beside it
        assert (out / name).read_bytes() == data
    figures = {f"{n}.{ext}" for n in FIGURES for ext in ("png", "pdf")}
    assert {p.name for p in out.iterdir()} == {*before, *figures, "fits.json", "REPORT.md",
                                               OUTPUTS_JSON}
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~_umask()
    for name in ("fits.json", "REPORT.md", "isoflop.png"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~_umask()


def test_second_fit_replaces_outputs(report, monkeypatch):
    _, out, before, an = report
    old = {name: (out / name).stat().st_ino for name in ("fits.json", "REPORT.md")}

    def quick_figures(an, staging):  # rendering the real ones again would take seconds
        names = [f"{n}.{ext}" for n in FIGURES for ext in ("png", "pdf")]
        for name in names:
            (staging / name).write_bytes(b"second")
        return names

    monkeypatch.setattr(analysis.cli, "analyse", lambda *a, **k: an)
    monkeypatch.setattr(analysis.report, "save_all", quick_figures)
    fresh = out / "new" / "dir"
    for target in (out, fresh):
        assert main([str(out / "results.jsonl"), "--out", str(target)]) == 0
        assert (target / "isoflop.png").read_bytes() == b"second"
    assert all((out / name).stat().st_ino != ino for name, ino in old.items())
    assert json.loads((out / "fits.json").read_text())["families"].keys() == {"hybrid",
                                                                             "transformer"}
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o777 & ~_umask()
    assert (out / "NOTES.txt").read_bytes() == before["NOTES.txt"]
    assert (out / "results.jsonl").read_bytes() == before["results.jsonl"]
    assert not [p for p in out.iterdir() if p.name.startswith(".fit-staging")]


def _writer(files: dict, fail: bool = False):
    def write(staging):
        for name, text in files.items():
            (staging / name).write_text(text)
        if fail:
            raise RuntimeError("rendering failed")
        return list(files)
    return write


def test_publish_removes_only_stale_files_it_wrote(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "b.png").write_text("someone else's, before fit ever ran here")
    publish_files(out, _writer({"a.png": "1", "REPORT.md": "r1"}))
    (out / "mine.png").write_text("a user's figure")
    (out / "b.png").write_text("b1")
    publish_files(out, _writer({"a.png": "2", "b.png": "b2", "REPORT.md": "r2"}))
    assert (out / "b.png").read_text() == "b2"
    # a manifest entry pointing out of the directory is never followed
    outputs = json.loads((out / OUTPUTS_JSON).read_text())
    (out / OUTPUTS_JSON).write_text(json.dumps({"files": [*outputs["files"], "../victim"]}))
    (tmp_path / "victim").write_text("outside")
    publish_files(out, _writer({"a.png": "3", "REPORT.md": "r3"}))
    assert sorted(p.name for p in out.iterdir()) == [OUTPUTS_JSON, "REPORT.md", "a.png",
                                                     "mine.png"]
    assert (out / "a.png").read_text() == "3" and (tmp_path / "victim").exists()
    assert json.loads((out / OUTPUTS_JSON).read_text())["files"] == ["REPORT.md", "a.png"]


def test_publish_failure_leaves_the_old_report(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    publish_files(out, _writer({"a.png": "old", "REPORT.md": "old"}))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(RuntimeError, match="rendering failed"):
        publish_files(out, _writer({"a.png": "new", "REPORT.md": "new"}, fail=True))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(RuntimeError):
        publish_files(tmp_path / "absent", _writer({"a.png": "x"}, fail=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


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
