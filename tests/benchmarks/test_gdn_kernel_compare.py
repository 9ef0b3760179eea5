"""benchmarks/gdn_kernel_compare.py on a CPU host: this tree against itself (exported by
benchmarks/export_kernels.sh as `kernels_before`), both modes, a tiny shape. Timings mean
nothing here; the rows, the table and the zero differences do."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks import gdn_kernel_compare

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="needs the git checkout (export_kernels.sh runs git archive)")
def test_compares_both_modes_against_an_exported_tree(tmp_path):
    before = tmp_path / "before"
    subprocess.run(["bash", str(ROOT / "benchmarks/export_kernels.sh"), "HEAD", str(before)],
                   check=True, capture_output=True)
    assert (before / "kernels_before/gated_delta_rule/__init__.py").exists()
    rc = gdn_kernel_compare.main(["--before-root", str(before), "--out", str(tmp_path / "out"),
                                  "--shape", "B=1,T=64,H=1,K=32,V=32", "--mode", "fwd+bwd",
                                  "fwd", "--iters", "2", "--inner", "1", "--warmup", "0"])
    assert rc == 0
    rows = json.loads((tmp_path / "out/gdn_compare.json").read_text())["rows"]
    assert [r["mode"] for r in rows] == ["fwd+bwd", "fwd"]
    assert set(rows[0]["max_abs_diff"]) == {"o", "dq", "dk", "dv", "dg", "db"}
    assert set(rows[1]["max_abs_diff"]) == {"o"}
    # HEAD's kernels against the working tree's: the same code on the same inputs (unless
    # kernels/ has uncommitted edits)
    edited = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--", "kernels"])
    if edited.returncode == 0:
        assert all(d == 0 for r in rows for d in r["max_abs_diff"].values())
    table = (tmp_path / "out/gdn_compare.md").read_text()
    assert "| B1 T64 H1 K32 V32 | fwd+bwd |" in table and "| B1 T64 H1 K32 V32 | fwd |" in table
