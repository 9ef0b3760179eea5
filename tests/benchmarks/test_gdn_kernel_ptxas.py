"""benchmarks/gdn_kernel_ptxas.py on a CPU host: the parser on a ptxas report as an H100 wrote
it (a kernel without spills, and one that spills with ptxas' C7514 warning printed before its
entry), the table, and the clear failure where no GPU compiles."""

import pytest

from benchmarks import gdn_kernel_ptxas as ptxas

REPORT = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'gdr_prep_fwd_mgpu_mosaic_gpu_kernel' for 'sm_90a'
ptxas info    : Function properties for gdr_prep_fwd_mgpu_mosaic_gpu_kernel
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 220 registers, used 2 barriers, 1 bytes smem
ptxas info    : Compile time = 500.481 ms
ptxas info    : (C7514) Potential Performance Loss: wgmma.mma_async instructions are serialized \
due to non wgmma instructions reading accumulator registers of  a wgmma between start and end \
of the pipeline stage in the function 'gdr_chunk_grads_mgpu_mosaic_gpu_kernel'
ptxas warning : Registers are spilled to local memory in function \
'gdr_chunk_grads_mgpu_mosaic_gpu_kernel', 176 bytes spill stores, 180 bytes spill loads
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'gdr_chunk_grads_mgpu_mosaic_gpu_kernel' for 'sm_90a'
ptxas info    : Function properties for gdr_chunk_grads_mgpu_mosaic_gpu_kernel
    184 bytes stack frame, 176 bytes spill stores, 180 bytes spill loads
ptxas info    : Used 255 registers, used 2 barriers, 184 bytes cumulative stack size, 1 bytes smem
"""
SHAPE = "B=4,T=4096,H=16,K=128,V=128"


def test_parses_registers_spills_and_serialized_wgmmas_per_kernel():
    rows = ptxas.parse(REPORT, SHAPE)
    assert rows == [
        {"shape": SHAPE, "kernel": "gdr_prep_fwd_mgpu_mosaic_gpu_kernel", "registers": 220,
         "spill_stores": 0, "spill_loads": 0, "serialized": False},
        {"shape": SHAPE, "kernel": "gdr_chunk_grads_mgpu_mosaic_gpu_kernel", "registers": 255,
         "spill_stores": 176, "spill_loads": 180, "serialized": True}]
    text = ptxas.table(rows)
    assert "| B4 T4096 H16 K128 V128 | gdr_chunk_grads_mgpu | 255 | 176 / 180 | yes (C7514) |" \
        in text
    assert "| gdr_prep_fwd_mgpu | 220 | 0 / 0 | no |" in text


def test_without_a_gpu_it_fails_saying_so(tmp_path):
    import jax
    if jax.devices()[0].platform == "gpu":
        pytest.skip("a GPU is visible: the child would compile")
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        ptxas.main(["--shape", "B=1,T=64,H=1,K=64,V=64", "--out", str(tmp_path)])
    assert "needs a CUDA GPU" in (tmp_path / "ptxas.log").read_text()


def test_a_malformed_shape_fails_before_any_child(tmp_path):
    with pytest.raises(ValueError):
        ptxas.main(["--shape", "B=1,T", "--out", str(tmp_path)])
