"""The `kernels` package imported is this project's, not the unrelated PyPI package of that name."""

from pathlib import Path

import kernels

from tests.helpers import REPO


def test_kernels_is_this_projects_package():
    assert Path(kernels.__file__).resolve().is_relative_to(REPO), kernels.__file__


def test_public_api_is_exported():
    for name in ("chunk_gated_delta_rule", "gated_delta_rule_step", "resolve_implementation",
                 "attention", "resolve_attention_implementation"):
        assert callable(getattr(kernels, name)), name
