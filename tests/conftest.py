"""Shared pytest setup.

Under CI (HYBRID_JAX_CI=1) a skipped test is a failure unless it is marked gpu or tpu:
a skip there means a required feature was not exercised.

Marks are read with `iter_markers`, not from `item.keywords`: keywords also hold the names of
the test's folders, and tests/kernels/gated_delta_rule/gpu/ and .../tpu/ are folders.
"""

import os

import pytest


def _has_gpu() -> bool:
    import jax

    try:
        return len(jax.devices("gpu")) > 0
    except RuntimeError:
        return False


def _marks(item) -> set[str]:
    return {mark.name for mark in item.iter_markers()}


def pytest_collection_modifyitems(config, items):
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
