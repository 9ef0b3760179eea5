"""benchmarks/gdn_output_norm.py on a CPU host: both implementations (the Pallas kernels in the
interpreter) at the tiny preset's dims. Timings mean nothing here; the rows and the gradients'
agreement do."""

import json

from benchmarks import gdn_output_norm


def test_times_both_implementations_and_they_agree(tmp_path):
    rc = gdn_output_norm.main(["--size", "tiny", "--batch", "2", "--seq-len", "40",
                               "--interpret", "--iters", "2", "--inner", "1",
                               "--out", str(tmp_path)])
    assert rc == 0
    row = json.loads((tmp_path / "gdn_output_norm.json").read_text())["row"]
    assert set(row["ms"]) == {"xla", "pallas_gpu"} and row["ratio_to_xla"]["xla"] == 1.0
    assert max(row["max_abs_diff_to_xla"]["pallas_gpu"]) < 1e-4  # fp32 at the tiny preset


def test_the_launch_sweep_times_each_kernel_against_xlas(tmp_path, monkeypatch):
    """One launch (the sweep's list is for GPUs); each kernel agrees with XLA."""
    monkeypatch.setattr(gdn_output_norm, "LAUNCHES", [dict(rows=16, warps=2)])
    rc = gdn_output_norm.main(["--size", "tiny", "--batch", "1", "--seq-len", "40",
                               "--implementations", "xla", "--interpret", "--sweep-launch",
                               "--iters", "1", "--inner", "1", "--out", str(tmp_path)])
    assert rc == 0
    sweep = json.loads((tmp_path / "gdn_output_norm.json").read_text())["sweep"]
    assert [(r["kernel"], r["launch"]) for r in sweep] == [
        ("forward", "rows=16, warps=2"), ("backward", "rows=16, warps=2")]
    for r in sweep:
        assert r["ms"] > 0 and r["xla_ms"] > 0
        assert max(r["max_abs_diff_to_xla"]) < 1e-4  # fp32 at the tiny preset
