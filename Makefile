# hybrid-jax. `make install` then `make test`; `make demo` runs the main job.
SHELL := /bin/bash
PYTHON ?= $(shell .ci/find-python)
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# xdist workers; 2 matches the CI machine's cores.
WORKERS ?= 2
# pip extras; CI adds seqio (TensorFlow, about 3 GB) so the tfds/seqio tests run there.
EXTRAS ?= test

.PHONY: install test test-slow test-gpu clean help

help:
	@echo "make install   create $(VENV) with Python>=3.12 and the pinned dependency set"
	@echo "make test      CPU test suite (what CI runs)"
	@echo "make test-gpu  GPU-marked tests (on a CUDA machine)"

$(VENV)/.installed: setup.cfg pyproject.toml
	@rm -f $@
	@test -n "$(PYTHON)" || { echo "no Python >= 3.12 found; pass PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -n $(WORKERS) -m "not gpu and not tpu" $(PYTEST_ARGS)

test-gpu:
	$(PY) -m pytest -m gpu $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
