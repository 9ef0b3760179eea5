"""`hybrid-jax compile`: ahead-of-time compilation of the sharded train step for TPU topologies.

Tests that compile need libtpu (the `[tpu]` extra), not a TPU; they are marked `tpu` and skip,
with that reason, where `libtpu` is not importable. Topology-name and config checks run
everywhere.
"""

import importlib.util
import re

import pytest

from hybrid_jax.compile import aot, cli

HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None


def _run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("name", ["v5e:4x4", "v5p:2x2x1", "V6E:2x2", "v4:2x2x1"])
def test_parse_known_topologies(name):
    gen, dims = aot.parse_topology(name)
    assert gen in aot.TOPOLOGIES and all(d > 0 for d in dims)


@pytest.mark.parametrize("name", ["v7:2x2", "v5e", "v5e:2", "tpu-v5e-16"])
def test_unknown_topology_is_refused_listing_names(capsys, name):
    rc, _, err = _run(capsys, "--config", "hybrid_tiny", "--topology", name)
    assert rc == 2
    assert "unknown TPU topology" in err and "v5e" in err and "v5p" in err and "v6e" in err


def test_bad_config_is_refused(capsys):
    rc, _, err = _run(capsys, "--config", "hybrid_tinyy", "--topology", "v5e:2x2")
    assert rc == 2 and "hybrid_tiny" in err


@pytest.mark.tpu
@pytest.mark.skipif(not HAS_LIBTPU, reason="needs libtpu: pip install '.[tpu]'")
@pytest.mark.parametrize("family", ["hybrid", "transformer"])
def test_tiny_train_step_compiles_for_v5e(capsys, family):
    # 2 layers (the hybrid's: one of each kind): XLA's chunked delta rule, the TPU default,
    # compiles for TPU in about 4.5 s a GDN layer on 2 CPU cores, and more layers test nothing
    # more
    rc, out, err = _run(capsys, "--config", f"{family}_tiny", "--topology", "v5e:2x2",
                        "train.global_batch=8", "train.seq_len=128", "mesh.data=2",
                        "mesh.fsdp=2", "model.n_layers=2")
    assert rc == 0, err
    assert "4 x TPU v5 lite" in out and "(2, 2, 1)" in out
    assert "attention=splash" in out
    for word in ("arguments", "temporaries", "generated code", "of 16.000 GiB HBM",
                 "FLOPs per step"):
        assert word in out


@pytest.mark.tpu
@pytest.mark.skipif(not HAS_LIBTPU, reason="needs libtpu: pip install '.[tpu]'")
def test_hybrid_with_pallas_tpu_gdr_compiles_sharded(capsys):
    """Both Mosaic kernels inside the train step, run per shard of a (data 2, tensor 2) mesh."""
    rc, out, err = _run(capsys, "--config", "hybrid_tiny", "--topology", "v5e:2x2",
                        "train.global_batch=8", "train.seq_len=128", "mesh.data=2",
                        "mesh.tensor=2", "model.gdn_implementation=pallas_tpu",
                        "model.n_layers=2")
    assert rc == 0, err
    assert "gdn=pallas_tpu" in out and "attention=splash" in out and "(2, 1, 2)" in out


@pytest.mark.tpu
@pytest.mark.skipif(not HAS_LIBTPU, reason="needs libtpu: pip install '.[tpu]'")
def test_mesh_that_does_not_fit_the_devices_is_refused(capsys):
    rc, _, err = _run(capsys, "--config", "hybrid_tiny", "--topology", "v5e:2x2",
                      "mesh.data=3")
    assert rc == 2 and "devices" in err


@pytest.mark.tpu
@pytest.mark.skipif(not HAS_LIBTPU, reason="needs libtpu: pip install '.[tpu]'")
def test_too_large_for_hbm_is_refused_saying_by_how_much(capsys):
    """~3.2B fp32 parameters with Adam, replicated on each v5e chip (16 GiB): 51 GB."""
    rc, out, err = _run(capsys, "--config", "transformer_tiny", "--topology", "v5e:2x2",
                        "model.d_model=4096", "model.n_heads=32", "model.mlp_hidden=65536",
                        "model.attention_implementation=xla", "train.global_batch=4",
                        "train.seq_len=128")
    assert rc == 1
    # The TPU compiler refuses it itself (temporaries alone overflow), naming the excess.
    assert "does NOT fit on v5e:2x2" in err
    assert re.search(r"\d+\.\d\d GiB \(\d+%\) more than the 15\.\d\d GiB", err), err


@pytest.mark.tpu
@pytest.mark.slow
@pytest.mark.extended
@pytest.mark.skipif(not HAS_LIBTPU, reason="needs libtpu: pip install '.[tpu]'")
# The hybrid (Pallas TPU GDN, splash attention, FSDP) at the 370M ladder width, 2 layers deep
# (GA: both layer kinds), 4 sequences of 256 tokens (two splash blocks, four GDN chunks): about
# 30 s alone. The compile time grows with depth and length (all 16 layers: 180-230 s of CPU
# time), and deeper or longer ones exercise nothing more; the full-depth v5p numbers are in
# experiments/LOG.md, and `hybrid-jax compile --config hybrid_370m ...` reproduces them.
@pytest.mark.parametrize("preset", ["hybrid_370m"])
def test_370m_width_hybrid_compiles_for_v5p(capsys, preset):
    rc, out, err = _run(capsys, "--config", preset, "--topology", "v5p:2x2x1", "mesh.data=1",
                        "mesh.fsdp=-1", "train.global_batch=4", "train.seq_len=256",
                        "model.n_layers=2",
                        "model.gdn_implementation=pallas_tpu")  # XLA's chunked GDR: >15 min
    assert rc == 0, err
    assert "4 x TPU v5" in out and "of 95.000 GiB HBM" in out
