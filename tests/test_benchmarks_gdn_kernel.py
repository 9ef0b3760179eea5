"""benchmarks/gdn_kernel.py without torch or a GPU: the fla child handling (a child that timed out
after saving some cells gives those rows and an error row for every cell it did not reach)
and the breakdown's cell selection."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import gdn_kernel  # noqa: E402

SHAPE = dict(B=1, T=64, H=1, HV=1, K=16, V=16)


def _args(tmp_path):
    return SimpleNamespace(out=str(tmp_path / "rows.json"), fla_warmup_ms=1, fla_rep_ms=1,
                           fla_graph_rep_ms=1, fla_timeout=5, budget_s=1e9)


def test_fla_child_timeout_keeps_its_rows_and_names_the_missing_cells(tmp_path, monkeypatch):
    args = _args(tmp_path)
    saved = [{"shape": SHAPE, "impl": "fla", "mode": "fwd", "median_ms": 1.0},
             {"shape": SHAPE, "impl": "fla_cudagraph", "mode": "fwd", "median_ms": 0.8}]

    def fake_run(cmd, timeout):
        assert "--fla-graph-rep-ms" in cmd
        Path(args.out).with_suffix(".fla.json").write_text(json.dumps(saved))
        raise subprocess.TimeoutExpired(cmd, timeout)

    monkeypatch.setattr(gdn_kernel.subprocess, "run", fake_run)
    rows = gdn_kernel.run_fla_child(SHAPE, args)
    assert rows[:2] == saved
    missing = {(r["impl"], r["mode"]): r["error"] for r in rows[2:]}
    assert set(missing) == {("fla", "fwd+bwd"), ("fla_cudagraph", "fwd+bwd")}
    assert all("timeout after 5 s" in e for e in missing.values())


def test_fla_child_that_wrote_nothing_fails_every_cell(tmp_path, monkeypatch):
    monkeypatch.setattr(gdn_kernel.subprocess, "run",
                        lambda cmd, timeout: SimpleNamespace(returncode=1))
    rows = gdn_kernel.run_fla_child(SHAPE, _args(tmp_path))
    assert {(r["impl"], r["mode"]) for r in rows} == {
        (i, m) for i in ("fla", "fla_cudagraph") for m in ("fwd", "fwd+bwd")}
    assert all("failed: 1" in r["error"] for r in rows)


def test_breakdown_only_takes_prefixes_exact_names_and_underscores_for_spaces():
    from benchmarks.gdn_kernel_breakdown import selects
    assert selects(None, "prep bwd qk") and selects([""], "state fwd")
    assert selects(["prep_bwd"], "prep bwd split, xla decays")
    assert not selects(["prep_bwd"], "prep fwd save")
    assert selects(["state bwd$"], "state bwd") and not selects(["state_bwd$"], "state bwd split")


def test_trace_runs_in_interpret_mode_and_names_bad_counts(tmp_path, capsys):
    """gdn_kernel_trace.py end to end on the CPU (Pallas interpret mode, where the trace holds
    no GPU kernels: the GPU rows come from the device runs), and its argument check."""
    import pytest
    from benchmarks import gdn_kernel_trace
    rows = gdn_kernel_trace.main(["--interpret", "--shape", "B=1,T=64,H=1,K=16,V=16", "--impl",
                                  "pallas_gpu_default", "--calls", "1", "--iters", "1",
                                  "--out", str(tmp_path)])
    written = json.loads((tmp_path / "gdn_trace.json").read_text())
    assert [(r["impl"], r["mode"]) for r in written] == [("pallas_gpu_default", "fwd+bwd")]
    assert rows[0]["median_ms"] > 0 and Path(rows[0]["trace"]).exists()
    assert "pallas_gpu_default fwd+bwd" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        gdn_kernel_trace.main(["--shape", "B=1,T=64,H=1,K=16,V=16", "--impl",
                               "pallas_gpu_default", "--calls", "0", "--out", str(tmp_path)])
    assert "--calls and --iters must be >= 1" in capsys.readouterr().err


def test_variants_keep_the_prep_they_were_timed_with():
    """Since the eleventh session the default prep is "auto" (Mosaic GPU where it takes the
    shape): every other Pallas variant names its prep, so that each keeps the meaning its
    logged timings had."""
    from benchmarks.gdn_kernel_variants import JAX_IMPLS, XLA_IMPLS
    assert JAX_IMPLS["pallas_gpu_default"] == dict(precision="default")
    assert JAX_IMPLS["pallas_gpu_default_v9"] == dict(
        precision="default", state_pass="mosaic_splitbwd", prep="pallas_splitbwd",
        caller_layout=False)
    assert JAX_IMPLS["pallas_gpu_default_v11"] == dict(
        precision="default", prep="auto", state_pass="mosaic_dh", caller_layout=False)
    assert JAX_IMPLS["pallas_gpu_mosaic_prep"]["prep"] == "mosaic"
    unnamed = [n for n, kw in JAX_IMPLS.items()
               if n not in XLA_IMPLS and n != "pallas_gpu_default"
               and not {"prep", "caller_layout"} <= set(kw)]
    assert not unnamed
