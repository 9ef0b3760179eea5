"""`hybrid-jax fit` reads results from gs:// and writes its report there (the GCS emulator),
with the same fits.json as a fit of the same rows on local paths; a report published again
removes the files fit no longer writes and keeps the user's."""

import json

from analysis.cli import main
from analysis.report import OUTPUTS_JSON, publish_files
from analysis.synthetic import two_family_rows, write_jsonl
from hybrid_jax.storage.paths import as_path
from tests.helpers.gcs import gcs_bucket, gcs_emulator, gs_prefix  # noqa: F401 (fixtures)


def test_fit_from_and_to_gcs_matches_a_local_fit(tmp_path, gcs_bucket):
    local = write_jsonl(two_family_rows(1.5, noise=0.004, run_noise=0.002, seed=3),
                        tmp_path / "results.jsonl")
    root = gs_prefix(gcs_bucket, "fit")
    (as_path(root) / "results.jsonl").write_bytes(local.read_bytes())
    args = ["--bootstrap", "0", "--no-paper"]  # the fits alone: bootstrapping reads no file
    assert main([str(local), "--out", str(tmp_path / "report"), *args]) == 0
    assert main([f"{root}/results.jsonl", *args]) == 0  # default out: beside the results
    out = as_path(root) / "fit_report"
    def families(text):  # without the fits' wall times
        fams = json.loads(text)["families"]
        for fam in fams.values():
            fam["law"].pop("seconds")
        return fams

    assert families((out / "fits.json").read_text()) == families(
        (tmp_path / "report/fits.json").read_text())
    listed = json.loads((out / OUTPUTS_JSON).read_text())["files"]
    assert "REPORT.md" in listed and all((out / name).exists() for name in listed)


def test_publishing_to_gcs_replaces_fits_files_and_keeps_the_users(gcs_bucket):
    out = as_path(gs_prefix(gcs_bucket, "report"))

    def render(names):
        def write(staging):
            for name in names:
                (staging / name).write_text(name)
            return names
        return write

    publish_files(str(out), render(["a.png", "REPORT.md"]))
    (out / "NOTES.txt").write_text("mine")
    publish_files(str(out), render(["REPORT.md"]))
    assert not (out / "a.png").exists() and (out / "REPORT.md").read_text() == "REPORT.md"
    assert (out / "NOTES.txt").read_text() == "mine"
    assert json.loads((out / OUTPUTS_JSON).read_text())["files"] == ["REPORT.md"]


def test_missing_results_object_is_one_clear_error(gcs_bucket, capsys):
    assert main([f"gs://{gcs_bucket}/nowhere/results.jsonl"]) == 2
    assert "results file not found: gs://" in capsys.readouterr().err
