# Two commands for a new user, each setting up the virtualenv .venv first:
#   make demo   the synthetic open-vocabulary benchmark, small size (about 3 minutes on 2 CPU cores)
#   make test   the test suite (under 10 minutes on 2 CPU cores)
# and, for CI and before a release, `make test-benchmark`: the demo's run and its accuracy floor.
# The set-up creates .venv with python3 -m venv, installs torch and torchvision, then ovdet in
# editable mode with its dev extra, every package the figures depend on at its version in
# constraints.txt. A stamp file makes it a no-op while current; it runs again when setup.py,
# pyproject.toml, constraints.txt or this Makefile change. On x86_64 Linux, PyPI's torch is
# the CUDA build (a few GB); it also runs on CPU-only machines.

PYTHON ?= python3
VENV ?= .venv
VENV_PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.ovdet-installed
# Exact versions in constraints.txt only; setup.py keeps ranges.
PIP_INSTALL := $(VENV_PYTHON) -m pip install -c constraints.txt

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

$(STAMP): setup.py pyproject.toml constraints.txt Makefile
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --upgrade pip
	$(PIP_INSTALL) torch torchvision
	$(PIP_INSTALL) -e ".[dev]"
	touch $@
