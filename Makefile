# Two commands for a new user, each setting up the virtualenv .venv first:
#   make demo   the synthetic open-vocabulary benchmark, small size (a few minutes on 2 CPU cores)
#   make test   the test suite
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

.PHONY: demo test venv
.DELETE_ON_ERROR:

demo: $(STAMP)
	$(VENV_PYTHON) tools/benchmark_synthetic.py --small

test: $(STAMP)
	$(VENV_PYTHON) -m pytest -q

venv: $(STAMP)

$(STAMP): setup.py pyproject.toml Makefile
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --upgrade pip
	$(VENV_PYTHON) -m pip install $(TORCH)
	$(VENV_PYTHON) -m pip install -e ".[dev]"
	touch $@
