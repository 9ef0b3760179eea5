"""benchmarks/gdn_kernel.py without torch or a GPU: the fla child handling (a child that timed out
after saving some cells gives those rows and an error row for every cell it did not reach)
and the breakdown's cell selection."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from tests.helpers import REPO

sys.path.insert(0, str(REPO))
from benchmarks import gdn_kernel  # noqa: E402
from tests.helpers.interpret_child import in_child  # noqa: E402

SHAPE = dict(B=1, T=64, H=1, HV=1, K=16, V=16)


def _args(tmp_path):
    return SimpleNamespace(out=str(tmp_path / "rows.json"), fla_warmup_ms=1, fla_rep_ms=1,
                           fla_graph_rep_ms=1, fla_timeout=5, budget_s=1e9, t_start=0.0)


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


@in_child
def test_every_variant_builds_and_the_breakdown_runs_in_interpret_mode(tmp_path):
    """Each variant's keywords reach the op (KernelConfig validates them), and the per-kernel
    breakdown runs every cell on the CPU (Triton and Mosaic GPU interpreters; chunk 64 and
    K = V = 64 take the Mosaic kernels too)."""
    import jax
    from benchmarks.gdn_kernel import jax_fn, jax_inputs
    from benchmarks.gdn_kernel_breakdown import run_breakdown
    from benchmarks.gdn_kernel_variants import JAX_IMPLS
    for impl in JAX_IMPLS:
        jax.eval_shape(jax_fn(impl, "fwd+bwd", interpret=True), *jax_inputs(SHAPE)[0],
                       jax_inputs(SHAPE)[1])
    args = SimpleNamespace(interpret=True, warmup=0, iters=1, inner=1, breakdown_only=None)
    shape = dict(B=1, T=64, H=1, HV=1, K=64, V=64)
    rows = run_breakdown(shape, "default", args, skip_reason=lambda: None,
                         time_fn=lambda fn, a, *_: (jax.block_until_ready(fn(*a)), (1.0, 1.0))[1])
    assert [r for r in rows if "error" in r] == []
    assert {r["impl"].split(":")[1] for r in rows} == {
        "prep fwd save", "prep fwd save mosaic", "prep bwd", "prep bwd inverse",
        "prep bwd decay", "prep bwd qk", "prep bwd mosaic", "state fwd", "state fwd+save",
        "state dh", "state dqk",
        "state fwd mosaic", "state fwd+save mosaic", "state dh mosaic", "grads mosaic"}


def test_float64_error_columns_in_interpret_mode(tmp_path):
    """A CPU smoke run records every fwd row's error against the float64 oracle
    (tests/helpers/gdr.py, itself checked against `recurrent` in float64 by test_api.py), and
    a peer that cannot run here (jla: Hopper only, or not installed) is a recorded error, not a
    crash."""
    out = tmp_path / "rows.json"
    gdn_kernel.main(["--interpret", "--no-breakdown", "--iters", "1", "--inner", "1",
                     "--warmup", "0", "--shape", "B=1,T=40,H=1,HV=2,K=16,V=16", "--impl",
                     "xla_chunked", "jla", "pallas_gpu", "--out", str(out)])
    rows = {(r["impl"], r["mode"]): r for r in json.loads(out.read_text())["rows"]}
    for impl in ("xla_chunked", "pallas_gpu"):
        assert rows[(impl, "fwd")]["rel_err_vs_f64"] < 1e-2, rows[(impl, "fwd")]
    assert rows[("pallas_gpu", "fwd")]["rel_err_vs_xla"] < 1e-5
    assert "error" in rows[("jla", "fwd")] and "error" in rows[("jla", "fwd+bwd")]
