"""benchmarks/two_gpu.py end to end on 2 fake CPU devices: the loss match (1 device vs data=2
vs fsdp=2, which on CPU agree to fp32 rounding) and the scaling table split over two calls,
as a GPU lent in short calls runs it."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO, xla_flags
from tests.helpers.training import build_tiny_store


def _two_gpu(out, *args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
           "XLA_FLAGS": xla_flags(2)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "two_gpu.py"), "--out", str(out),
         "--size", "tiny", "--families", "transformer", "--scaling-families", "transformer",
         "--batch", "4", "--seq-len", "64", "--steps", "2", *args],
        capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
@pytest.mark.extended
def test_two_gpu_match_and_split_scaling(tmp_path):
    store = build_tiny_store(tmp_path / "store")
    cfg = tmp_path / "match.yaml"
    cfg.write_text(
        "model: {preset: transformer_tiny, vocab_size: 264, n_layers: 2, d_model: 32, n_heads: 2,"
        " mlp_hidden: 64}\n"
        "train: {name: match, global_batch: 8, seq_len: 32, tokens: 1536}\n"
        "optim: {lr: 3.0e-3}\nschedule: {kind: cosine, warmup_tokens: 512}\n"
        f"data: {{store: {store}}}\neval: {{max_tokens: 512}}\n"
        "checkpoint: {interval_steps: 1000}\nlog: {tensorboard: false, log_every_steps: 1}\n")
    out = tmp_path / "out"

    # The first call: the match and the one-GPU part of the scaling table.
    _two_gpu(out, "--match-config", str(cfg), "--scaling-runs", "1gpu")
    match = json.loads((out / "match.json").read_text())
    assert match["steps"] == 6 and match["last_loss"] < match["first_loss"]
    for mesh in ("data2", "fsdp2"):
        assert match[mesh]["max_rel_diff"] < 1e-5, match  # reduction order only, in fp32
    assert not (out / "scaling_data2.json").exists()

    # the second call measures data2 alone (fsdp2 runs the same code with another --mesh, and
    # the match above trains on it); the row then lacks the mesh no call has measured
    log = _two_gpu(out, "--skip", "match", "--scaling-runs", "data2")
    assert f"reusing {out / 'scaling_1gpu.json'}" in log
    summary = json.loads((out / "summary.json").read_text())
    assert summary["match"] == match  # the first call's part is kept
    (row,) = summary["scaling"]["rows"]
    one = json.loads((out / "scaling_1gpu.json").read_text())["rows"][0]["tokens_per_s"]
    assert row["1gpu_tokens_per_s"] == one
    assert row["data2_efficiency"] == pytest.approx(row["data2_tokens_per_s"] / (2 * one))
    assert "fsdp2_tokens_per_s" not in row
