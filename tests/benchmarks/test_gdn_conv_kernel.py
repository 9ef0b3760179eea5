"""benchmarks/gdn_conv_kernel.py on a CPU host, in Pallas' interpreter: a row per implementation
and channel count, and with --sweep a row per kernel and launch (their timings mean nothing
here)."""

import json

from benchmarks import gdn_conv_kernel


def test_writes_api_and_sweep_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(gdn_conv_kernel, "LAUNCHES", [dict(seg=8, unroll=4, cb=16, warps=1)])
    assert gdn_conv_kernel.main(["--interpret", "--sweep", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "gdn_conv_kernel.json").read_text())["rows"]
    api = [r for r in rows if r["kind"] == "api"]
    assert [r["implementation"] for r in api] == ["xla", "pallas_gpu", "xla_fwd"]
    assert api[0]["ratio"] == 1.0
    for r in api:  # every implementation is the conv: bf16-level error against fp32 math
        assert max(r["rel_error"].values()) < 3e-2, r
    sweep = [r for r in rows if r["kind"] == "sweep"]
    assert [(r["part"], r["launch"]["seg"]) for r in sweep] == [("forward", 8), ("backward", 8)]
