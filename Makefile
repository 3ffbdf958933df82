# Two commands for a new user, each setting up the virtualenv .venv first:
#   make demo   the synthetic open-vocabulary benchmark, small size (about 11 minutes on 2 CPU cores)
#   make test   the test suite (under 10 minutes on 2 CPU cores)
# and, for CI and before a release, `make test-benchmark`: the demo's run and its accuracy floor.
# The set-up creates .venv with python3 -m venv, installs the pinned torch and torchvision, then
# ovdet in editable mode with its dev extra. A stamp file makes it a no-op while current; it runs
# again when setup.py, pyproject.toml or this Makefile change. On x86_64 Linux, PyPI's torch is
# the CUDA build (a few GB); it also runs on CPU-only machines.

PYTHON ?= python3
VENV ?= .venv
VENV_PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.ovdet-installed
# Exact versions here only; setup.py keeps ranges.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-benchmark venv
.DELETE_ON_ERROR:

demo: $(STAMP)
	$(VENV_PYTHON) tools/benchmark_synthetic.py --small

# One pytest-xdist worker per core; a test file's tests stay on one worker (they share fixtures).
test: $(STAMP)
	$(VENV_PYTHON) -m pytest -q -n auto --dist loadfile

test-benchmark: $(STAMP)
	$(VENV_PYTHON) -m pytest -q -m synthetic_benchmark --durations=5

venv: $(STAMP)

$(STAMP): setup.py pyproject.toml Makefile
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --upgrade pip
	$(VENV_PYTHON) -m pip install $(TORCH)
	$(VENV_PYTHON) -m pip install -e ".[dev]"
	touch $@
