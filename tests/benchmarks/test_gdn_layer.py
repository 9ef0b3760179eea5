"""benchmarks/gdn_layer.py on a CPU host: it trains nothing, times one layer's forward+backward
at a preset's dims and writes its row (the timings mean nothing here)."""

import json
import math

from benchmarks import gdn_layer


def test_writes_a_row(tmp_path):
    argv = ["--size", "100m", "--batch", "1", "--seq-len", "16", "--iters", "1", "--inner", "1",
            "--calls", "1", "--profile", "3", "--out", str(tmp_path)]
    assert gdn_layer.main(argv) == 0
    row = json.loads((tmp_path / "gdn_layer.json").read_text())
    assert row["size"] == "100m" and row["median_ms"] > 0 and math.isfinite(row["loss"])
