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

.PHONY: demo detectron2 test test-benchmark venv
.DELETE_ON_ERROR:

demo: $(STAMP)
	$(VENV_PYTHON) tools/benchmark_synthetic.py --small

# The import contracts of pyproject.toml (layers), then the tests: one pytest-xdist worker per
# core; a test file's tests stay on one worker (they share fixtures).
test: $(STAMP) detectron2
	$(VENV)/bin/lint-imports
	$(VENV_PYTHON) -m pytest -q -n auto --dist loadfile

# detectron2 is not on the package registry. Where a wheel of it built for this Python and the
# pinned torch lies in D2_WHEEL_DIR, it goes into .venv (with its dependencies from the registry),
# so that tests/d2 (the parity test included) run; otherwise one line says why they will skip.
# Nothing of detectron2 is part of ovdet. D2_TORCH: the torch release the wheel was built for.
# (A checkout beside shared/ finds it there; /work/shared is this project's CI machines' copy.)
D2_WHEEL_DIR ?= $(firstword $(wildcard ../shared/wheels /work/shared/wheels))
D2_TORCH ?= 2.14
D2_WHEEL := $(firstword $(wildcard $(D2_WHEEL_DIR)/detectron2-*.whl))

detectron2: $(STAMP)
	@if $(VENV_PYTHON) -c "import detectron2._C" 2>/dev/null; then \
		echo "detectron2: installed; tests/d2 run"; \
	elif [ -z "$(D2_WHEEL)" ]; then \
		echo "detectron2: no wheel in $(D2_WHEEL_DIR) and none installed; tests/d2 will skip"; \
	else \
		torch=$$($(VENV_PYTHON) -c "import torch; print(torch.__version__.split('+')[0])"); \
		case "$$torch" in \
		$(D2_TORCH).*) \
			{ $(PIP_INSTALL) -q "$(D2_WHEEL)" && $(VENV_PYTHON) -c "import detectron2._C" && \
			echo "detectron2: installed from $(D2_WHEEL); tests/d2 run"; } || \
			echo "detectron2: $(D2_WHEEL) did not install or import; tests/d2 will skip";; \
		*) echo "detectron2: $(D2_WHEEL) is built for torch $(D2_TORCH).x, .venv has $$torch;" \
			"tests/d2 will skip";; \
		esac; \
	fi

test-benchmark: $(STAMP)
	$(VENV_PYTHON) -m pytest -q -m synthetic_benchmark --durations=5

venv: $(STAMP)

$(STAMP): setup.py pyproject.toml constraints.txt Makefile
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --upgrade pip
	$(PIP_INSTALL) torch torchvision
	$(PIP_INSTALL) -e ".[dev]"
	touch $@
