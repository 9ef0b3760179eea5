"""benchmarks/profile_summary.py on a hand-made Chrome trace: only device events count, kernels are
grouped by kind and by issuing layer, and the per-step numbers divide by the traced steps; with a
compiled program's HLO (benchmarks/hlo_sources.py) kernels traced inside CUDA graphs still find
their layer and source line."""

import gzip
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from hlo_sources import innermost, kernel_name, kernel_sources  # noqa: E402
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


# A program whose ops come from two functions named after layers, compiled for real: its
# optimized HLO carries the stack tables that `hlo_sources` reads.
def gated_delta_like(x):
    return jnp.sin(x) * 3.0


def swiglu_mlp(x):
    return jnp.cos(x) * jnp.exp(x)


def _program(x):
    return jnp.sum(swiglu_mlp(gated_delta_like(x)) ** 2)


@pytest.fixture(scope="module")
def compiled_hlo():
    return jax.jit(jax.grad(_program)).lower(jnp.ones((64, 64))).compile().as_text()


def test_kernel_sources_name_the_python_stack(compiled_hlo):
    sources = kernel_sources(compiled_hlo)
    functions = {f.function for src in sources.values() for f in src.frames}
    assert {"gated_delta_like", "swiglu_mlp", "_program"} <= functions
    here = __file__
    lines = {f.line for src in sources.values() for f in src.frames
             if f.file == here and f.function == "gated_delta_like"}
    assert lines == {gated_delta_like.__code__.co_firstlineno + 1}
    assert any(src.backward for src in sources.values())     # jax.grad's transpose ops
    assert all(kernel_name(k) == k for k in sources)          # trace spelling: no '.' or '-'
    src = next(s for s in sources.values() if s.frames)
    assert innermost(src, str(Path(here).parent)).file == here
    assert innermost(src, "/nowhere/") is None


def test_summarize_attributes_kernels_inside_cuda_graphs(tmp_path, compiled_hlo):
    """Events as a trace of XLA's command buffers gives them (no op path): the HLO text
    attributes each to the innermost function naming a layer, and to its source line."""
    sources = kernel_sources(compiled_hlo)

    def kernel_of(function):
        return next(k for k, s in sources.items() if s.frames and s.frames[0].function == function)

    events = [{"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "/device:GPU:0"}}]
    for i, (name, dur) in enumerate(((kernel_of("gated_delta_like"), 300),
                                     (kernel_of("swiglu_mlp"), 100),
                                     ("gdr_state_pass_fwd_mgpu_kernel", 50),
                                     ("nvjet_sm90_tst_x", 50))):
        events.append({"ph": "X", "pid": 2, "tid": 7, "ts": 1000 * i, "dur": dur, "name": name,
                       "args": {"tf_op": "XlaModule:", "hlo_op": "command_buffer_1"}})
    path = tmp_path / "plugins" / "profile" / "run1" / "host.trace.json.gz"
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": events}, f)
    root = str(Path(__file__).parent) + "/"
    s = summarize(tmp_path, steps=1, step_time_s=0.001, hlo_text=compiled_hlo, root=root)
    layers = {r["name"]: r["share"] for r in s["by_layer"]}
    assert layers == pytest.approx({"gdn": 0.7, "mlp": 0.2, "unattributed": 0.1})
    where = {r["name"].split(" ")[1]: r["ms_per_step"] for r in s["top_lines"]}
    assert where["gated_delta_like"] == pytest.approx(0.3)
    assert s["top_lines"][0]["name"].startswith("test_profile.py:")
    assert "top source lines" in format_summary(s)
