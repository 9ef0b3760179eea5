"""Shared pytest setup.

Under CI (HYBRID_JAX_CI=1) a skipped test is a failure unless it is marked gpu or tpu:
a skip there means a required feature was not exercised.

Marks are read with `iter_markers`, not from `item.keywords`: keywords also hold the names of
the test's folders, and tests/kernels/gated_delta_rule/gpu/ and .../tpu/ are folders.

Where jax has no GPU plugin (jax-cuda*, jax-rocm*: CI, laptops) XLA compiles for the CPU with LLVM at -O0
(`--xla_backend_optimization_level=0`, in XLA_FLAGS before jax is imported, so child processes
inherit it; tests/helpers `xla_flags` keeps it when it sets the device count). The suite's
programs are tiny and run a few steps, so compiling dominates: -O0 compiles them 2-3x faster
and computes the same thing (XLA's HLO passes, sharding and collectives are unchanged; only
the machine code is less optimised). TPU ahead-of-time compiles ignore the flag. To compile as
the CLI does, put any xla_backend_optimization_level in XLA_FLAGS yourself.

The session also has one persistent compilation cache (JAX_COMPILATION_CACHE_DIR, a temporary
directory removed at the end, unless already set): tests that build the same program again (a
run trained, then resumed in the same process; a suite run twice) compile it once. Training
child processes get their own cache from tests/helpers/training.py.
"""

import importlib.metadata
import os
import shutil
import tempfile

import pytest

FAST_CPU_COMPILE = "--xla_backend_optimization_level=0"


def _has_gpu_plugin() -> bool:
    return any((d.metadata["Name"] or "").lower().replace("_", "-").startswith(("jax-cuda",
                                                                                "jax-rocm"))
               for d in importlib.metadata.distributions())


if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "") and \
        not _has_gpu_plugin():
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_CPU_COMPILE}".strip()


_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
_own_cache: str | None = None


def pytest_configure(config):
    """Before any test imports jax, and before xdist starts its workers (which inherit it)."""
    global _own_cache
    if os.environ.get(_CACHE_ENV):
        return
    _own_cache = tempfile.mkdtemp(prefix="hybrid-jax-tests-jax-cache-")
    os.environ.update({_CACHE_ENV: _own_cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                       "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"})


def pytest_unconfigure(config):
    if _own_cache:
        shutil.rmtree(_own_cache, ignore_errors=True)


def _has_gpu() -> bool:
    import jax

    try:
        return len(jax.devices("gpu")) > 0
    except RuntimeError:
        return False


def _marks(item) -> set[str]:
    return {mark.name for mark in item.iter_markers()}


def pytest_collection_modifyitems(config, items):
    # The slow tests (up to two minutes each) first: with two xdist workers, one that starts
    # late runs alone at the end while the other worker idles. A stable sort: the order within
    # each group is the collection's.
    items.sort(key=lambda item: "slow" not in _marks(item))
    gpu_items = [item for item in items if "gpu" in _marks(item)]
    if gpu_items and not _has_gpu():
        skip = pytest.mark.skip(reason="needs a CUDA GPU; none visible to jax")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (os.environ.get("HYBRID_JAX_CI") == "1" and report.skipped
            and not ({"gpu", "tpu"} & _marks(item))):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, where this feature is required: {report.longrepr}"


@pytest.fixture
def triton_lowers_for_h100(monkeypatch):
    """Pallas' Triton lowering asks the local GPU for its version; this answers "H100", so a
    kernel lowers for CUDA on a host without a GPU (jax 0.11.2 internals)."""
    from jax._src.pallas.triton import gpu_info, pallas_call_registration

    h100 = gpu_info.get_gpu_info_from_version(gpu_info.GpuVersion.H100)
    monkeypatch.setattr(pallas_call_registration.gpu_info_lib, "get_gpu_info", lambda: h100)
