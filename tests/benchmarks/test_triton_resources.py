"""benchmarks/triton_resources.py without the Triton venv: shape parsing, the ptxas log parser,
the table, and the capture of each pallas_call's Triton module on this CPU host.

Compiling the captured modules needs pip's triton in its own venv, which CI does not install;
no test here needs it, because under CI a skip counts as a failure (tests/conftest.py)."""

import sys

import pytest

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from triton_compile_child import count_converts, parse_ptxas_log  # noqa: E402
from triton_resources import (SMEM_LIMIT_SM90, capture_kernels, format_table,  # noqa: E402
                              parse_shape, shape_label)


def test_parse_shape_round_trips():
    s = parse_shape("B=1,T=300,H=2,HV=4,K=96,V=192")
    assert s == dict(B=1, T=300, H=2, HV=4, K=96, V=192)
    assert shape_label(s) == "B=1,T=300,H=2,HV=4,K=96,V=192"


@pytest.mark.parametrize("bad", ["B=1,T=300,H=2,HV=4,K=96", "B=1,T=3,H=2,HV=4,K=96,V=1,X=2",
                                 "B=1,B=2,T=3,H=2,HV=4,K=96,V=1", "B1,T=3"])
def test_parse_shape_rejects_bad_text(bad):
    with pytest.raises(ValueError):
        parse_shape(bad)


PTXAS_LOG = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'gdr_prep_bwd' for 'sm_90a'
ptxas info    : Function properties for gdr_prep_bwd
    12700 bytes stack frame, 12700 bytes spill stores, 15772 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 12700 bytes cumulative stack size
"""


def test_parse_ptxas_log():
    assert parse_ptxas_log(PTXAS_LOG) == dict(regs=255, spill_stores=12700, spill_loads=15772)
    with pytest.raises(ValueError, match="no register"):
        parse_ptxas_log("ptxas info    : 0 bytes gmem\n")


def test_count_converts_counts_ops_not_mentions():
    ttgir = """%1 = ttg.convert_layout %0 : tensor<64xf32, #a> -> tensor<64xf32, #b>
    %2 = ttg.convert_layout %1 : tensor<64xf32, #b> -> tensor<64xf32, #c>
    // ttg.convert_layout in a comment
    %3 = tt.load %p : tensor<64x!tt.ptr<f32>, #a>"""
    assert count_converts(ttgir) == 2 and count_converts("") == 0


def test_table_flags_kernels_over_the_limit_and_errors():
    rows = [dict(case="c", name="gdr_prep_bwd", num_warps=8, num_stages=1, shared=262144,
                 regs=255, spill_stores=1, spill_loads=2),
            dict(case="c", name="gdr_state_pass_fwd", num_warps=4, num_stages=1, shared=65536,
                 regs=200, spill_stores=0, spill_loads=0, converts=7),
            dict(case="c", name="gdr_prep_fwd", num_warps=8, num_stages=1,
                 error="PTXASError: boom\ntrace")]
    lines = format_table(rows).splitlines()
    assert len(lines) == 5 and str(SMEM_LIMIT_SM90) in lines[2]
    assert "NO" in lines[2].split() and "yes" in lines[3].split()
    assert lines[3].split()[-1] == "7" and lines[2].split()[-1] == "-"  # converts, or unknown
    assert "ERROR" in lines[4] and "PTXASError: boom" in lines[4] and "trace" not in lines[4]


def test_capture_pairs_each_triton_module_with_its_launch_parameters():
    """Lowered for CUDA on this host (jax 0.11.2 internals patched, then restored). At
    "highest" every kernel is Triton: the prep forward, the state forward, dh, dqk and the
    prep backward's three."""
    from jax._src.pallas.triton import pallas_call_registration as pcr
    before = pcr.gpu_info_lib.get_gpu_info
    shape = parse_shape("B=1,T=40,H=1,HV=2,K=24,V=48")
    kernels = capture_kernels(shape, precision="highest", chunk_size=16)
    assert pcr.gpu_info_lib.get_gpu_info is before
    names = [k["name"] for k in kernels]
    assert sorted(names) == sorted(["gdr_prep_fwd", "gdr_state_pass_fwd", "gdr_split_dh",
                                    "gdr_split_dqk", "gdr_prep_bwd_inverse",
                                    "gdr_prep_bwd_decay", "gdr_prep_bwd_qk"])
    for k in kernels:
        assert k["ttir"].startswith(f"module @{k['name']}") and "tt.func" in k["ttir"]
        assert k["num_stages"] == 1 and k["num_warps"] in (4, 8)
    fwd = capture_kernels(shape, precision="default", chunk_size=16, backward=False)
    launch = {k["name"]: (k["num_warps"], k["num_stages"]) for k in fwd}
    assert launch == {"gdr_prep_fwd": (4, 1), "gdr_state_pass_fwd": (4, 3)}


def test_kernel_config_reaches_the_kernels_it_names():
    """KernelConfig through the op, lowered for CUDA: the prep kernels at 8 warps, every kernel
    at 2 stages, the state kernels at their default warps."""
    shape = parse_shape("B=1,T=40,H=1,HV=1,K=32,V=32")
    kernels = capture_kernels(shape, precision="default", chunk_size=16, num_warps_prep=8,
                              num_stages=2)
    launch = {k["name"]: (k["num_warps"], k["num_stages"]) for k in kernels}
    assert launch["gdr_prep_fwd"] == launch["gdr_prep_bwd_decay"] == (8, 2)
    assert launch["gdr_state_pass_fwd"] == launch["gdr_split_dh"] == (4, 2)
