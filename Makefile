# hybrid-jax. `make install` then `make test`; `make demo` runs the main job.
SHELL := /bin/bash
PYTHON ?= $(shell .ci/find-python)
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# xdist workers; 2 matches the CI machine's cores.
WORKERS ?= 2
# pip extras; CI adds seqio (TensorFlow, about 3 GB) so the tfds/seqio tests run there, and
# tpu (libtpu, about 700 MB) so the ahead-of-time TPU compile tests run there.
EXTRAS ?= test
# Downloads: TensorFlow's wheel is 573 MB, and one CI install died of a cut connection after 6
# attempts at resuming it (pip's default is 5). The venv's own pip (23.x) predates
# --resume-retries, so only the upgraded pip gets it.
PIP_FLAGS ?= --retries 10 --resume-retries 20 --timeout 60

.PHONY: install test test-extended test-gpu demo fit-laws ladder-gpu expressivity expressivity-full clean help

help:
	@echo "make install   create $(VENV) with Python>=3.12 and the pinned dependency set"
	@echo "make test      CPU test suite (what CI runs)"
	@echo "make test-extended  the extended-marked CPU tests, left out of make test (~1.5 min)"
	@echo "make test-gpu  GPU-marked tests (on a CUDA machine)"
	@echo "make demo      the main job: built-in corpus, cpu-demo ladder (transformer + hybrid), fits, figures"
	@echo "make fit-laws  fit scaling laws: RESULTS=path/to/results.jsonl FIT_OUT=dir"
	@echo "make expressivity       expressivity suite 'ci' on CPU -> results/expressivity-ci (~5-7 min on 2 cores)"
	@echo "make expressivity-full  expressivity suite 'full' on one GPU -> results/expressivity-full"
	@echo "make ladder-gpu  the gpu-small ladder on a GPU: corpus, lr check, ladder, fits (PARALLEL=4)"

# The built-in corpus is read from installed distributions: their versions are pinned here, so
# that `make demo` gives the same numbers on every fresh machine.
CORPUS_PINS := hybrid_jax/data/corpus_versions.txt

$(VENV)/.installed: setup.cfg pyproject.toml $(CORPUS_PINS)
	@rm -f $@
	@test -n "$(PYTHON)" || { echo "no Python >= 3.12 found; pass PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --retries 10 --timeout 60 --upgrade pip
	$(PY) -m pip install -q $(PIP_FLAGS) -c $(CORPUS_PINS) -e '.[$(EXTRAS)]'
	touch $@

install: $(VENV)/.installed

# tpu-marked tests need libtpu (the [tpu] extra: AOT compilation for TPU topologies), not a TPU;
# they run wherever libtpu is importable (CI installs it).
NO_TPU = $(shell $(PY) -c 'import importlib.util as u; print("" if u.find_spec("libtpu") else " and not tpu")')

test: install
	$(PY) -m pytest -n $(WORKERS) -m "not gpu and not extended$(NO_TPU)" $(PYTEST_ARGS)

# Checks at scale, statistical ones and multi-GPU benchmarks' CPU runs, whose code `make test`
# covers at small sizes: they would take the suite past its 15 minutes on 2 cores.
test-extended: install
	$(PY) -m pytest -n $(WORKERS) -m "extended and not gpu$(NO_TPU)" $(PYTEST_ARGS)

test-gpu:
	$(PY) -m pytest -m gpu $(PYTEST_ARGS)

# The main job. Every step is resumable: the store is built once, the sweep skips finished runs.
DEMO_STORE := data_cache/pycode-byte
DEMO_ROOT := sweeps/cpu-demo
RESULTS ?= $(DEMO_ROOT)/results.jsonl
FIT_OUT ?= results/cpu-demo
HJ := $(VENV)/bin/hybrid-jax

$(DEMO_STORE)/manifest.json: | install
	$(HJ) data build --source pycode --tokenizer byte --out $(DEMO_STORE)

demo: install $(DEMO_STORE)/manifest.json
	$(HJ) sweep plan cpu-demo
	$(HJ) sweep run cpu-demo --root $(DEMO_ROOT)
	mkdir -p $(FIT_OUT) && cp $(DEMO_ROOT)/results.jsonl $(FIT_OUT)/results.jsonl  # tracked: CI runs the notebook on it
	$(MAKE) --no-print-directory fit-laws RESULTS=$(FIT_OUT)/results.jsonl FIT_OUT=$(FIT_OUT)  # the report beside its input

fit-laws: install
	$(HJ) fit $(RESULTS) --val-set mean --out $(FIT_OUT)
	@echo "report: $(FIT_OUT)/REPORT.md"

# The gpu-small ladder end to end: corpus from every permissive distribution installed here, lr
# check, the ladder, fits into results/gpu-small. Resumable; see experiments/scripts/ladder.sh.
PARALLEL ?= 4
ladder-gpu: install
	PY=$(PY) PARALLEL=$(PARALLEL) bash experiments/scripts/ladder.sh

# The expressivity suite: trained models on synthetic tasks that separate the families
# (resumable per cell).
expressivity: install
	$(HJ) expressivity run ci --out results/expressivity-ci

expressivity-full: install
	$(HJ) expressivity run full --out results/expressivity-full

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
