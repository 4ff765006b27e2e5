# The README's two commands. Both create .venv on first use and reinstall when
# pyproject.toml changes. torch is installed first as the CPU build so that no
# dependency pulls a multi-GB CUDA wheel.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
CONFIG ?= configs/serve.yaml
# make run PORT=8810 HOST=0.0.0.0: empty means the config's own values (127.0.0.1:8000 by default)
HOST ?=
PORT ?=

.PHONY: run test lint install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	@echo "rayprism: in another terminal, 'source $(VENV)/bin/activate' puts the rayprism command on PATH"
	$(BIN)/rayprism serve $(CONFIG) $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

test: install-dev
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check rayprism tests bench
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache
