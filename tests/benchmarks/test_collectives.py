"""benchmarks/collectives.py: the HLO parser on hand-written lines, and the fsdp step's plan on
2 fake CPU devices (activations stay batch-sharded, so only weights and their gradients move)."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO, xla_flags

sys.path.insert(0, str(REPO / "benchmarks"))
from collectives import collectives, summarize  # noqa: E402

HLO = """
  %ag = f32[64,512]{1,0} all-gather(f32[32,512]{1,0} %p), channel_id=1, dimensions={0}
  %ar = (f32[], /*index=1*/bf16[8,16]{1,0}) all-reduce(f32[] %a, bf16[8,16]{1,0} %b), to_apply=%add
  %s = f32[4,4]{1,0} all-gather-start(f32[2,4]{1,0} %q), dimensions={0}
  %d = f32[4,4]{1,0} all-gather-done(f32[4,4]{1,0} %s)
  %add.1 = f32[4,4]{1,0} add(f32[4,4]{1,0} %d, f32[4,4]{1,0} %d)
"""


def test_parser_counts_output_bytes_once_per_op():
    ops = collectives(HLO)
    assert [(o["kind"], o["bytes"]) for o in ops] == [
        ("all-gather", 64 * 512 * 4), ("all-reduce", 4 + 8 * 16 * 2), ("all-gather", 16 * 4)]
    s = summarize(ops, top=1)
    assert s["by_kind"]["all-gather"] == {"ops": 2, "bytes": 64 * 512 * 4 + 64}
    assert s["largest"][0]["shapes"] == ["f32[64,512]"]
    assert ops[1]["largest_array_bytes"] == 8 * 16 * 2
    assert s["total_bytes"] == sum(o["bytes"] for o in ops)


def test_unknown_element_type_is_an_error():
    with pytest.raises(ValueError, match="'f8e4m3fn' has no byte size"):
        collectives("  %x = f8e4m3fn[4]{0} all-reduce(f8e4m3fn[4]{0} %a), to_apply=%add")


@pytest.mark.slow
def test_fsdp_step_moves_weights_not_activations(tmp_path):
    """Before `sharding.constrain` pinned the residual stream and the logits to the batch axes,
    this step all-reduced [8, 256, *] activations: 0.065 GB a step against 0.002 GB now."""
    from hybrid_jax.flops import param_count
    from hybrid_jax.presets import get_preset

    out = tmp_path / "coll.json"
    # collectives.py adds the device count to the session's flags
    env = {**os.environ, "PYTHONPATH": str(REPO), "XLA_FLAGS": xla_flags(None)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "collectives.py"), "--size", "tiny",
         "--mesh", "1,2,1", "--batch", "8", "--seq-len", "256", "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    for family in ("transformer", "hybrid"):
        cfg = get_preset(f"{family}_tiny")
        param_bytes = 4 * param_count(cfg).total
        largest_param = 4 * cfg.vocab_size * cfg.d_model
        r = results[family]
        # One gather of the weights and one reduction of their gradients, plus small change.
        assert r["total_bytes"] <= 3 * param_bytes, (family, r["total_bytes"], param_bytes)
        assert all(op["largest_array_bytes"] <= largest_param for op in r["largest"]), \
            r["largest"]
