"""The built-in corpus's version pins (hybrid_jax/data/corpus_versions.txt, the constraints of
`make install`): one pin per distribution of DEFAULT_FAMILIES, and the installed versions are
the pinned ones, so that `make demo` reads the same text on every fresh machine."""

import importlib.metadata as md
from pathlib import Path

import pytest

from hybrid_jax.data.pycode import DEFAULT_DISTRIBUTIONS, normalize_name

PINS = Path(__file__).parents[2] / "hybrid_jax" / "data" / "corpus_versions.txt"


def _pins() -> dict[str, str]:
    pins = {}
    for line in PINS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version.strip() == version and version, line
            assert normalize_name(name) not in pins, f"{name} pinned twice"
            pins[normalize_name(name)] = version
    return pins


def test_every_corpus_distribution_is_pinned_once():
    assert sorted(_pins()) == sorted(map(normalize_name, DEFAULT_DISTRIBUTIONS))


def test_the_installed_versions_are_the_pinned_ones():
    """Fails under CI (a skip there is a failure) where `make install` did not apply the pins;
    elsewhere a venv installed another way is skipped, with the differences named."""
    differ = {name: (md.version(name), pinned) for name, pinned in _pins().items()
              if md.version(name) != pinned}
    if differ:
        pytest.skip(f"installed != pinned (make install applies the pins): {differ}")
