"""benchmarks/profile_summary.py on a hand-made Chrome trace: only device events count, kernels are
grouped by kind and by issuing layer, and the per-step numbers divide by the traced steps."""

import gzip
import json
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from profile_summary import format_summary, kind_of, layer_of, summarize  # noqa: E402


@pytest.mark.parametrize("name, kind", [
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "matmul"),
    ("nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_NTN", "matmul"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop", "attention"),
    ("ncclDevKernel_AllReduce_Sum_f32_RING_LL", "collective"),
    ("trsm_left_kernel", "triangular_solve"),
    ("loop_multiply_fusion_3", "fusion"),
    ("input_reduce_fusion", "fusion"),
    ("Memcpy DtoD", "copy"),
    ("some_custom_kernel", "other"),
])
def test_kernel_kinds(name, kind):
    assert kind_of(name) == kind


def test_layers_from_source_paths():
    assert layer_of("jit(step)/GatedDeltaNet/dot_general") == "gdn"
    assert layer_of("jit(step)/AttentionBlock/attn/softmax") == "attention"
    assert layer_of("jit(step)/MLP/mul") == "mlp"
    assert layer_of("fusion.12") == "unattributed"


def _trace(tmp_path: Path) -> Path:
    events = [
        {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/host:CPU"}},
        {"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "/device:GPU:0"}},
        # host work: never counted
        {"ph": "X", "pid": 1, "tid": 1, "ts": 0, "dur": 5000, "name": "PjitFunction(step)"},
        {"ph": "X", "pid": 2, "tid": 7, "ts": 0, "dur": 600, "name": "sm90_xmma_gemm_x",
         "args": {"tf_op": "jit(step)/GatedDeltaNet/dot_general"}},
        {"ph": "X", "pid": 2, "tid": 7, "ts": 700, "dur": 300, "name": "loop_add_fusion",
         "args": {"hlo_op": "fusion.3", "long_name": "jit(step)/MLP/add"}},
        {"ph": "X", "pid": 2, "tid": 7, "ts": 1100, "dur": 100, "name": "sm90_xmma_gemm_x",
         "args": {"tf_op": "jit(step)/GatedDeltaNet/dot_general"}},
    ]
    path = tmp_path / "plugins" / "profile" / "run1" / "host.trace.json.gz"
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": events}, f)
    return tmp_path


def test_summarize_counts_device_kernels_per_step(tmp_path):
    s = summarize(_trace(tmp_path), steps=2, step_time_s=0.001)
    assert s["events"] == 3
    assert s["kernel_s_per_step"] == pytest.approx(500e-6)      # 1000 us over 2 steps
    assert s["kernel_busy_fraction"] == pytest.approx(0.5)
    kinds = {r["name"]: r for r in s["by_kind"]}
    assert kinds["matmul"]["ms_per_step"] == pytest.approx(0.35)
    assert kinds["matmul"]["share"] == pytest.approx(0.7)
    layers = {r["name"]: r["share"] for r in s["by_layer"]}
    assert layers == pytest.approx({"gdn": 0.7, "mlp": 0.3})
    assert s["top_kernels"][0]["name"] == "sm90_xmma_gemm_x"
    assert "matmul 0.35 ms (70%)" in format_summary(s)


def test_missing_trace_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="trace.json.gz"):
        summarize(tmp_path, steps=1, step_time_s=1.0)
