"""Fixtures shared by the training tests that run real training: a tiny token store and the
environment for child processes (one per test module)."""

import pytest

from tests.helpers.training import build_tiny_store, child_env


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_tiny_store(tmp_path_factory.mktemp("data") / "store")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return child_env(tmp_path_factory)
